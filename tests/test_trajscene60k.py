"""TrajScene-60K as released, on tiny archives in its layout: streaming, the cached index, DataLoader workers,
refused pickles, truncated / corrupt / incomplete samples, the unit round trip, the download helper, a training
script and `more4d eval --data` reading it."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import pickle
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import more4d.data.trajscene60k as ts
from more4d.cli import main
from more4d.data.seed_format import SEED_FX, SEED_FY, UnsafePickleError, map_frames
from more4d.data.trajscene60k import DATASET_ID, SampleError, TrajScene60K, parse_range
from more4d.errors import InputError
from more4d.geometry import denormalize_motion, motion_alphas, normalize_motion
from more4d.io import write_video
from more4d.testing import make_test_scene

T, H, W = 5, 24, 32  # the release: 49 frames, a 384 x 512 track grid
VIDEO_HW = (34, 60)  # the release's 596 x 336 (16:9) at a tenth


def _encode(frames: torch.Tensor, tmp: Path) -> bytes:
    write_video(tmp, frames, fps=12.0)
    return tmp.read_bytes()


def sample_files(sample_id: str, seed: int, tmp: Path, *, flip_y: bool = False) -> dict[str, bytes]:
    """One sample in the released layout: video stretched to 16:9, caption, track pickle, render, masks."""
    scene = make_test_scene(T, H, W, seed)
    image = (scene.colors.view(H, W, 3) * 255).round().to(torch.uint8)
    grid = image[None].expand(T, -1, -1, -1)
    video = torch.nn.functional.interpolate(grid.permute(0, 3, 1, 2).float(), size=VIDEO_HW, mode="bilinear",
                                            antialias=True).round().clamp(0, 255).to(torch.uint8)
    coords = scene.points.clone()
    if flip_y:
        coords[..., 1] = -coords[..., 1]
    hole = torch.zeros(T, H, W, dtype=torch.bool)
    hole[:, :, : 4 + seed] = True
    npy = io.BytesIO()
    np.save(npy, hole.numpy())
    return {f"{sample_id}.mp4": _encode(video.permute(0, 2, 3, 1), tmp),
            f"{sample_id}.txt": b"a red ball moves\nin front of a wall\n",
            f"{sample_id}_dt3d_pred.pkl": pickle.dumps({"coords": coords[None], "colors": scene.colors * 255,
                                                        "vis": scene.visibility}),
            f"{sample_id}_dt3d_render.mp4": _encode(grid, tmp),
            f"{sample_id}_mask_render.mp4": _encode((hole[..., None] * 255).expand(-1, -1, -1, 3).to(torch.uint8), tmp),
            f"{sample_id}_mask_render_binary.npy": npy.getvalue()}


def write_archive(path: Path, files: dict[str, bytes], prefix: str = "") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    tmp = tmp_path_factory.mktemp("mp4") / "x.mp4"
    return {f"{i:06d}": sample_files(f"{i:06d}", i, tmp) for i in range(1, 6)}


@pytest.fixture(scope="module")
def release(tmp_path_factory, files) -> Path:
    """Archive `000001_000003.tar.gz` (3 samples, members under a folder) and an extracted range folder."""
    root = tmp_path_factory.mktemp("trajscene60k")
    write_archive(root / "000001_000003.tar.gz", {k: v for i in ("000001", "000002", "000003") for k, v in files[i].items()},
                  prefix="000001_000003/")
    (root / "000004_000004").mkdir()
    for name, data in files["000004"].items():
        (root / "000004_000004" / name).write_bytes(data)
    TrajScene60K(root, num_frames=T, progress=False)  # builds the index
    return root


def test_streams_samples_with_the_authors_conventions(release):
    ds = TrajScene60K(release, num_frames=T, progress=False)
    assert len(ds) == 4 and ds.skip_report() == "no sample skipped"
    assert [s.id for s in ds.samples] == ["000001", "000002", "000003", "000004"]
    for i, clip in enumerate(ds.iter_clips()):
        scene = make_test_scene(T, H, W, i + 1)
        assert clip.frames.shape == (T, H, W, 3) and clip.caption == "a red ball moves in front of a wall"
        assert torch.equal(clip.points, scene.points) and torch.equal(clip.visibility, scene.visibility)
        assert torch.allclose(clip.K, scene.K, atol=1e-4)  # fitted to the frame-0 points
        assert clip.meta["frame_fit"] == "stretch" and clip.meta["frame_stride"] == 1 and clip.fps == 12.0
        assert (clip.frames[0].float() / 255 - clip.colors.view(H, W, 3)).abs().mean() < 0.05
    sample = ds.sample(1)
    assert sample.render.shape == (T, H, W, 3) and torch.equal(sample.hole, torch.from_numpy(sample.mask_binary))
    # 49-frame style padding and a square training size: crop to 24 x 24, resize to 16 x 16, K follows
    fitted = TrajScene60K(release, num_frames=7, size=(16, 16), progress=False)
    clip, sample = fitted.clip(0), fitted.sample(0)
    assert clip.frames.shape == (7, 16, 16, 3) and torch.equal(clip.points[5], clip.points[4])
    assert sample.render.shape == (7, 16, 16, 3) and sample.hole.shape == (7, 16, 16)
    uv = clip.points[0] @ clip.K.T
    centres = torch.stack(torch.meshgrid(torch.arange(16) + 0.5, torch.arange(16) + 0.5, indexing="xy"), -1)
    assert (uv[:, :2] / uv[:, 2:] - centres.reshape(-1, 2)).abs().max() < 0.5 * 24 / 16 + 1e-4


def test_index_is_built_once_and_rebuilt_when_the_archive_changes(release, monkeypatch):
    archive = release / "000001_000003.tar.gz"
    index = json.loads((release / "000001_000003.tar.gz.index.json").read_text())
    assert index["status"] == "ok" and (release / "000001_000003.tar.gz.gzidx").is_file()
    assert [m[0] for m in index["members"]][:2] == ["000001_000003/000001.mp4", "000001_000003/000001.txt"]
    built = []
    monkeypatch.setattr(ts, "build_index", lambda *a: built.append(a) or pytest.fail("rescanned"))
    assert len(TrajScene60K(release, num_frames=T, progress=False)) == 4 and not built
    monkeypatch.undo()
    stat = archive.stat()
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert ts.cached_index(archive) is None  # a changed archive is indexed again
    assert len(TrajScene60K(release, num_frames=T, progress=False)) == 4 and ts.cached_index(archive) is not None


def test_dataloader_workers_read_their_own_streams(release):
    ds = TrajScene60K(release, num_frames=T, progress=False)
    ds.clip(0)  # a reader opened in this process must not leak into the workers
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=list)
    clips = [clip for batch in loader for clip in batch]
    assert [c.meta["id"] for c in clips] == ["000001", "000002", "000003", "000004"]
    assert all(torch.equal(c.points, ds.clip(i).points) for i, c in enumerate(clips))


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Custom:
    pass


@pytest.mark.parametrize("payload", ["os.system", "custom class"])
def test_a_pickle_naming_anything_else_is_refused_with_archive_and_member(tmp_path, files, payload):
    marker = tmp_path / "pwned"
    bad = dict(files["000001"])
    bad["000001_dt3d_pred.pkl"] = pickle.dumps({"coords": _Evil(marker) if payload == "os.system" else _Custom(),
                                                "colors": torch.zeros(H * W, 3)})
    write_archive(tmp_path / "000001_000001.tar.gz", bad)
    ds = TrajScene60K(tmp_path, num_frames=T, progress=False)
    for read in (ds.clip, ds.__getitem__, lambda i: next(ds.iter_clips())):  # refused, never skipped
        with pytest.raises(UnsafePickleError, match=r"000001_000001\.tar\.gz.*000001_dt3d_pred\.pkl.*refers to"):
            read(0)
    assert not marker.exists()


@pytest.fixture
def damaged(tmp_path, files) -> Path:
    """Archive 1: sample 2 lacks its caption, sample 3's mp4 is garbage, sample 4's pickle is cut short.
    Archive 2 (5 samples by its name) is truncated inside sample 7. Archive 3 fails its gzip checksum."""
    one = {k: v for i in ("000001", "000002", "000003", "000004") for k, v in files[i].items()}
    del one["000002.txt"]
    one["000003.mp4"] = b"\x00\x00\x00\x18ftypmp42 not a video"
    one["000004_dt3d_pred.pkl"] = one["000004_dt3d_pred.pkl"][:200]
    write_archive(tmp_path / "000001_000004.tar.gz", one)
    two = {k.replace(i, f"0001{i[-2:]}"): v for i in ("000001", "000002", "000003") for k, v in files[i].items()}
    full = write_archive(tmp_path / "full.tar.gz", two).read_bytes()
    (tmp_path / "full.tar.gz").unlink()
    (tmp_path / "000101_000105.tar.gz").write_bytes(full[: int(len(full) * 0.8)])
    three = bytearray(write_archive(tmp_path / "000201_000201.tar.gz", files["000005"]).read_bytes())
    three[len(three) // 2] ^= 0x40
    (tmp_path / "000201_000201.tar.gz").write_bytes(bytes(three))
    return tmp_path


def test_damaged_samples_are_skipped_by_name_and_counted_or_refused_with_strict(damaged):
    with pytest.warns(UserWarning, match="5 samples skipped while indexing"):  # 000002, 000103, 2 lost, archive 3
        ds = TrajScene60K(damaged, num_frames=T, index_workers=2, progress=False)  # 3 archives, 2 processes
    assert [s.id for s in ds.samples] == ["000001", "000003", "000004", "000101", "000102"]
    with pytest.warns(UserWarning, match="skipping"):
        ids = [clip.meta["id"] for clip in ds.iter_clips()]
    assert ids == ["000001", "000101", "000102"]
    report = ds.skip_report()
    index = json.loads((damaged / "000101_000105.tar.gz.index.json").read_text())
    assert index["status"] == "truncated"
    lost = 5 - 3  # samples 000104, 000105 were never reached; 000103 is cut off
    assert report.startswith(f"{3 + 1 + lost + 1} samples skipped")  # archive 1, 000103, lost, archive 3
    for part in ("000001_000004.tar.gz:000002: member '000002.txt' is missing",
                 "000001_000004.tar.gz:000003: video '000001_000004.tar.gz' member '000003.mp4' could not be decoded",
                 "000001_000004.tar.gz:000004: track pickle '000001_000004.tar.gz' member '000004_dt3d_pred.pkl' is "
                 "corrupt", "000101_000105.tar.gz:000103: member '000103", "is cut off by the truncation",
                 f"{lost} samples of its range lost past the cut", "000201_000201.tar.gz: does not inflate or fails "
                 "its gzip checksum"):
        assert part in report, part
    with pytest.warns(UserWarning):
        clip = ds[1]  # an unreadable sample is replaced by the next readable one, and says so
    assert clip.meta["id"] == "000101" and len(clip.meta["skipped"]) == 2
    with pytest.raises(SampleError, match="000002.txt' is missing"):
        TrajScene60K(damaged, num_frames=T, strict=True, progress=False)


def test_a_damaged_tar_header_keeps_the_members_before_it(tmp_path, files):
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as out:
        for name in ("000001.txt", "000002.txt", "000003.txt"):
            info = tarfile.TarInfo(name)
            info.size = 600
            out.addfile(info, io.BytesIO(b"a" * 600))
    raw = bytearray(tar.getvalue())
    raw[512 + 1024 + 10] ^= 0xFF  # the second header (tarfile alone would stop there quietly)
    (tmp_path / "000001_000003.tar.gz").write_bytes(gzip.compress(bytes(raw)))
    index = ts.build_index(tmp_path / "000001_000003.tar.gz")
    assert index["status"] == "truncated" and "invalid header at byte 1536" in index["detail"]
    assert [m[0] for m in index["members"]] == ["000001.txt"]


def test_strict_refuses_a_sample_that_fails_when_read(tmp_path, files):
    write_archive(tmp_path / "000001_000001.tar.gz", {**files["000001"], "000001.mp4": b"not a video"})
    ds = TrajScene60K(tmp_path, num_frames=T, strict=True, progress=False)  # the index finds nothing wrong
    with pytest.raises(SampleError, match="000001.mp4"):
        ds[0]


def test_units_round_trip_through_the_normalisation(release, tmp_path):
    ds = TrajScene60K(release, num_frames=T, progress=False)
    coords = make_test_scene(T, H, W, 2).points  # as pickled for sample 000002
    clip = ds.clip(1)
    # the authors' normalize_track_z on the raw coordinates == more4d's normalisation of the converted clip
    d = coords - coords[:1]
    z0 = coords[:1, :, 2:3]
    authors = torch.cat([d[..., :1] / (z0 / SEED_FX), d[..., 1:2] / (z0 / SEED_FY), d[..., 2:] / z0], dim=-1)
    alphas = motion_alphas(clip.K, (H, W), seed_compat=True)
    m, valid = normalize_motion(clip.points, alphas)
    assert valid.all() and torch.allclose(m, authors, atol=1e-6)
    assert torch.allclose(denormalize_motion(m, clip.points[0], alphas), coords, atol=1e-5)
    own = motion_alphas(clip.K, (H, W))  # more4d's models take alphas from K: the round trip holds as well
    assert torch.allclose(denormalize_motion(normalize_motion(clip.points, own)[0], clip.points[0], own), coords,
                          atol=1e-5)
    # a y-up pickle is converted to OpenCV's y-down once, with the same K
    write_archive(tmp_path / "000001_000001.tar.gz", sample_files("000001", 1, tmp_path / "x.mp4", flip_y=True))
    flipped = TrajScene60K(tmp_path, num_frames=T, progress=False).clip(0)
    assert flipped.meta["flipped_axes"] == ["y"] and torch.allclose(flipped.points, ds.clip(0).points)
    assert torch.allclose(flipped.K, ds.clip(0).K, atol=1e-4)


def test_video_mapping_is_chosen_from_the_tracks_colours():
    colors = torch.rand(H, W, 3)
    image = (colors * 255).round().to(torch.uint8)
    side = torch.randint(0, 255, (H, 8, 3), dtype=torch.uint8)  # a wider video: the grid is its centre crop
    wide = torch.cat([side, image, side], dim=1)[None].expand(T, -1, -1, -1).numpy()
    frames, info = map_frames(wide, T, H, W, colors.view(-1, 3))
    assert info["frame_fit"] == "crop" and torch.equal(frames[0], image)
    long = np.concatenate([wide] * 3)  # more frames than tracks: the authors' stride 2
    assert map_frames(long, T, H, W, colors.view(-1, 3))[1]["frame_stride"] == 2
    with pytest.raises(InputError, match="not this clip's video"):
        map_frames(255 - wide, T, H, W, colors.view(-1, 3))


def test_download_selects_archives_by_range(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "modelscope", None)
    assert main(["data", "download", "--dir", str(tmp_path), "--range", "1-2"]) == 2
    assert "pip install modelscope" in capsys.readouterr().err
    calls = []
    stand_in = types.ModuleType("modelscope")
    stand_in.snapshot_download = lambda *args, **kwargs: calls.append((args, kwargs)) or kwargs["local_dir"]
    monkeypatch.setitem(sys.modules, "modelscope", stand_in)
    assert main(["data", "download", "--dir", str(tmp_path), "--range", "2-3"]) == 0
    assert calls == [((), {"repo_id": DATASET_ID, "repo_type": "dataset", "local_dir": str(tmp_path),
                           "allow_patterns": ["*000051_000100.tar.gz", "*000101_000150.tar.gz"]})]
    assert parse_range("1200") == (1200, 1200)
    for bad in ("0-3", "5-2", "1-1201", "x"):
        with pytest.raises(InputError, match="--range"):
            parse_range(bad)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    from more4d.weights import save_random_tiny

    return save_random_tiny(tmp_path_factory.mktemp("tiny"), seed=0)


def test_strag_training_reads_the_archives(release, tmp_path, tiny_weights, train_script):
    from accelerate.state import AcceleratorState

    config = Path(__file__).resolve().parents[1] / "train" / "configs" / "tiny_strag.yaml"
    argv = ["--config", str(config), "--output-dir", str(tmp_path / "run"), "--max-steps", "2", "--set",
            "mixed_precision=no", "data.source=trajscene60k", f"data.path={release}", "data.num_frames=5",
            "data.height=32", "data.width=32", "data.batch_size=2", "data.num_workers=1", "num_validation_clips=1",
            "log_steps=1", "validation_steps=2", "checkpointing_steps=2", "lr_warmup_steps=1",
            "val_inference_steps=1", "cache_latents=false", f"init_from={tiny_weights}"]
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        assert train_script("train_strag").main(argv) == 0
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["complete"] and summary["steps"] == 2 and summary["nonfinite"] == 0


def test_eval_on_the_data_prints_the_table(damaged, tiny_weights, capsys, monkeypatch):
    from more4d.weights import presets

    tiny = presets.PRESETS["tiny"]  # the tiny models at 5 x 64 x 64: the same code path, CPU-fast
    monkeypatch.setitem(presets.PRESETS, "tiny", dataclasses.replace(
        tiny, resolution=(64, 64), strag_defaults={**tiny.strag_defaults, "num_frames": 5}))
    argv = ["eval", "--data", str(damaged), "--weights", str(tiny_weights), "--num-clips", "1", "--steps", "1",
            "--vism-steps", "1", "--device", "cpu", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for part in ("1 TrajScene-60K clips from", "end-to-end EPE", "zero-motion", "mean-motion", "GT-motion floor",
                 "a perfect sampler: n/a", "motion VAE recon EPE", "hole PSNR", "whole-frame PSNR", "telea", "pushpull",
                 "samples skipped", "000002.txt' is missing"):
        assert part in out, part
    assert main([*argv, "--strict"]) == 2
    assert "000002.txt' is missing" in capsys.readouterr().err
