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
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.12, top=0.86 if title else 0.92, wspace=0.3, hspace=0.6)
    with atomic_write(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def save_image_grid(path: Path, rows: Sequence[Sequence[np.ndarray]], row_titles: Sequence[str] = (),
                    col_titles: Sequence[str] = ()) -> None:
    """Save a grid of images (each `(H, W, 3)` float in [0, 1] or `(H, W)` scalar map, shown in turbo) as one PNG.

    Tiles are resized to the first image's size; titles are drawn above columns and inside the first column.
    """
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    def tile(img: np.ndarray, size: tuple[int, int]) -> Image.Image:
        img = np.nan_to_num(np.asarray(img, dtype=np.float32))
        if img.ndim == 2:
            lo, hi = float(img.min()), float(img.max())
            img = colormaps["turbo"]((img - lo) / max(hi - lo, 1e-8))[..., :3]
        out = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
        return out if out.size == size else out.resize(size, Image.BILINEAR)

    first = np.asarray(rows[0][0])
    h, w = max(first.shape[0], 96), max(first.shape[1], 96)
    head = 14 if col_titles else 0
    n_cols = max(len(r) for r in rows)
    canvas = Image.new("RGB", (n_cols * (w + 2), head + len(rows) * (h + 2)), "white")
    draw = ImageDraw.Draw(canvas)
    for j, title in enumerate(col_titles):
        draw.text((j * (w + 2) + 2, 1), str(title)[:40], fill="black")
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            canvas.paste(tile(img, (w, h)), (j * (w + 2), head + i * (h + 2)))
        if i < len(row_titles):
            draw.text((3, head + i * (h + 2) + 2), str(row_titles[i])[:48], fill="white")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        canvas.save(tmp, format="PNG")
