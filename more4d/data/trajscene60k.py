"""TrajScene-60K as released (ModelScope dataset `YanranZhang/TrajScene-60K`), streamed from its archives.

The release is 1,200 archives `<first>_<last>.tar.gz` (`000001_000050.tar.gz`, ...) of 50 samples each. Per
sample: `<id>.mp4` (the source video, 49 frames at 596x336), `<id>.txt` (the caption), `<id>_dt3d_pred.pkl`
(dense 3D tracks of every first-frame pixel on a 384x512 grid: `more4d.data.seed_format`),
`<id>_dt3d_render.mp4` and `<id>_mask_render.mp4` (the tracks rendered from the source camera and its hole mask,
which the authors' 4D-ViSM trains on) and `<id>_mask_render_binary.npy`. A data folder may hold the archives,
folders extracted from them (loose files), or both. Track pickles go through the restricted unpickler only;
units, camera, frame stride and the video-to-grid mapping are converted by `seed_format.seed_clip`.

**Random access.** gzip has none: reaching a member means inflating everything before it. Each archive gets an
index, built once and cached beside it: `<archive>.index.json` (every member's name, offset and size in the
decompressed tar stream, and the archive's gzip status) and `<archive>.gzidx` (`indexed_gzip` seek points every
`SEEK_SPACING` decompressed bytes, each holding its 32 KiB inflate window: about 0.2% of the data). A sample is
then one seek to the nearest point and at most `SEEK_SPACING` bytes inflated beyond its own members. Measured on
2 busy CPU cores with a 384 MB archive of 50 samples (6 members, 9 MB each): a random sample in 0.16 s, against
1.3 s inflating from the start, which costs half an archive on average and so grows with it (tens of seconds a
sample for archives of several GB); building the index took 4.6 s (one inflate pass, 2.4 s, then a walk over the
tar headers by seeks). Each process opens its own readers, so DataLoader workers need no set-up
(the dataset pickles without them), and any sampling order costs the same.

**Integrity.** Building the index inflates the whole archive and checks its gzip CRC: an archive that fails it
is refused whole, since a flipped bit can decode silently before the checksum catches it. A truncated archive
(its gzip size field does not match what inflates) keeps the members that end before the cut: a prefix of a
deflate stream inflates exactly. Samples missing a member, cut off, or with a member that does not decode are
skipped and reported with archive and member, and counted (`TrajScene60K.skip_report`); `strict=True` refuses
them instead. A pickle that names anything but tensors, arrays and containers is always refused
(`UnsafePickleError`).
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import tempfile
import warnings
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from more4d.data.formats import TrajClip
from more4d.data.seed_format import (
    FrameFit,
    UnsafePickleError,
    centre_crop,
    fit_clip,
    map_frames,
    nearest_indices,
    resize_frames,
    safe_loads_pickle,
    seed_clip,
)
from more4d.errors import InputError
from more4d.io import atomic_write

DATASET_ID = "YanranZhang/TrajScene-60K"  # on ModelScope
NUM_ARCHIVES = 1200
SAMPLES_PER_ARCHIVE = 50
RELEASE_FRAMES = 49
TRACK_ASPECT = 3 / 4  # height / width of the released track grid (384 x 512)
SEEK_SPACING = 16 << 20
MAX_OPEN_ARCHIVES = 8  # readers kept open per process
INDEX_FORMAT, INDEX_VERSION = "more4d-trajscene60k-index", 1
# member kinds by file-name suffix, longest first so that "<id>_dt3d_render.mp4" is not taken for "<id>.mp4"
SUFFIXES: dict[str, str] = {"mask_binary": "_mask_render_binary.npy", "mask": "_mask_render.mp4",
                            "render": "_dt3d_render.mp4", "tracks": "_dt3d_pred.pkl", "video": ".mp4",
                            "caption": ".txt"}
REQUIRED = ("tracks", "video", "caption")
_RANGE = re.compile(r"^(\d+)_(\d+)\.tar\.gz$")


class SampleError(InputError):
    """A sample that cannot be read (missing, cut off or undecodable member); skipped unless strict."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where, self.reason = where, reason


@dataclass(frozen=True)
class Member:
    """One file of a sample: `offset` and `size` in the archive's decompressed tar stream (-1 for a loose file,
    whose `name` is then its path)."""

    name: str
    offset: int
    size: int


