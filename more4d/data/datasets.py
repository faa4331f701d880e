"""Training datasets over an index of more4d clips, with aspect-ratio buckets and hash splits.

- `MotionVAEDataset`: normalised motion videos + visibility (the Motion VAE).
- `STraGDataset`: first image, its depth and K, caption, normalised motion (4D-STraG).
- `ViSMDataset`: point-cloud render + hole mask from the source or a novel camera -> true frames (4D-ViSM).

Videos are `(3, T, H, W)` float in [-1, 1], motion `(3, T, H, W)` (more4d.geometry.normalize_motion).
Batch items of one `BucketBatchSampler` batch share `(H, W)`, so the default collate stacks them.
"""

from __future__ import annotations

import os
import random
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from more4d.data.formats import TrajClip, read_clip
from more4d.data.index import IndexEntry, read_index
from more4d.errors import InputError
from more4d.geometry import motion_alphas, motion_to_video, normalize_motion


class ClipDataset(Dataset):
    """Clips listed in an index (a jsonl file or a folder with `index.jsonl`), optionally one split only."""

    read_novel = False
    read_depth = False

    def __init__(self, index: str | os.PathLike | list[IndexEntry], split: str | None = "train",
                 seed_compat: bool = False) -> None:
        entries = read_index(index, split) if isinstance(index, (str, os.PathLike)) else list(index)
        if split is not None and not isinstance(index, (str, os.PathLike)):
            entries = [e for e in entries if e.split == split]
        if not entries:
            raise InputError(f"dataset index {index if isinstance(index, (str, os.PathLike)) else '(list)'} "
                             f"has no clips in split {split!r}")
        self.entries = entries
        self.seed_compat = seed_compat

    def __len__(self) -> int:
        return len(self.entries)

    def bucket(self, i: int) -> tuple[int, int]:
        """The `(H, W)` aspect bucket of item i (from the index, without reading the clip)."""
        return self.entries[i].height, self.entries[i].width

    def clip(self, i: int) -> TrajClip:
        return read_clip(self.entries[i].path, novel=self.read_novel, depth=self.read_depth)

    def _motion(self, clip: TrajClip) -> tuple[torch.Tensor, torch.Tensor]:
        alphas = motion_alphas(clip.K, (clip.height, clip.width), seed_compat=self.seed_compat)
        m, valid = normalize_motion(clip.points, alphas)
        return motion_to_video(m, clip.height, clip.width), valid.view(clip.height, clip.width)

    def __getitem__(self, i: int) -> Any:
        return self.clip(i)


def _video(frames: torch.Tensor) -> torch.Tensor:
    """uint8 `(T, H, W, 3)` -> float `(3, T, H, W)` in [-1, 1]."""
    return frames.permute(3, 0, 1, 2).float() / 127.5 - 1.0


class MotionVAEDataset(ClipDataset):
    """Items: motion `(3, T, H, W)`, visibility `(T, H, W)` float, valid `(H, W)` bool, video `(3, T, H, W)`."""

    def __getitem__(self, i: int) -> dict[str, Any]:
        clip = self.clip(i)
        motion, valid = self._motion(clip)
        return {"motion": motion, "visibility": clip.visibility.view(clip.num_frames, clip.height, clip.width).float(),
                "valid": valid, "video": _video(clip.frames), "id": self.entries[i].id}


class STraGDataset(ClipDataset):
    """Items: image `(3, H, W)` in [-1, 1], video `(3, T, H, W)`, depth `(H, W)` (frame-0 z of the tracks),
    K `(3, 3)`, caption, motion `(3, T, H, W)`, valid `(H, W)`, visibility `(T, H, W)`."""

    def __getitem__(self, i: int) -> dict[str, Any]:
        clip = self.clip(i)
        motion, valid = self._motion(clip)
        video = _video(clip.frames)
        return {"image": video[:, 0], "video": video, "depth": clip.points[0, :, 2].view(clip.height, clip.width),
                "K": clip.K, "caption": clip.caption, "motion": motion, "valid": valid,
                "visibility": clip.visibility.view(clip.num_frames, clip.height, clip.width).float(),
                "id": self.entries[i].id}


class ViSMDataset(ClipDataset):
    """Items: render `(3, T, H, W)` of the clip's visible tracked points from one camera, hole mask `(T, H, W)`
    float (1 = hole), target `(3, T, H, W)` true frames from that camera, caption, c2w `(T, 4, 4)`, K.

    The camera is a novel view when the clip has one (chosen by `view`, or by a hash of the item and `epoch`),
    else the source camera (`meta["camera_c2w"]`, identity when absent, as for clips built from videos).
    """

    read_novel = True

    def __init__(self, index: str | os.PathLike | list[IndexEntry], split: str | None = "train", *,
                 view: int | None = None, source_prob: float = 0.25, epoch: int = 0) -> None:
        super().__init__(index, split)
        self.view, self.source_prob, self.epoch = view, source_prob, epoch

    def __getitem__(self, i: int) -> dict[str, Any]:
        from more4d.render import render_points

        clip = self.clip(i)
        T = clip.num_frames
        rng = random.Random(f"{self.entries[i].id}/{self.epoch}")
        use_source = not clip.novel or (self.view is None and rng.random() < self.source_prob)
        if use_source:
            c2w = torch.tensor(clip.meta["camera_c2w"]) if "camera_c2w" in clip.meta else torch.eye(4).expand(T, 4, 4)
            target, K = clip.frames, clip.K
        else:
            novel = clip.novel[self.view if self.view is not None else rng.randrange(len(clip.novel))]
            c2w, target, K = novel.c2w, novel.frames, novel.K
        out = render_points(clip.points, clip.colors.expand(T, -1, -1), c2w.float(), K.expand(T, 3, 3),
                            clip.height, clip.width, opacity=clip.visibility.float())
        return {"render": out.rgb.permute(3, 0, 1, 2) * 2 - 1, "mask": out.hole_mask.float(), "target": _video(target),
                "caption": clip.caption, "c2w": c2w.float(), "K": K, "id": self.entries[i].id}


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of indices that share an `(H, W)` bucket; shuffled deterministically by `seed` and `epoch`."""

    def __init__(self, dataset: ClipDataset, batch_size: int, *, shuffle: bool = True, drop_last: bool = False,
                 seed: int = 0) -> None:
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        self.buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i in range(len(dataset)):
            self.buckets[dataset.bucket(i)].append(i)
        self.batch_size, self.shuffle, self.drop_last, self.seed = batch_size, shuffle, drop_last, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        batches = []
        for key in sorted(self.buckets):
            items = list(self.buckets[key])
            if self.shuffle:
                rng.shuffle(items)
            for s in range(0, len(items), self.batch_size):
                batch = items[s:s + self.batch_size]
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append(batch)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())
