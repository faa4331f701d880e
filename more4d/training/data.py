"""Training data as an endless, seeded, resumable stream of `SynthBatch`es on the training device.

Sources (`data.source`):
- `synth_on_the_fly`: TrajScene-Synth rendered on the training device each micro-step; sample i of the run is
  seed `train_seed_start + i` (far below the held-out evaluation seeds), so the order is fixed by the config
  and a resumed run continues exactly where it stopped.
- `synth_pool`: `data.pool_size` clips (seeds `train_seed_start + i`) rendered on the training device once, then
  batches drawn from them by a seeded permutation per epoch: for models whose step costs less than rendering a clip.
  A `reduce` function (e.g. a frozen encoder: `EncodedPool`) can shrink each rendered chunk to what a step needs,
  so a pool of many more clips fits;
- `synth_dir` / `more4d_dir`: a folder of clips in the more4d layout (`more4d synth --out DIR`, `more4d build-data`);
- `seed_dir`: the authors' TrajScene layout (track pickles beside mp4s, read with the restricted unpickler);
- `trajscene60k`: the authors' released TrajScene-60K, streamed from its archives (or extracted folders) and fitted
  to `data.num_frames` x `data.height` x `data.width` (more4d.data.trajscene60k); unreadable samples are replaced
  by the next readable one and counted at the end, or stop the run with `data.strict`.
Folder sources use a DataLoader whose sampler draws a seeded permutation per epoch, also resumable by step.
Every source yields the same stacked `SynthBatch` (clips without novel views or depth get empty/NaN fields).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from more4d.data.synth import SynthBatch, SynthConfig, generate_batch
from more4d.errors import InputError
from more4d.geometry import motion_alphas, motion_to_video, normalize_motion
from more4d.training.config import VALIDATION_SEED_START, DataConfig, TrainConfig


def synth_config(data: DataConfig, novel_views: int = 0) -> SynthConfig:
    return SynthConfig(num_frames=data.num_frames, height=data.height, width=data.width, novel_views=novel_views,
                       photo_prob=data.photo_prob, unnamed_prob=data.unnamed_prob,
                       large_prob=data.large_prob, closeup_prob=data.closeup_prob, part_prob=data.part_prob)


def sample_indices(micro_step: int, rank: int, world: int, batch_size: int) -> list[int]:
    """Global sample indices of one micro-step on one rank (disjoint across ranks and steps)."""
    first = (micro_step * world + rank) * batch_size
    return list(range(first, first + batch_size))


@dataclass
class EncodedPool:
    """Clips reduced to per-clip tensors (first dim = clip) and their captions, e.g. frame 0 + frozen latents."""

    tensors: dict[str, torch.Tensor]
    captions: list[str]

    def __len__(self) -> int:
        return len(self.captions)

    def select(self, index: Sequence[int]) -> EncodedPool:
        idx = torch.as_tensor(list(index), dtype=torch.long)
        return EncodedPool({k: v[idx.to(v.device)] for k, v in self.tensors.items()}, [self.captions[i] for i in idx])

    @classmethod
    def cat(cls, pools: Sequence[EncodedPool]) -> EncodedPool:
        return cls({k: torch.cat([p.tensors[k] for p in pools]) for k in pools[0].tensors},
                   [c for p in pools for c in p.captions])


Reduce = Callable[[SynthBatch], Any]  # a rendered chunk -> anything with len/select/cat (SynthBatch, EncodedPool)


def batches(cfg: TrainConfig, accelerator: Any, start_step: int, *, novel_views: int = 0,
            reduce: Reduce | None = None) -> Iterator[Any]:
    """Endless batches for optimisation steps `start_step, start_step + 1, ...` (all micro-steps of each).

    `reduce` applies to `synth_pool` only: each rendered chunk is replaced by `reduce(chunk)` before it is kept.
    """
    data = cfg.data
    micro = start_step * cfg.gradient_accumulation_steps
    rank, world = accelerator.process_index, accelerator.num_processes
    if data.source == "synth_on_the_fly":
        return _synth_stream(data, micro, rank, world, accelerator.device, novel_views)
    if data.source == "synth_pool":
        pool = synth_pool(data, accelerator.device, novel_views, reduce)
        sampler = StepBatchSampler(len(pool), data.batch_size, micro, rank, world, cfg.seed)
        return (pool.select(index) for index in sampler)
    dataset = (TrajScene60KClips(data, progress=accelerator.is_main_process) if data.source == "trajscene60k"
               else ClipFolder(data.path, data.source, data.caption_suffix))
    sampler = StepBatchSampler(len(dataset), data.batch_size, micro, rank, world, cfg.seed)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=stack_clips, num_workers=data.num_workers,
                        pin_memory=accelerator.device.type == "cuda", persistent_workers=data.num_workers > 0)
    return _loader_batches(loader, accelerator.device)


def _loader_batches(loader: DataLoader, device: torch.device) -> Iterator[SynthBatch]:
    """The loader's batches on `device`; the samples skipped on the way (`meta["skipped"]`) are counted and
    printed when the stream ends."""
    skipped: list[str] = []
    try:
        for batch in loader:
            skipped += [s for meta in batch.metas for s in meta.pop("skipped", [])]
            yield _to_device(batch, device)
    finally:
        if skipped:  # each was warned about when read; the end says how many
            more = f"; and {len(skipped) - 10} more" if len(skipped) > 10 else ""
            print(f"data: {len(skipped)} unreadable samples skipped: {'; '.join(skipped[:10])}{more}", flush=True)


def _synth_stream(data: DataConfig, micro: int, rank: int, world: int, device: torch.device,
                  novel_views: int) -> Iterator[SynthBatch]:
    config = synth_config(data, novel_views)
    while True:
        seeds = [data.train_seed_start + i for i in sample_indices(micro, rank, world, data.batch_size)]
        if seeds[-1] >= VALIDATION_SEED_START:
            raise InputError(f"training seeds reached the validation/held-out range (>= {VALIDATION_SEED_START}); "
                             "lower data.train_seed_start")
        batch = generate_batch(seeds, config, device)
        if data.caption_suffix:
            batch.captions = [c + data.caption_suffix for c in batch.captions]
        yield batch
        micro += 1


def synth_pool(data: DataConfig, device: torch.device, novel_views: int = 0, reduce: Reduce | None = None) -> Any:
    """Clips `train_seed_start + [0, pool_size)` rendered on `device`, `pool_chunk_size` (default `batch_size`) at
    a time with a progress bar, each chunk passed through `reduce` if given (after `caption_suffix` is added)."""
    seeds = range(data.train_seed_start, data.train_seed_start + data.pool_size)
    if seeds[-1] >= VALIDATION_SEED_START:
        raise InputError(f"the pool's seeds reach the validation/held-out range (>= {VALIDATION_SEED_START}); "
                         "lower data.train_seed_start or data.pool_size")
    config = synth_config(data, novel_views)
    chunks, size = [], data.pool_chunk_size or data.batch_size
    bar = tqdm(total=len(seeds), desc="synth pool", unit="clip", dynamic_ncols=True)
    for i in range(0, len(seeds), size):
        chunk = generate_batch(seeds[i:i + size], config, device)
        bar.update(len(chunk))
        if data.caption_suffix:
            chunk.captions = [c + data.caption_suffix for c in chunk.captions]
        chunks.append(chunk if reduce is None else reduce(chunk))
        if i == 0:
            _check_pool_fits(chunks[0], data, device)
    bar.close()
    return type(chunks[0]).cat(chunks)


def _free_bytes(device: torch.device) -> int:
    if device.type == "cuda":  # memory the caching allocator holds but does not use is free to this process
        return (torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device)
                - torch.cuda.memory_allocated(device))
    return psutil.virtual_memory().available


def _nbytes(obj: Any) -> int:
    values = obj.values() if isinstance(obj, dict) else vars(obj).values()
    return sum(v.nbytes if isinstance(v, torch.Tensor) else _nbytes(v) for v in values
               if isinstance(v, (torch.Tensor, dict)))


def _check_pool_fits(first: Any, data: DataConfig, device: torch.device) -> None:
    """Raise InputError before a pool that would not fit in half the device's free memory is rendered."""
    per_clip = _nbytes(first) / len(first)
    need, free = per_clip * data.pool_size, _free_bytes(device)
    if need > free / 2:
        raise InputError(f"a synth pool of {data.pool_size} clips of {data.num_frames}x{data.height}x{data.width} "
                         f"needs {need / 2**30:.1f} GiB on {device.type}, which has {free / 2**30:.1f} GiB free: "
                         f"lower data.pool_size to at most {int(free / 2 / per_clip)}")