@dataclass(frozen=True)
class Sample:
    """One sample: its members by kind (`SUFFIXES`) in an archive or a folder of loose files."""

    id: str
    source: str  # the archive, or the folder of loose files
    members: dict[str, Member]


@dataclass(frozen=True)
class Skipped:
    """`samples` samples skipped at `where` (archive or archive:sample) for `reason`."""

    where: str
    reason: str
    samples: int = 1

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class TrajSceneSample:
    """A sample with its released 4D-ViSM pair: `render` `(T, H, W, 3)` uint8 and `hole` `(T, H, W)` bool
    (1 = hole), on the clip's frames and grid; `mask_binary` is the `.npy` as stored (its meaning is not
    stated; the authors' loader reads the mp4 mask), None when the sample has none."""

    clip: TrajClip
    render: torch.Tensor
    hole: torch.Tensor
    mask_binary: np.ndarray | None = None


def member_kind(name: str) -> tuple[str, str] | None:
    """`(sample id, kind)` of a member or file name (kinds: `SUFFIXES`), None for anything else."""
    base = name.rsplit("/", 1)[-1]
    for kind, suffix in SUFFIXES.items():
        if base.endswith(suffix) and len(base) > len(suffix) and not base.startswith("."):
            return base[: -len(suffix)], kind
    return None


def archive_name(number: int) -> str:
    """The file name of archive `number` (1-based): 1 -> `000001_000050.tar.gz`."""
    first = (number - 1) * SAMPLES_PER_ARCHIVE + 1
    return f"{first:06d}_{first + SAMPLES_PER_ARCHIVE - 1:06d}.tar.gz"


def parse_range(text: str) -> tuple[int, int]:
    """`"A-B"` or `"A"` -> archive numbers `(A, B)` within 1..1200 (`--range`)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    first, last = (int(match.group(1)), int(match.group(2) or match.group(1))) if match else (0, 0)
    if not (match and 1 <= first <= last <= NUM_ARCHIVES):
        raise InputError(f"--range expects archive numbers A-B with 1 <= A <= B <= {NUM_ARCHIVES} (e.g. 1-100), "
                         f"got {text!r}")
    return first, last


def _expected_samples(name: str) -> int | None:
    match = _RANGE.match(name)
    return int(match.group(2)) - int(match.group(1)) + 1 if match else None


# -- the index --------------------------------------------------------------------------------------------------

def index_paths(archive: Path, index_dir: Path | None = None) -> tuple[Path, Path]:
    """The archive's member index (json) and seek-point file, beside it or in `index_dir`."""
    folder = Path(index_dir) if index_dir is not None else archive.parent
    return folder / f"{archive.name}.index.json", folder / f"{archive.name}.gzidx"


def cached_index(archive: Path, index_dir: Path | None = None) -> dict[str, Any] | None:
    """The cached index of `archive` if it exists and matches the archive's size and mtime, else None."""
    json_path, seek_path = index_paths(archive, index_dir)
    try:
        index = json.loads(json_path.read_text())
    except (OSError, ValueError):
        return None
    stat = archive.stat()
    current = (isinstance(index, dict) and index.get("format") == INDEX_FORMAT
               and index.get("version") == INDEX_VERSION and index.get("size") == stat.st_size
               and index.get("mtime_ns") == stat.st_mtime_ns)
    return index if current and (index["status"] == "corrupt" or seek_path.is_file()) else None


