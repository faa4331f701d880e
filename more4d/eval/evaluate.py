"""Evaluate the models on held-out TrajScene-Synth seeds (the table of assets/weights/tiny/README.md) or on
TrajScene-60K samples (`data_dir`: the released archives or folders extracted from them).

Held-out seeds start at `HELD_OUT_SEED_START` (training uses seeds far below, validation sits just below).
On TrajScene-60K the ground truth is the released tracks (depth: their frame-0 z, `seed_format.seed_clip`;
units as stored, which the authors do not state), 4D-ViSM fills the holes of the tracks rendered from the source
camera (the data has no novel view), and the perfect-sampler floor, which needs synthetic siblings, is n/a.
Measured, each against its baselines and quality bar:
- depth: AbsRel and delta1 of the depth model on frame 0; its iBims-1 depth-boundary errors (edge accuracy and
  completeness, `depth_edge_errors`) and the share of pixels on a depth discontinuity (`depth_discontinuities`,
  where the renderer opens holes) against the ground truth's;
- tearing: the holes at the input camera in the last frame and over all frames (`tearing`) of the generated
  scene, and as the reference of the ground-truth scene drawn as generated scenes are (true motion uncovers
  what the input hid); and the pixels torn from a neighbour on their own surface (`surface_tears`), which true
  motion on exact depth never tears but which a noisy depth can cut anywhere;
- 4D-STraG with *predicted* depth, against zero motion (points frozen at frame 0) and the mean-motion field (the
  training set's mean normalised motion, `mean_motion_field`), per motion type, in two protocols:
  end to end, the mean 3D end-point error over frames (visible tracks); the frame-0 depth error, shared by every
  method, dominates it, as its floor `epe_oracle_motion` (GT motion applied to the predicted frame-0 points) shows;
  motion (the pass bar), the error of the displacements from frame 0 (`displacement_epe`), which isolates motion;
  a prompt-swap test (left <-> right, up <-> down in the caption must flip the motion); and the floor of a perfect
  sampler, `motion_epe_floor`: the motion EPE of clips that share the clip's frame 0 and caption but redraw what
  neither fixes (`generate_siblings`), i.e. what a sample of the true motion distribution would score;
- motion VAE: reconstruction EPE in metric units (GT motion encoded, decoded, inverse-normalised with GT depth)
  and the relative error of each motion axis on moving tracks (x, y, depth: 1 = that axis decoded as no motion);
- 4D-ViSM on a novel camera: PSNR/SSIM in the holes and PSNR of the whole frame for every hole filler: the raw
  splat render, nearest-neighbour, OpenCV Telea and Navier-Stokes, push-pull, the model alone and composited.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from more4d.data.formats import TrajClip
from more4d.data.synth import SynthConfig, generate_batch, generate_siblings
from more4d.errors import InputError
from more4d.eval.metrics import (
    classical_inpaint,
    depth_abs_rel,
    depth_delta1,
    depth_discontinuities,
    depth_edge_errors,
    displacement_epe,
    mean_image_motion,
    motion_axis_l1,
    nearest_fill,
    psnr,
    relative_error,
    ssim,
    surface_tears,
    tearing,
    track_epe,
)
from more4d.geometry import (
    DIRECTION_AXES,
    denormalize_motion,
    motion_alphas,
    motion_to_video,
    moving_tracks,
    normalize_motion,
    video_to_motion,
)
from more4d.io import atomic_write

if TYPE_CHECKING:
    from more4d.models.motion_vae import MotionVAE

HELD_OUT_SEED_START = 1_000_000_000
MEAN_MOTION_SIZE = 64  # the mean field is stored at 64 x 64 and resized bilinearly
MEAN_MOTION_FILE = Path(__file__).resolve().parents[2] / "assets" / "eval" / "mean_motion_tiny.safetensors"
SWAPS = {"left": "right", "right": "left", "up": "down", "down": "up"}
FLOOR_SAMPLES = 16  # sibling clips per held-out clip for the perfect-sampler floor (~0.35 s each on 2 CPU cores)


# -- mean-motion baseline ---------------------------------------------------------------------------------------

@torch.no_grad()
def mean_motion_field(num_clips: int = 512, config: SynthConfig | None = None, device: str | torch.device = "cpu",
                      batch_size: int = 16, seed_start: int = 0) -> torch.Tensor:
    """The mean normalised motion `(3, T, 64, 64)` over training seeds `seed_start ... + num_clips` (valid tracks)."""
    config = config or SynthConfig(novel_views=0)
    total, count = 0.0, 0.0
    for first in range(seed_start, seed_start + num_clips, batch_size):
        batch = generate_batch(range(first, min(first + batch_size, seed_start + num_clips)), config, device)
        B, T, H, W = batch.frames.shape[:4]
        for b in range(B):
            m, valid = normalize_motion(batch.points[b].float(), motion_alphas(batch.K[b].cpu(), (H, W)))
            video = motion_to_video(m, H, W)  # (3, T, H, W)
            w = valid.view(1, 1, H, W).float()
            total = total + F.interpolate(video * w, size=(MEAN_MOTION_SIZE,) * 2, mode="area")
            count = count + F.interpolate(w.expand(1, T, H, W), size=(MEAN_MOTION_SIZE,) * 2, mode="area")
    return (total / count.clamp_min(1e-6)).cpu()


def save_mean_motion(field: torch.Tensor, path: str | os.PathLike = MEAN_MOTION_FILE, **meta: Any) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        save_file({"mean_motion": field.half().contiguous()}, str(tmp), metadata={k: str(v) for k, v in meta.items()})
    return path


def load_mean_motion(path: str | os.PathLike = MEAN_MOTION_FILE) -> torch.Tensor:
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise InputError(f"mean-motion file {str(path)!r} is missing; write it with "
                         "`python -m more4d.eval.evaluate --write-mean-motion`")
    return load_file(str(path))["mean_motion"].float()


def apply_mean_motion(field: torch.Tensor, points0: torch.Tensor, K: torch.Tensor, image_size: tuple[int, int],
                      num_frames: int) -> torch.Tensor:
    """The mean field `(3, T', 64, 64)` resized to `(T, H, W)`, inverse-normalised around `points0 (N, 3)`."""
    H, W = image_size
    video = F.interpolate(field[None], size=(num_frames, H, W), mode="trilinear", align_corners=True)[0]
    return denormalize_motion(video_to_motion(video), points0, motion_alphas(K, (H, W)))


# -- helpers ----------------------------------------------------------------------------------------------------

DIRECTION = re.compile(r"\b(left|right|up|down)\b")


def swap_direction(caption: str) -> tuple[str, int] | None:
    """Swap the one object direction word (left<->right, up<->down) of a caption; returns (caption, image axis).

    Camera phrases (after " while ") are kept: tracks live in camera-0 coordinates, where camera motion does not
    move them. None unless the object part names exactly one direction.
    """
    objects, sep, camera = caption.partition(" while ")
    words = DIRECTION.findall(objects)
    if len(words) != 1:
        return None
    return DIRECTION.sub(lambda m: SWAPS[m.group(1)], objects) + sep + camera, DIRECTION_AXES[words[0]][0]


def prompt_swap(generate: Callable[[str], Any], caption: str, scene: Any, gt: torch.Tensor,
                K: torch.Tensor) -> dict[str, Any] | None:
    """The prompt-swap test of one clip: does the image motion of its moving tracks follow the direction word?

    `scene` was generated from `caption`, `generate(swapped_caption)` gives the other Scene4D (same seed); gt
    `(T, N, 3)` and K are the clip's. None when the caption does not name exactly one object direction.
    """
    swap = swap_direction(caption)
    if swap is None:
        return None
    swapped, axis = swap
    moving = (gt[-1] - gt[0]).norm(dim=-1) > 0.05 * gt[0, :, 2].clamp_min(1e-3)
    alt = generate(swapped)
    d_gt = mean_image_motion(gt, K, moving)[axis]
    d_orig, d_swap = (mean_image_motion(s.points, s.K, moving)[axis] for s in (scene, alt))
    return {"caption": swapped, "gt": float(d_gt), "orig": float(d_orig), "swapped": float(d_swap),
            "follows": bool(d_orig * d_gt > 0 and d_swap * d_gt < 0)}


def _axis_relative_error(rows: list[dict[str, Any]]) -> list[float]:
    """Per-axis relative L1 error of the motion VAE on moving tracks, pooled over clips (x, y, depth)."""
    err = torch.tensor([r["vae_axis_l1"] for r in rows]).sum(0)
    ref = torch.tensor([r["vae_axis_ref"] for r in rows]).sum(0)
    return relative_error(err, ref).tolist()


def _summary(values: list[float]) -> float:
    v = [x for x in values if math.isfinite(x)]
    return float(sum(v) / len(v)) if v else math.nan


# -- the evaluation ---------------------------------------------------------------------------------------------

@torch.no_grad()
def evaluate(model: str = "tiny", weights_dir: str | os.PathLike | None = None, num_clips: int = 32,
             device: str | torch.device | None = None, num_inference_steps: int | None = None,
             guidance_scale: float | None = None, vism_steps: int = 10, seed_start: int = HELD_OUT_SEED_START,
             progress: bool = True, floor_samples: int = FLOOR_SAMPLES,
             mean_motion_path: str | os.PathLike = MEAN_MOTION_FILE, data_dir: str | os.PathLike | None = None,
             strict: bool = False) -> dict[str, Any]:
    """Run every measurement on `num_clips` clips; returns the report dict (see module docstring).

    Clips are held-out synth seeds from `seed_start`, or with `data_dir` the first `num_clips` readable
    TrajScene-60K samples there, fitted to the model's frames and resolution; unreadable samples are skipped
    and counted in the report (`strict`: refused).
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    from more4d.pipelines.strag import STraGPipeline
    from more4d.pipelines.vism import ViSMPipeline
    from more4d.weights import get_preset, load_components, resolve_device

    if num_clips < 1:
        raise InputError(f"num_clips must be >= 1, got {num_clips}")
    if floor_samples < 1:
        raise InputError(f"floor_samples must be >= 1, got {floor_samples}")
    dev = resolve_device(device)
    t0 = time.monotonic()
    spec = get_preset(model)
    H, W = spec.resolution
    T = spec.strag_defaults["num_frames"]
    dataset = None
    if data_dir is not None:  # read the data before loading models: a bad folder fails fast
        from more4d.data.trajscene60k import TrajScene60K

        dataset = TrajScene60K(data_dir, num_frames=T, size=(H, W), strict=strict, progress=progress)
    strag = STraGPipeline.from_preset(model, weights_dir, device=dev)
    strag.set_progress_bar_config(disable=True)
    vc = load_components(model, weights_dir, device=dev, only=("vae", "text_encoder", "tokenizer", "vism_transformer",
                                                               "vism_image_encoder"))
    vism = ViSMPipeline(transformer=vc["vism_transformer"], vae=vc["vae"], text_encoder=vc["text_encoder"],
                        tokenizer=vc["tokenizer"], image_encoder=vc["vism_image_encoder"],
                        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0))
    vism.set_progress_bar_config(disable=True)
    config = SynthConfig(num_frames=T, height=H, width=W, novel_views=1)
    mean_field = load_mean_motion(mean_motion_path)
    clips = (dataset.iter_clips(num_clips) if dataset is not None else
             (generate_batch([seed_start + i], config, "cpu").clips()[0] for i in range(num_clips)))

    rows: list[dict[str, Any]] = []
    for i, clip in enumerate(clips):
        rows.append(_evaluate_clip(clip, strag, vism, mean_field, num_inference_steps, guidance_scale,
                                   vism_steps))
        rows[-1]["motion_epe_floor"] = (perfect_sampler_floor(clip, config, floor_samples) if dataset is None
                                        else math.nan)
        if progress:
            r = rows[-1]
            print(f"[{i + 1}/{num_clips}] epe {r['epe']:.3f} (zero {r['epe_zero']:.3f}, mean {r['epe_mean']:.3f}) "
                  f"motion epe {r['motion_epe']:.3f} (zero {r['motion_epe_zero']:.3f}, mean "
                  f"{r['motion_epe_mean']:.3f}) depth absrel {r['abs_rel']:.3f} tearing {r['tearing_last']:.3f} (true "
                  f"{r['tearing_last_gt']:.3f}) vism hole psnr {r['hole_psnr_model']:.2f}",
                  flush=True)
    sampler = {"num_inference_steps": num_inference_steps or strag.defaults["num_inference_steps"],
               "guidance_scale": strag.defaults["guidance_scale"] if guidance_scale is None else guidance_scale}
    if not rows:
        raise InputError(f"--data {str(data_dir)!r}: no sample could be read ({dataset.skip_report()})")
    report = _report(rows, model, len(rows), seed_start, str(dev), time.monotonic() - t0, sampler)
    if dataset is not None:
        report.update(data=str(data_dir), seeds=None, skipped=dataset.skip_report())
    return report


