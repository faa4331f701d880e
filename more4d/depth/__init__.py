"""Depth estimators: metric depth + intrinsics from one image (`DepthEstimator` protocol)."""

from more4d.depth.base import DepthEstimator, DepthPrediction, GivenDepth, load_depth, resize_depth
from more4d.depth.tiny import TinyDepthEstimator, TinyDepthNet
from more4d.depth.unidepth import UniDepthEstimator, unidepth_available

__all__ = ["DepthEstimator", "DepthPrediction", "GivenDepth", "TinyDepthEstimator", "TinyDepthNet",
           "UniDepthEstimator", "load_depth", "resize_depth", "unidepth_available"]