def build_index(archive: str | os.PathLike, index_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Inflate `archive` once, check it and write its index (module docstring); returns the index."""
    igz = _indexed_gzip()
    archive = Path(archive)
    json_path, seek_path = index_paths(archive, None if index_dir is None else Path(index_dir))
    stat = archive.stat()
    index: dict[str, Any] = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "archive": archive.name,
                             "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "spacing": SEEK_SPACING,
                             "status": "ok", "detail": "", "decoded_bytes": 0, "members": []}
    reader = igz.IndexedGzipFile(str(archive), spacing=SEEK_SPACING, drop_handles=True)
    try:
        try:
            reader.build_full_index()
        except OSError as exc:  # ZranError: CRC mismatch, not gzip, inflate error
            index.update(status="corrupt", detail=f"does not inflate or fails its gzip checksum ({exc})")
        else:
            index["decoded_bytes"] = end = reader.seek(0, io.SEEK_END)
            with open(archive, "rb") as raw:
                raw.seek(-4, io.SEEK_END)
                isize = int.from_bytes(raw.read(4), "little")  # decompressed size mod 2**32, the gzip trailer
            if isize != end % 2**32:
                index.update(status="truncated", detail=f"is truncated: it inflates to {end} bytes and then stops")
            try:
                reader.seek(0)
                with tarfile.open(fileobj=reader, mode="r:") as tar:  # seeks from header to header
                    members, problem = _walk(tar, reader)
                index["members"] = [[m.name, m.offset_data, m.size] for m in members if m.isfile()]
                if problem and index["status"] == "ok":  # tar headers carry checksums: the prefix is sound
                    index.update(status="truncated", detail=f"stops at an unreadable tar header ({problem})")
            except (tarfile.TarError, OSError) as exc:
                if index["status"] == "ok":
                    index.update(status="corrupt", detail=f"is not a readable tar archive ({exc})")
            _write_cache(seek_path, lambda tmp: reader.export_index(str(tmp)))
    finally:
        reader.close()
    _write_cache(json_path, lambda tmp: tmp.write_text(json.dumps(index)))
    return index


def _walk(tar: tarfile.TarFile, stream: Any) -> tuple[list[tarfile.TarInfo], str | None]:
    """The members up to the end, or up to the first unreadable header and what went wrong there."""
    members = []
    while True:
        try:
            member = tar.next()
        except (tarfile.TarError, EOFError, OSError) as exc:
            return members, str(exc) or type(exc).__name__
        if member is None:
            break
        members.append(member)
    # tarfile ends quietly at an invalid header too; a real end is a zero block (or no more data)
    stream.seek(tar.offset)
    if stream.read(tarfile.BLOCKSIZE).strip(b"\0"):
        return members, f"invalid header at byte {tar.offset} of the tar stream"
    return members, None


def _write_cache(path: Path, write: Callable[[Path], Any]) -> None:
    try:
        with atomic_write(path) as tmp:
            write(tmp)
    except PermissionError:
        raise InputError(f"cannot write the TrajScene-60K index {str(path)!r} (read-only folder): pass "
                         "index_dir (`more4d data index DIR --index-dir WRITABLE`)") from None


def build_indexes(archives: list[Path], index_dir: str | os.PathLike | None = None, *, workers: int = 1,
                  progress: bool = True) -> dict[Path, dict[str, Any]]:
    """The index of every archive: cached ones read, the others built (`workers` processes in parallel)."""
    index_dir = None if index_dir is None else Path(index_dir)
    if index_dir is not None:
        index_dir.mkdir(parents=True, exist_ok=True)
    cached = {a: cached_index(a, index_dir) for a in archives}
    out = {a: index for a, index in cached.items() if index is not None}
    todo = [a for a, index in cached.items() if index is None]
    if todo:
        bar = tqdm(total=len(todo), desc="indexing TrajScene-60K archives", unit="archive", disable=not progress)
        if workers > 1 and len(todo) > 1:
            with ProcessPoolExecutor(min(workers, len(todo))) as pool:
                for a, index in zip(todo, pool.map(build_index, todo, [index_dir] * len(todo))):
                    out[a] = index
                    bar.update()
        else:
            for a in todo:
                out[a] = build_index(a, index_dir)
                bar.update()
        bar.close()
    return {a: out[a] for a in archives}


def _archive_samples(archive: Path, index: dict[str, Any]) -> tuple[list[Sample], list[Skipped]]:
    name, expected = archive.name, _expected_samples(archive.name)
    if index["status"] == "corrupt":
        return [], [Skipped(name, f"{index['detail']}: all its samples skipped", expected or 1)]
    groups: dict[str, dict[str, Member]] = defaultdict(dict)
    cut: dict[str, list[str]] = defaultdict(list)
    for member_name, offset, size in index["members"]:
        parsed = member_kind(member_name)
        if parsed is None:
            continue
        sample_id, kind = parsed
        if offset + size > index["decoded_bytes"]:
            cut[sample_id].append(member_name)
            groups.setdefault(sample_id, {})
        else:
            groups[sample_id][kind] = Member(member_name, offset, size)
    samples, skipped = _complete(str(archive), name, groups, cut)
    if index["status"] == "truncated":
        lost = max(0, (expected or 0) - len(groups))
        skipped.append(Skipped(name, f"{index['detail']}: {lost} samples of its range lost past the cut", lost))
    return samples, skipped


def _complete(source: str, where: str, groups: dict[str, dict[str, Member]],
              cut: dict[str, list[str]] | None = None) -> tuple[list[Sample], list[Skipped]]:
    samples, skipped = [], []
    for sample_id in sorted(groups):
        missing = [f"{sample_id}{SUFFIXES[k]}" for k in REQUIRED if k not in groups[sample_id]]
        if cut and cut.get(sample_id):
            skipped.append(Skipped(f"{where}:{sample_id}", f"member {cut[sample_id][0]!r} is cut off by the "
                                                           "truncation"))
        elif missing:
            skipped.append(Skipped(f"{where}:{sample_id}", f"member {missing[0]!r} is missing"))
        else:
            samples.append(Sample(sample_id, source, dict(groups[sample_id])))
    return samples, skipped


def _folder_samples(folder: Path, files: list[Path]) -> tuple[list[Sample], list[Skipped]]:
    groups: dict[str, dict[str, Member]] = defaultdict(dict)
    for path in files:
        sample_id, kind = member_kind(path.name) or ("", "")  # files are those with a member kind
        groups[sample_id][kind] = Member(str(path), -1, path.stat().st_size)
    return _complete(str(folder), folder.name, groups)


def find_sources(root: str | os.PathLike) -> tuple[list[Path], dict[Path, list[Path]]]:
    """The archives (`*.tar.gz`) under `root` and the folders of loose sample files, each sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"TrajScene-60K folder {str(root)!r} is not a folder")
    archives, loose = [], defaultdict(list)
    for path in sorted(root.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(root).parts) or not path.is_file():
            continue  # hidden: ModelScope keeps partial downloads in hidden folders
        if path.name.endswith(".tar.gz"):
            archives.append(path)
        elif member_kind(path.name):
            loose[path.parent].append(path)
    archives.sort(key=lambda p: (p.name, str(p)))
    return archives, dict(sorted(loose.items(), key=lambda kv: (kv[0].name, str(kv[0]))))