def perfect_sampler_floor(clip: TrajClip, config: SynthConfig, samples: int = FLOOR_SAMPLES) -> float:
    """The mean motion EPE, against `clip`, of `samples` siblings (`generate_siblings`: same frame 0 and caption, the
    rest of the motion redrawn): what a perfect sampler of the motion given image and caption would score."""
    siblings = generate_siblings(clip.meta["seed"], samples, dataclasses.replace(config, novel_views=0),
                                 generator_seed=clip.meta["seed"])
    gt, vis = clip.points.float(), clip.visibility
    return _summary([float(displacement_epe(p.float(), gt, vis)) for p in siblings.points])


def motion_vae_reconstruction(mvae: MotionVAE, clip: TrajClip) -> dict[str, Any]:
    """The motion VAE's round trip of a clip's true motion (true depth): `vae_epe`, the end-point error in metric
    units, and `vae_axis_l1` / `vae_axis_ref`, the per-axis sums of `motion_axis_l1` over moving tracks."""
    gt, vis = clip.points.float(), clip.visibility
    T, H, W = clip.frames.shape[:3]
    alphas = motion_alphas(clip.K.float(), (H, W))
    m, ok = normalize_motion(gt, alphas)
    video = motion_to_video(m, H, W)
    moving = moving_tracks(video).flatten()
    with torch.no_grad():
        recon = mvae.decode_motion(mvae.encode_motion(video[None].to(mvae.device, mvae.dtype)))
    recon = video_to_motion(recon[0].float().cpu())
    err, ref = motion_axis_l1(recon, m, moving)
    return {"vae_epe": float(track_epe(denormalize_motion(recon, gt[0], alphas), gt, vis, ok)),
            "vae_axis_l1": err.tolist(), "vae_axis_ref": ref.tolist()}


