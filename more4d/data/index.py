"""Dataset index: one JSON object per line (`index.jsonl`) describing each clip folder.

    {"id": "synth_000003", "caption": "...", "path": "synth_000003", "frames": 17, "height": 256,
     "width": 256, "split": "train"}

`path` is relative to the index file's folder. Splits are a deterministic hash of the clip id, so a clip keeps
its split however the index is rebuilt or reordered.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from more4d.errors import InputError
from more4d.io import atomic_write

SPLITS = ("train", "val", "test")
INDEX_NAME = "index.jsonl"


@dataclass(frozen=True)
class IndexEntry:
    id: str
    caption: str
    path: str
    frames: int
    height: int
    width: int
    split: str = "train"


def split_for(clip_id: str, val_fraction: float = 0.05, test_fraction: float = 0.05) -> str:
    """Deterministic split of `clip_id` from its SHA-1 (stable across machines and Python versions)."""
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction <= 1):
        raise InputError(f"split fractions must be >= 0 and sum to <= 1, got {val_fraction}, {test_fraction}")
    x = int.from_bytes(hashlib.sha1(clip_id.encode()).digest()[:8], "big") / 2**64
    return "test" if x < test_fraction else "val" if x < test_fraction + val_fraction else "train"


def write_index(entries: list[IndexEntry], path: str | os.PathLike) -> Path:
    """Write entries as jsonl, atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text("".join(json.dumps(asdict(e)) + "\n" for e in entries))
    return Path(path)


def read_index(path: str | os.PathLike, split: str | None = None) -> list[IndexEntry]:
    """Read an index (a jsonl file, or a folder holding `index.jsonl`), optionally one split only.

    Entry paths are returned resolved against the index's folder. Malformed lines raise `InputError`
    naming the line.
    """
    path = Path(path)
    if path.is_dir():
        path = path / INDEX_NAME
    if not path.is_file():
        raise InputError(f"dataset index {str(path)!r} does not exist")
    if split is not None and split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")
    entries = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = IndexEntry(**json.loads(line))
        except (json.JSONDecodeError, TypeError) as exc:
            raise InputError(f"dataset index {str(path)!r} line {i} is not a valid entry: {exc}") from exc
        if split is None or entry.split == split:
            entries.append(IndexEntry(**{**asdict(entry), "path": str((path.parent / entry.path).resolve())}))
    return entries


def entry_for_clip(folder: str | os.PathLike, root: str | os.PathLike, clip_id: str | None = None) -> IndexEntry:
    """Index entry for a clip folder (reads only its meta.json); `path` is made relative to `root`."""
    from more4d.data.formats import read_clip_header

    folder = Path(folder)
    header = read_clip_header(folder)
    clip_id = clip_id or folder.name
    return IndexEntry(id=clip_id, caption=str(header.get("caption", "")), path=os.path.relpath(folder, root),
                      frames=int(header["num_frames"]), height=int(header["height"]), width=int(header["width"]),
                      split=split_for(clip_id))