# -- reading ----------------------------------------------------------------------------------------------------

def _indexed_gzip() -> Any:
    try:
        import indexed_gzip
    except ImportError:
        raise InputError("reading TrajScene-60K archives needs the indexed_gzip package: "
                         "`pip install indexed-gzip`") from None
    return indexed_gzip


class TrajScene60K(Dataset):
    """TrajScene-60K samples as `TrajClip`s, streamed from the archives (and/or loose files) under `root`.

    Args:
        root: a folder holding `<first>_<last>.tar.gz` archives, folders extracted from them, or both.
        num_frames: frames per clip: the first ones, padded with the last (the authors keep 49).
        size: `(H, W)` of the clips: the track grid is centre-cropped to that aspect and resized
            (`seed_format.fit_clip`); None keeps the grid (384 x 512 in the release).
        grid: the track grid `(H, W)`; None infers it from the pickle's track count and the release's 3:4 aspect.
        frame_fit: how each video maps onto the grid: "auto" (from frame 0 and the tracks' colours), "stretch"
            or "crop".
        strict: raise on the first unreadable sample (and at construction, on any archive problem) instead of
            skipping it.
        index_dir: where archive indexes are cached (default: beside each archive).
        index_workers: processes that build missing indexes in parallel.
        progress: show a progress bar while indexes are built.

    Items are `TrajClip`s (meta: source, archive, sample id, conventions used). `__getitem__` replaces an
    unreadable sample by the next readable one (warned, listed in `clip.meta["skipped"]`); `clip(i)` raises
    `SampleError`; `iter_clips` skips. `skip_report()` gives the count and names.
    """

    def __init__(self, root: str | os.PathLike, *, num_frames: int = RELEASE_FRAMES,
                 size: tuple[int, int] | None = None, grid: tuple[int, int] | None = None,
                 frame_fit: FrameFit = "auto", strict: bool = False, index_dir: str | os.PathLike | None = None,
                 index_workers: int = 1, progress: bool = True) -> None:
        if num_frames < 1:
            raise InputError(f"num_frames must be >= 1, got {num_frames}")
        if frame_fit not in ("auto", "stretch", "crop"):
            raise InputError(f"frame_fit must be auto, stretch or crop, got {frame_fit!r}")
        for name, value in (("size", size), ("grid", grid)):
            if value is not None and (len(value) != 2 or min(value) < 1):
                raise InputError(f"{name} must be (height, width) with positive sides, got {value!r}")
        self.root, self.num_frames, self.frame_fit, self.strict = Path(root), num_frames, frame_fit, strict
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.grid = None if grid is None else (int(grid[0]), int(grid[1]))
        archives, loose = find_sources(root)
        if not archives and not loose:
            raise InputError(f"TrajScene-60K folder {str(root)!r} holds no TrajScene-60K archives (<first>_<last>.tar.gz) or "
                             "sample files (<id>.mp4, <id>.txt, <id>_dt3d_pred.pkl)")
        self.samples: list[Sample] = []
        self.excluded: list[Skipped] = []  # found while indexing
        for archive, index in build_indexes(archives, index_dir, workers=index_workers, progress=progress).items():
            samples, skipped = _archive_samples(archive, index)
            self.samples += samples
            self.excluded += skipped
        for folder, files in loose.items():
            samples, skipped = _folder_samples(folder, files)
            self.samples += samples
            self.excluded += skipped
        if strict and self.excluded:
            raise SampleError(f"TrajScene-60K folder {str(root)!r}", f"{len(self.excluded)} problems (strict): "
                              + "; ".join(map(str, self.excluded[:5])))
        if not self.samples:
            raise InputError(f"TrajScene-60K folder {str(root)!r} holds no readable sample: "
                             + "; ".join(map(str, self.excluded[:5])))
        if self.excluded:
            warnings.warn(f"TrajScene-60K: {sum(p.samples for p in self.excluded)} samples skipped while indexing "
                          f"{str(root)!r}: " + "; ".join(map(str, self.excluded)), stacklevel=2)
        self.index_dir = None if index_dir is None else Path(index_dir)
        self.skipped: list[Skipped] = []  # found while reading, in this process
        self._readers: OrderedDict[str, Any] = OrderedDict()
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.samples)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_readers": OrderedDict()}  # open readers stay in their process

    def __getitem__(self, i: int) -> TrajClip:
        replaced = []
        for k in range(len(self)):
            try:
                clip = self.clip((i + k) % len(self))
            except SampleError as exc:
                if self.strict:
                    raise
                replaced.append(str(self._skip(exc)))
                continue
            clip.meta["skipped"] = replaced
            return clip
        raise InputError(f"TrajScene-60K folder {str(self.root)!r}: no sample could be read ({self.skip_report()})")

    def iter_clips(self, limit: int | None = None) -> Iterator[TrajClip]:
        """Readable clips in order (at most `limit`); unreadable ones are skipped and counted (or raise, strict)."""
        count = 0
        for i in range(len(self)):
            if limit is not None and count >= limit:
                return
            try:
                clip = self.clip(i)
            except SampleError as exc:
                if self.strict:
                    raise
                self._skip(exc)
                continue
            count += 1
            yield clip

    def skip_report(self) -> str:
        """"N samples skipped" with every reason, or "no sample skipped"."""
        problems = self.excluded + self.skipped
        total = sum(p.samples for p in problems)
        if not problems:
            return "no sample skipped"
        return f"{total} samples skipped: " + "; ".join(map(str, problems))

    def _skip(self, exc: SampleError) -> Skipped:
        skipped = Skipped(exc.where, exc.reason)
        self.skipped.append(skipped)
        warnings.warn(f"TrajScene-60K: skipping {skipped} ({len(self.skipped)} skipped while reading so far)",
                      stacklevel=3)
        return skipped

    def clip(self, i: int) -> TrajClip:
        """Sample i as a `TrajClip` (conventions: `seed_format.seed_clip`); raises `SampleError` if unreadable."""
        clip, _ = self._read(i, renders=False)
        return clip

    def sample(self, i: int) -> TrajSceneSample:
        """Sample i with its released 4D-ViSM render and hole mask; raises `SampleError` if unreadable."""
        clip, (render, hole, binary) = self._read(i, renders=True)
        return TrajSceneSample(clip, render, hole, binary)

    def _read(self, i: int, renders: bool) -> tuple[TrajClip, tuple[Any, ...]]:
        """The clip and, with `renders`, (render, hole, mask_binary), fitted to `size`."""
        sample = self.samples[i]
        archive = Path(sample.source).name
        where = f"{archive}:{sample.id}"
        kinds = [*REQUIRED, *(k for k in ("render", "mask", "mask_binary") if renders and k in sample.members)]
        for kind in ("render", "mask") if renders else ():
            if kind not in sample.members:
                raise SampleError(where, f"member {sample.id + SUFFIXES[kind]!r} is missing")
        data = self._read_members(sample, kinds, where)

        def label(kind: str) -> str:
            return f"{archive!r} member {Path(sample.members[kind].name).name!r}"

        try:
            tracks = safe_loads_pickle(data["tracks"], label("tracks"))
            frames, fps = _decode_video(data["video"], label("video"))
            caption = " ".join(data["caption"].decode("utf-8", errors="replace").split())
            grid = self.grid or _grid(tracks, label("tracks"))
            clip = seed_clip(tracks, frames, label=label("tracks"), height=grid[0], width=grid[1], caption=caption,
                             fps=fps, num_frames=self.num_frames, frame_fit=self.frame_fit,
                             meta={"source": "trajscene60k", "archive": archive, "id": sample.id})
            extra: tuple[Any, ...] = ()
            if renders:
                render, hole = self._render_pair(data, clip, grid, label)
                binary = _load_npy(data["mask_binary"], label("mask_binary")) if "mask_binary" in data else None
                extra = (render, hole, binary)
        except (UnsafePickleError, SampleError):
            raise
        except InputError as exc:
            raise SampleError(where, str(exc)) from exc
        if self.size is None:
            return clip, extra
        box = centre_crop((clip.height, clip.width), self.size)
        if extra:
            render, hole, binary = extra
            render = resize_frames(render.permute(0, 3, 1, 2), box, self.size).permute(0, 2, 3, 1).contiguous()
            hole = hole.flatten(1)[:, nearest_indices(box, self.size, clip.width)].view(-1, *self.size)
            extra = (render, hole, binary)
        return fit_clip(clip, self.size), extra

    def _render_pair(self, data: dict[str, bytes], clip: TrajClip, grid: tuple[int, int],
                     label: Callable[[str], str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The released render and hole mask on the clip's frames and grid (both at the track grid, as the
        authors render them; a mask pixel is a hole when a channel exceeds 127, robust to the mp4's coding)."""
        T_tracks = int(clip.meta["track_frames"])
        idx = torch.arange(self.num_frames).clamp(max=T_tracks - 1)
        out = []
        for kind in ("render", "mask"):
            frames, _ = _decode_video(data[kind], label(kind))
            mapped, _ = map_frames(frames, T_tracks, *grid, fit="stretch", label=label(kind))
            out.append(mapped[idx])
        return out[0], (out[1] > 127).any(dim=-1)

    def _read_members(self, sample: Sample, kinds: list[str], where: str) -> dict[str, bytes]:
        members = {k: sample.members[k] for k in kinds}
        if all(m.offset < 0 for m in members.values()):
            out = {}
            for kind, m in members.items():
                try:
                    out[kind] = Path(m.name).read_bytes()
                except OSError as exc:
                    raise SampleError(where, f"member {Path(m.name).name!r} cannot be read ({exc})") from exc
            return out
        return self._read_archive(sample.source, members, where)

    def _read_archive(self, archive: str, members: dict[str, Member], where: str) -> dict[str, bytes]:
        """The members' bytes, reading runs of adjacent members with one seek each."""
        reader = self._reader(archive)
        order = sorted(members, key=lambda k: members[k].offset)
        out: dict[str, bytes] = {}
        start = 0
        while start < len(order):
            end = start + 1  # extend the run while the next member starts within 1 MiB (tar headers, padding)
            while end < len(order) and members[order[end]].offset - _end(members[order[end - 1]]) < 1 << 20:
                end += 1
            first, last = members[order[start]], members[order[end - 1]]
            try:
                reader.seek(first.offset)
                buffer = reader.read(_end(last) - first.offset)
            except (OSError, ValueError) as exc:
                raise SampleError(where, f"member {first.name!r} cannot be read ({exc})") from exc
            for kind in order[start:end]:
                m = members[kind]
                out[kind] = buffer[m.offset - first.offset:_end(m) - first.offset]
                if len(out[kind]) != m.size:
                    raise SampleError(where, f"member {m.name!r} is cut off ({len(out[kind])} of {m.size} bytes)")
            start = end
        return out

    def _reader(self, archive: str) -> Any:
        if self._pid != os.getpid():  # a forked DataLoader worker: open its own readers
            self._readers, self._pid = OrderedDict(), os.getpid()
        if archive in self._readers:
            self._readers.move_to_end(archive)
            return self._readers[archive]
        seek_path = index_paths(Path(archive), self.index_dir)[1]
        reader = _indexed_gzip().IndexedGzipFile(archive, index_file=str(seek_path), drop_handles=True)
        self._readers[archive] = reader
        if len(self._readers) > MAX_OPEN_ARCHIVES:
            self._readers.popitem(last=False)[1].close()
        return reader


def _end(member: Member) -> int:
    return member.offset + member.size


def _grid(tracks: Any, label: str) -> tuple[int, int]:
    """The track grid from the pickle's track count and the release's 3:4 aspect."""
    coords = tracks.get("coords") if isinstance(tracks, dict) else None
    n = int(coords.shape[-2]) if hasattr(coords, "shape") and len(coords.shape) >= 2 else 0
    height = round((n * TRACK_ASPECT) ** 0.5)
    width = round(height / TRACK_ASPECT)
    if n == 0 or height * width != n:
        raise InputError(f"track pickle {label}: {n} tracks do not form a 3:4 grid; pass grid=(height, width)")
    return height, width


def _decode_video(data: bytes, label: str) -> tuple[np.ndarray, float]:
    import imageio.v3 as iio

    with tempfile.NamedTemporaryFile(suffix=".mp4") as tmp:  # ffmpeg reads files, not bytes
        tmp.write(data)
        tmp.flush()
        try:
            with iio.imopen(tmp.name, "r", extension=".mp4") as video:  # one ffmpeg process for both
                meta = video.metadata()
                frames = video.read()
        except Exception as exc:  # imageio raises many types for corrupt data
            raise InputError(f"video {label} could not be decoded: {str(exc).splitlines()[0]}") from exc
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise InputError(f"video {label} has no frames")
    return np.ascontiguousarray(frames[..., :3]), float(meta.get("fps", 8.0))


def _load_npy(data: bytes, label: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{label} is not a readable .npy array: {exc}") from exc


# -- download ---------------------------------------------------------------------------------------------------

def download(dir: str | os.PathLike, archives: tuple[int, int] = (1, NUM_ARCHIVES), *, revision: str | None = None,
             log: Callable[[str], None] = print) -> Path:
    """Download archives `archives = (first, last)` (1-based, inclusive) of TrajScene-60K from ModelScope
    into `dir`; finished files are kept, so the same call continues an interrupted download.

    Raises:
        InputError: the modelscope package is missing, `dir` is not writable, or the download fails.
    """
    first, last = archives
    if not 1 <= first <= last <= NUM_ARCHIVES:
        raise InputError(f"archives must satisfy 1 <= first <= last <= {NUM_ARCHIVES}, got {archives}")
    root = Path(dir).expanduser().absolute()
    existing = next(p for p in (root, *root.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"--dir {str(dir)!r} is not a writable folder")
    try:
        from modelscope import snapshot_download
    except ImportError:
        raise InputError(f"downloading TrajScene-60K needs ModelScope's client (the dataset is on ModelScope only): "
                         f"`pip install modelscope`, or fetch {DATASET_ID} elsewhere and pass its folder") from None
    # archives may sit in a subfolder of the dataset repo: match the name anywhere
    patterns = [f"*{archive_name(k)}" for k in range(first, last + 1)]
    log(f"TrajScene-60K archives {first}-{last} ({last - first + 1} x {SAMPLES_PER_ARCHIVE} samples) from "
        f"ModelScope {DATASET_ID} -> {root}")
    pinned = {"revision": revision} if revision else {}  # ModelScope's default revision differs between versions
    try:
        folder = snapshot_download(repo_id=DATASET_ID, repo_type="dataset", allow_patterns=patterns,
                                   local_dir=str(root), **pinned)
    except OSError as exc:  # network (requests' errors are OSErrors), disk full
        raise InputError(f"downloading {DATASET_ID} failed ({' '.join(str(exc).split())}); run the same command "
                         "again to continue: finished files are kept") from exc
    log(f"TrajScene-60K -> {folder}")
    return Path(folder)