def motion_vae_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The report's motion VAE entry from rows holding `motion_vae_reconstruction`'s fields."""
    return {"recon_epe_metric": _summary([r["vae_epe"] for r in rows]),
            "axis_relative_error": _axis_relative_error(rows)}


def _evaluate_clip(clip: TrajClip, strag: Any, vism: Any, mean_field: torch.Tensor, steps: int | None,
                   guidance: float | None, vism_steps: int) -> dict[str, Any]:
    from more4d.pipelines.vism_conditioning import clip_view
    from more4d.scene import Scene4D

    T, H, W = clip.frames.shape[:3]
    image = clip.frames[0].float() / 255.0
    gt, vis = clip.points.float(), clip.visibility
    row: dict[str, Any] = {"seed": clip.meta.get("seed"), "id": clip.meta.get("id"), "caption": clip.caption,
                           "motions": sorted({o["motion"] for o in clip.meta.get("objects", [])}),
                           "camera": clip.meta.get("camera_motion")}
    # depth
    pred = strag.depth_estimator(image)
    valid = clip.depth[0] > 1e-3
    row["abs_rel"] = float(depth_abs_rel(pred.depth.cpu(), clip.depth[0], valid))
    row["delta1"] = float(depth_delta1(pred.depth.cpu(), clip.depth[0], valid))
    edges = depth_edge_errors(pred.depth.cpu(), clip.depth[0], valid)
    row["edge_acc"], row["edge_comp"] = edges["acc"], edges["comp"]
    # STraG with predicted depth, baselines and the GT-motion oracle from the same frame-0 points; end to end and
    # displacements only (motion_*)
    alphas = motion_alphas(clip.K.float(), (H, W))
    m, _ = normalize_motion(gt, alphas)
    scene = strag(image, clip.caption, num_frames=T, num_inference_steps=steps, guidance_scale=guidance, seed=0)
    p0 = scene.points[0]
    for suffix, tracks in (("", scene.points), ("_zero", p0.expand_as(gt)),
                           ("_mean", apply_mean_motion(mean_field, p0, scene.K, (H, W), T))):
        row[f"epe{suffix}"] = float(track_epe(tracks, gt, vis))
        row[f"motion_epe{suffix}"] = float(displacement_epe(tracks, gt, vis))
    row["epe_oracle_motion"] = float(track_epe(denormalize_motion(m, p0, alphas), gt, vis))
    # prompt swap: the horizontal/vertical image motion of moving tracks must follow the direction word
    swap = prompt_swap(lambda caption: strag(image, caption, num_frames=T, num_inference_steps=steps,
                                             guidance_scale=guidance, seed=0), clip.caption, scene, gt, clip.K.float())
    if swap is not None:
        row["swap"] = swap
    row.update(motion_vae_reconstruction(strag.motion_vae, clip))
    truth_scene = Scene4D(points=gt, colors=clip.colors.float(), visibility=vis, K=clip.K.float(), image_size=(H, W),
                          fps=clip.fps, prompt=clip.caption)
    # tearing and depth discontinuities of the generated scene and of the truth (true motion uncovers some too),
    # both drawn as the pipeline draws its scenes (every point with a frame-0 depth, the model predicts no
    # visibility), so that they differ by depth and motion alone
    drawn_as_generated = dataclasses.replace(truth_scene, visibility=vis[:1].expand_as(vis))
    for suffix, sc in (("", scene), ("_gt", drawn_as_generated)):
        tear, torn = tearing(sc), surface_tears(sc)
        row[f"tearing_last{suffix}"], row[f"tearing_mean{suffix}"] = float(tear[-1]), float(tear.mean())
        row[f"torn_last{suffix}"], row[f"torn_mean{suffix}"] = float(torn[-1]), float(torn.mean())
        row[f"discontinuity{suffix}"] = float(depth_discontinuities(sc).float().mean())
    # ViSM on the novel camera (the source camera when the clip has none): every hole filler, holes and whole frame
    traj, frames = clip_view(clip, 0 if clip.novel else None)
    out = vism(truth_scene, traj, num_inference_steps=vism_steps, guidance_scale=1.0, inpaint="model",
               composite=False, generator=torch.Generator().manual_seed(0), output_type="pt")
    true, hole, render = frames.float() / 255.0, out.mask[0], out.render[0]
    row["hole_fraction"] = float(hole.float().mean())
    for name, img in vism_fills(out.frames[0], render, hole).items():
        row[f"hole_psnr_{name}"] = float(psnr(img, true, hole).nanmean())
        row[f"hole_ssim_{name}"] = float(ssim(img, true, hole).nanmean())
        row[f"full_psnr_{name}"] = float(psnr(img, true).mean())
    return row


VISM_FILLS = ("render", "nearest", "telea", "ns", "pushpull", "model", "model_composite")


def vism_fills(model_frames: torch.Tensor, render: torch.Tensor, hole: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every way to fill the render's holes that `more4d eval` compares: none (the raw render), the classical
    baselines (nearest, OpenCV Telea and Navier-Stokes), push-pull, the ViSM model alone and composited."""
    from more4d.pipelines.vism_conditioning import composite_frames, fill_holes

    return {"render": render, "nearest": nearest_fill(render, hole), "telea": classical_inpaint(render, hole, "telea"),
            "ns": classical_inpaint(render, hole, "ns"), "pushpull": fill_holes(render, hole), "model": model_frames,
            "model_composite": composite_frames(model_frames, render, hole)}


