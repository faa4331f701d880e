"""Evaluation on TrajScene-Synth ground truth: metrics (`more4d.eval.metrics`) and the report (`evaluate`)."""

from more4d.eval.metrics import depth_abs_rel, depth_delta1, nearest_fill, psnr, ssim, track_epe

__all__ = ["depth_abs_rel", "depth_delta1", "nearest_fill", "psnr", "ssim", "track_epe"]