class StepBatchSampler(Sampler[list[int]]):
    """Endless index batches: epoch e is a permutation seeded by (seed, e); starts at micro-step `start`."""

    def __init__(self, n: int, batch_size: int, start: int, rank: int, world: int, seed: int) -> None:
        if n == 0:
            raise InputError("the data folder holds no clips")
        self.n, self.batch_size, self.start, self.rank, self.world, self.seed = n, batch_size, start, rank, world, seed

    def __iter__(self) -> Iterator[list[int]]:
        micro, cache = self.start, {}
        while True:
            out = []
            for i in sample_indices(micro, self.rank, self.world, self.batch_size):
                epoch, pos = divmod(i, self.n)
                if epoch not in cache:
                    cache = {epoch: torch.randperm(self.n, generator=torch.Generator().manual_seed(
                        self.seed * 1_000_003 + epoch))}
                out.append(int(cache[epoch][pos]))
            yield out
            micro += 1


class ClipFolder(Dataset):
    """Clips under `root`: more4d layout (folders with `meta.json`) or seed layout (`*_dt3d_pred.pkl` files)."""

    def __init__(self, root: str | None, source: str, caption_suffix: str = "") -> None:
        self.root, self.source, self.caption_suffix = Path(root or "."), source, caption_suffix
        if source == "seed_dir":
            self.items = sorted(self.root.rglob("*.pkl"))
        else:
            self.items = sorted(p.parent for p in self.root.rglob("meta.json"))
        if not self.items:
            raise InputError(f"data.path {str(self.root)!r} holds no clips for source {source!r}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        if self.source == "seed_dir":
            from more4d.data import read_seed_clip

            clip = read_seed_clip(self.items[i])
        else:
            from more4d.data import read_clip

            clip = read_clip(self.items[i])
        clip.caption = clip.caption + self.caption_suffix
        return clip


class TrajScene60KClips(Dataset):
    """TrajScene-60K under `data.path` as `TrajClip`s of `data.num_frames` x `data.height` x `data.width`."""

    def __init__(self, data: DataConfig, progress: bool = True) -> None:
        from more4d.data.trajscene60k import TrajScene60K

        self.clips = TrajScene60K(data.path, num_frames=data.num_frames, size=(data.height, data.width),
                                  strict=data.strict, progress=progress)
        self.caption_suffix = data.caption_suffix

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> Any:
        clip = self.clips[i]
        clip.caption = clip.caption + self.caption_suffix
        return clip


def stack_clips(clips: list[Any]) -> SynthBatch:
    """Stack `TrajClip`s of one size into a `SynthBatch` (missing depth -> NaN, views beyond the fewest dropped)."""
    def t(x: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.as_tensor(x) if dtype is None else torch.as_tensor(x).to(dtype)

    shapes = {tuple(c.frames.shape) for c in clips}
    if len(shapes) > 1:
        raise InputError(f"clips in one batch must share (T, H, W, 3); got {sorted(shapes)}: resize the data")
    T, H, W = clips[0].frames.shape[:3]
    views = min(len(c.novel) for c in clips)
    nan_depth = torch.full((T, H, W), float("nan"))
    eye = torch.eye(4).expand(T, 4, 4)
    return SynthBatch(
        frames=torch.stack([t(c.frames, torch.uint8) for c in clips]),
        depth=torch.stack([nan_depth if c.depth is None else t(c.depth, torch.float32) for c in clips]),
        points=torch.stack([t(c.points, torch.float32) for c in clips]),
        visibility=torch.stack([t(c.visibility, torch.bool) for c in clips]),
        colors=torch.stack([t(c.colors, torch.float32) for c in clips]),
        K=torch.stack([t(c.K, torch.float32) for c in clips]),
        c2w=torch.stack([t(c.meta.get("camera_c2w", eye), torch.float32) for c in clips]),
        novel_frames=torch.stack([torch.stack([t(v.frames, torch.uint8) for v in c.novel[:views]])
                                  if views else torch.zeros(0, T, H, W, 3, dtype=torch.uint8) for c in clips]),
        novel_depth=torch.zeros(len(clips), views, T, H, W),
        novel_c2w=torch.stack([torch.stack([t(v.c2w, torch.float32) for v in c.novel[:views]])
                               if views else torch.zeros(0, T, 4, 4) for c in clips]),
        captions=[c.caption for c in clips], metas=[dict(c.meta) for c in clips], fps=float(clips[0].fps))


def _to_device(batch: SynthBatch, device: torch.device) -> SynthBatch:
    for name, value in vars(batch).items():
        if isinstance(value, torch.Tensor):
            setattr(batch, name, value.to(device, non_blocking=True))
    return batch


def validation_batch(cfg: TrainConfig, device: torch.device, *, novel_views: int = 0) -> SynthBatch:
    """Fixed validation clips: held-out synth seeds (never trained on), whatever the training source."""
    seeds = range(VALIDATION_SEED_START, VALIDATION_SEED_START + cfg.num_validation_clips)
    return generate_batch(seeds, synth_config(cfg.data, novel_views), device)


def motion_targets(batch: SynthBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[tuple[float, float]]]:
    """Normalised motion videos of a batch (docs/method.md, "Depth-guided motion normalisation").

    Returns m `(B, 3, T, H, W)`, visibility `(B, T, H, W)` bool, valid frame-0 depth `(B, H*W)` bool and the
    per-clip alphas (fx/W, fy/H).
    """
    B, T, H, W = batch.frames.shape[:4]
    alphas = [motion_alphas(batch.K[b].cpu(), (H, W)) for b in range(B)]
    ms, valids = zip(*(normalize_motion(batch.points[b].float(), alphas[b]) for b in range(B)))
    m = motion_to_video(torch.stack(ms), H, W)
    return m, batch.visibility.view(B, T, H, W), torch.stack(valids), alphas