def vism_default_fill(model: str) -> str:
    """The filler a preset's ViSM uses by default (`Preset.vism_defaults`), as named in `VISM_FILLS`."""
    from more4d.pipelines.vism import preset_defaults

    d = preset_defaults(model)
    return "pushpull" if d["inpaint"] == "pushpull" else "model_composite" if d["composite"] else "model"


def _report(rows: list[dict[str, Any]], model: str, num_clips: int, seed_start: int, device: str,
            seconds: float, sampler: dict[str, Any]) -> dict[str, Any]:
    def mean(key: str, subset: list[dict[str, Any]] | None = None) -> float:
        return _summary([r[key] for r in (rows if subset is None else subset)])

    def strag_means(subset: list[dict[str, Any]] | None = None) -> dict[str, float]:
        return {f"{name}{label}": mean(f"{name}{key}", subset) for name in ("epe", "motion_epe")
                for key, label in (("", ""), ("_zero", "_zero_motion"), ("_mean", "_mean_motion"))}

    st = strag_means()
    epe, zero, mean_b = st["epe"], st["epe_zero_motion"], st["epe_mean_motion"]
    motion, motion_zero, motion_mean = st["motion_epe"], st["motion_epe_zero_motion"], st["motion_epe_mean_motion"]
    per_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        for mtype in r["motions"]:
            per_type[mtype].append(r)
        if r["camera"] is not None:
            per_type[f"camera:{r['camera']}"].append(r)
    swaps = [r["swap"]["follows"] for r in rows if "swap" in r]
    fills = {name: {metric: mean(f"{metric}_{name}") for metric in ("hole_psnr", "full_psnr", "hole_ssim")}
             for name in VISM_FILLS}
    default = vism_default_fill(model)
    classical = max(fills["telea"]["hole_psnr"], fills["ns"]["hole_psnr"])
    return {
        "model": model, "num_clips": num_clips, "seeds": [seed_start, seed_start + num_clips - 1], "device": device,
        "seconds": round(seconds, 1), "strag_sampler": sampler,
        "depth": {"abs_rel": mean("abs_rel"), "delta1": mean("delta1"), "bar_abs_rel_max": 0.10,
                  "pass": mean("abs_rel") <= 0.10, "edge_acc": mean("edge_acc"), "edge_comp": mean("edge_comp"),
                  "discontinuity": mean("discontinuity"), "discontinuity_gt": mean("discontinuity_gt")},
        "tearing": {**{key: mean(f"tearing_{key}") for key in ("last", "mean", "last_gt", "mean_gt")},
                    **{f"torn_{key}": mean(f"torn_{key}") for key in ("last", "mean", "last_gt", "mean_gt")}},
        "strag": {**st, "reduction_vs_zero": 1.0 - epe / zero if zero else math.nan,
                  "epe_oracle_motion": mean("epe_oracle_motion"),
                  "end_to_end_pass": bool(epe <= 0.6 * zero and epe < mean_b),
                  "motion_reduction_vs_zero": 1.0 - motion / motion_zero if motion_zero else math.nan,
                  "motion_epe_floor": mean("motion_epe_floor"),
                  "pass": bool(motion <= 0.6 * motion_zero and motion < motion_mean),
                  "per_motion_type": {k: {"clips": len(v), **strag_means(v)} for k, v in sorted(per_type.items())},
                  "prompt_swap": {"clips": len(swaps), "follow_rate": sum(swaps) / len(swaps) if swaps else math.nan}},
        "motion_vae": motion_vae_summary(rows),
        "vism": {"fills": fills, "default": default, "hole_fraction": mean("hole_fraction"),
                 "gain_vs_classical_db": fills[default]["hole_psnr"] - classical,
                 "pass": bool(fills[default]["hole_psnr"] > classical)},
        "clips": rows,
    }


