"""Run records people read: metrics jsonl, TensorBoard (if installed), loss curves and sample grids as PNG."""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from more4d.io import atomic_write


class MetricsWriter:
    """Append `{"step": s, **metrics}` lines to `metrics.jsonl`; mirror scalars to TensorBoard when installed."""

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.enabled = enabled
        self.tb = None
        if enabled and importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **{k: _jsonable(v) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.tb.add_scalar(key, value, step)
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(metrics_path: Path, png_path: Path, title: str = "") -> None:
    """One panel per metric (train/* first, then val/*), log-y for losses; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    keys = sorted({k for r in records for k, v in r.items() if k != "step" and isinstance(v, (int, float))},
                  key=lambda k: (not k.startswith("train/loss"), not k.startswith("train/"), k))
    keys = [k for k in keys if not k.endswith(("/lr", "/samples_per_s", "/nonfinite"))] or keys
    if not keys:
        return
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        steps, values = zip(*pts)
        ax.plot(steps, values, lw=1.0, marker="." if len(pts) < 30 else None)
        if "loss" in key and min(values) > 0:
            ax.set_yscale("log")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_write(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def save_image_grid(path: Path, rows: Sequence[Sequence[np.ndarray]], row_titles: Sequence[str] = (),
                    col_titles: Sequence[str] = ()) -> None:
    """Save a grid of images (each `(H, W, 3)` float in [0, 1] or `(H, W)` scalar map) as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.9 * n_cols, 1.9 * n_rows), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.axis("off")
            if j < len(row):
                img = np.asarray(row[j], dtype=np.float32)
                ax.imshow(np.clip(img, 0, 1) if img.ndim == 3 else img, cmap=None if img.ndim == 3 else "turbo")
            if i == 0 and j < len(col_titles):
                ax.set_title(col_titles[j], fontsize=7)
        if i < len(row_titles):
            axes[i, 0].text(-0.05, 0.5, row_titles[i], transform=axes[i, 0].transAxes, ha="right", va="center",
                            fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