def format_report(report: dict[str, Any]) -> str:
    """A readable plain-text table of a report (what `more4d eval` prints)."""
    d, s, v, tr = report["depth"], report["strag"], report["vism"], report["tearing"]
    ax = report["motion_vae"]["axis_relative_error"]
    ok = {True: "PASS", False: "MISS"}
    data = report.get("data")
    source = (f"TrajScene-60K clips from {data}" if data else
              f"held-out clips (seeds {report['seeds'][0]}..{report['seeds'][1]})")
    floor = (f"{s['motion_epe_floor']:.4f}" if math.isfinite(s["motion_epe_floor"]) else
             "n/a, synthetic data only")
    units = "the data's" if data else "metric"
    lines = [
        f"more4d eval: model {report['model']}, {report['num_clips']} {source}, {report['device']}, "
        f"{report['seconds']} s",
        f"depth      AbsRel {d['abs_rel']:.4f} (bar <= 0.10: {ok[d['pass']]})   delta1 {d['delta1']:.4f}",
        f"           edges (iBims-1, px) accuracy {d['edge_acc']:.2f}  completeness {d['edge_comp']:.2f}; "
        f"on a depth discontinuity {100 * d['discontinuity']:.1f}% of pixels (ground truth "
        f"{100 * d['discontinuity_gt']:.1f}%)",
        f"tearing    holes at the input camera, last frame {100 * tr['last']:.1f}% (true motion "
        f"{100 * tr['last_gt']:.1f}%), mean over frames {100 * tr['mean']:.1f}% ({100 * tr['mean_gt']:.1f}%)",
        f"           pixels torn from their surface, last frame {100 * tr['torn_last']:.1f}% (true motion "
        f"{100 * tr['torn_last_gt']:.1f}%), mean over frames {100 * tr['torn_mean']:.1f}% "
        f"({100 * tr['torn_mean_gt']:.1f}%)",
        f"4D-STraG   sampler: {report['strag_sampler']['num_inference_steps']} steps, guidance "
        f"{report['strag_sampler']['guidance_scale']:g}",
        f"           end-to-end EPE {s['epe']:.4f}  zero-motion {s['epe_zero_motion']:.4f}  mean-motion "
        f"{s['epe_mean_motion']:.4f}  reduction {100 * s['reduction_vs_zero']:.1f}% ({ok[s['end_to_end_pass']]}; "
        f"GT-motion floor {s['epe_oracle_motion']:.4f})",
        f"           motion (displacement) EPE {s['motion_epe']:.4f}  zero-motion {s['motion_epe_zero_motion']:.4f}  "
        f"mean-motion {s['motion_epe_mean_motion']:.4f}  reduction {100 * s['motion_reduction_vs_zero']:.1f}% "
        f"(bar >= 40% and < mean: {ok[s['pass']]}; a perfect sampler: {floor})",
        f"           prompt swap follows direction: {s['prompt_swap']['follow_rate']:.2f} "
        f"({s['prompt_swap']['clips']} clips)",
        f"motion VAE recon EPE {report['motion_vae']['recon_epe_metric']:.4f} ({units} units); relative error on "
        f"moving tracks x {ax[0]:.2f}, y {ax[1]:.2f}, depth {ax[2]:.2f} (0 kept, 1 lost)",
        f"4D-ViSM    holes {100 * v['hole_fraction']:.1f}% of the frame; the preset fills them by {v['default']} "
        f"({v['gain_vs_classical_db']:+.2f} dB vs the best of Telea / Navier-Stokes: {ok[v['pass']]})",
        f"           {'filler':<16} hole PSNR  whole-frame PSNR  hole SSIM",
    ] + [f"           {name:<16} {f['hole_psnr']:>9.2f}  {f['full_psnr']:>16.2f}  {f['hole_ssim']:>9.3f}"
         for name, f in v["fills"].items()]
    if s["per_motion_type"]:
        lines += [f"{'':<32}   {'end-to-end EPE':<22}   motion (displacement) EPE",
                  f"{'per motion type':<26} clips   {'STraG':<6}  {'zero':<6}  {'mean':<6}   {'STraG':<6}  "
                  f"{'zero':<6}  mean"]
    for k, r in s["per_motion_type"].items():
        lines.append(f"  {k:<24} {r['clips']:>5}   {r['epe']:.4f}  {r['epe_zero_motion']:.4f}  {r['epe_mean_motion']:.4f}"
                     f"   {r['motion_epe']:.4f}  {r['motion_epe_zero_motion']:.4f}  {r['motion_epe_mean_motion']:.4f}")
    if "skipped" in report:
        lines.append(f"data       {report['skipped']}")
    return "\n".join(lines)


def write_report(report: dict[str, Any], path: str | os.PathLike) -> Path:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(report, indent=1, default=float))
    return Path(path)


if __name__ == "__main__":  # python -m more4d.eval.evaluate --write-mean-motion [--num-clips N] [--device cuda]
    import argparse

    parser = argparse.ArgumentParser(description="write the mean-motion baseline file")
    parser.add_argument("--write-mean-motion", action="store_true", required=True)
    parser.add_argument("--num-clips", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    a = parser.parse_args()
    f = mean_motion_field(a.num_clips, device=a.device)
    print(save_mean_motion(f, num_clips=a.num_clips, seeds=f"0..{a.num_clips - 1}", size=MEAN_MOTION_SIZE))
