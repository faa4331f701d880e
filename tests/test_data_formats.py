"""Clip layout round trip, atomic writes, corrupt files, the seed's pickles (restricted unpickler), the index."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from more4d.data import SynthConfig, formats, generate_clips, read_clip, write_clip
from more4d.data.index import IndexEntry, read_index, split_for, write_index
from more4d.data.seed_format import read_seed_clip, safe_load_pickle
from more4d.errors import InputError


@pytest.fixture(scope="module")
def clip():
    return generate_clips([7], SynthConfig(num_frames=5, height=32, width=48, novel_views=2))[0]


def test_round_trip(tmp_path, clip):
    write_clip(clip, tmp_path / "c")
    back = read_clip(tmp_path / "c")
    assert torch.equal(back.points, clip.points) and torch.equal(back.visibility, clip.visibility)
    assert torch.equal(back.depth, clip.depth) and torch.allclose(back.K, clip.K)
    assert back.caption == clip.caption and back.meta["seed"] == 7 and back.meta["objects"] == clip.meta["objects"]
    assert (back.frames.float() - clip.frames.float()).abs().mean() < 6  # H.264
    assert len(back.novel) == 2 and torch.allclose(back.novel[1].c2w, clip.novel[1].c2w)
    assert read_clip(tmp_path / "c", novel=False, depth=False).depth is None
    with pytest.raises(InputError, match="already exists"):
        write_clip(clip, tmp_path / "c")
    write_clip(clip, tmp_path / "c", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_failed_write_leaves_nothing(tmp_path, clip, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", boom)
    with pytest.raises(RuntimeError):
        write_clip(clip, tmp_path / "c")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("field,value", [("points", float("nan")), ("points", float("inf"))])
def test_bad_values_rejected(tmp_path, clip, field, value):
    bad = formats.TrajClip(**{**clip.__dict__, field: clip.points.clone().fill_(value)})
    with pytest.raises(InputError, match="NaN"):
        write_clip(bad, tmp_path / "c")
    short = formats.TrajClip(**{**clip.__dict__, "points": clip.points[:3]})
    with pytest.raises(InputError, match="shape"):
        short.validate()
    assert list(tmp_path.iterdir()) == []


def test_corrupt_files(tmp_path, clip):
    for name, damage in (("tracks.safetensors", lambda b: b[: len(b) // 3]), ("video.mp4", lambda b: b[:200]),
                         ("meta.json", lambda b: b"{not json")):
        target = tmp_path / name.replace(".", "_")
        write_clip(clip, target)
        path = target / name
        path.write_bytes(damage(path.read_bytes()))
        with pytest.raises(InputError):
            read_clip(target)
    with pytest.raises(InputError, match="not a more4d clip"):
        read_clip(tmp_path)


def _seed_dict(T=3, H=4, W=6, lib=torch):
    rand = torch.rand if lib is torch else np.random.rand
    return {"coords": rand(1, T, H * W, 3) + 1, "colors": rand(H * W, 3) * 255, "vis": rand(T, H * W) > 0.2}


def test_seed_pickles(tmp_path):
    pickle.dump(_seed_dict(), open(tmp_path / "a.pkl", "wb"))
    clip = read_seed_clip(tmp_path / "a.pkl", caption="x", height=4, width=6, num_frames=5)
    assert clip.points.shape == (5, 24, 3) and clip.colors.max() <= 1 and clip.K[0, 0] == pytest.approx(24 / 23 * 6)
    pickle.dump(_seed_dict(lib=np), open(tmp_path / "b.pkl", "wb"))
    assert read_seed_clip(tmp_path / "b.pkl", height=4, width=6).visibility.shape == (3, 24)
    torch.save(_seed_dict(), tmp_path / "c.pkl")
    assert read_seed_clip(tmp_path / "c.pkl", height=4, width=6).num_frames == 3


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_and_bad_pickles(tmp_path):
    marker = tmp_path / "pwned"
    pickle.dump({"coords": _Evil(marker), "colors": torch.rand(24, 3)}, open(tmp_path / "evil.pkl", "wb"))
    with pytest.raises(InputError, match="system"):
        safe_load_pickle(tmp_path / "evil.pkl")
    assert not marker.exists()
    pickle.dump({"coords": eval}, open(tmp_path / "eval.pkl", "wb"))
    pickle.dump({"coords": IndexEntry("a", "", "", 1, 1, 1)}, open(tmp_path / "obj.pkl", "wb"))
    good = pickle.dumps(_seed_dict())
    (tmp_path / "trunc.pkl").write_bytes(good[: len(good) // 2])
    nan = _seed_dict()
    nan["coords"][0, 1, 3] = float("nan")
    pickle.dump(nan, open(tmp_path / "nan.pkl", "wb"))
    for name in ("eval", "obj", "trunc", "nan", "missing"):
        with pytest.raises(InputError):
            read_seed_clip(tmp_path / f"{name}.pkl", height=4, width=6)
    with pytest.raises(InputError, match="coords must be"):
        read_seed_clip(_dump(tmp_path, _seed_dict(H=5)), height=4, width=6)


def _dump(folder, obj):
    path = folder / "x.pkl"
    pickle.dump(obj, open(path, "wb"))
    return path


def test_index_and_splits(tmp_path):
    assert split_for("abc") == split_for("abc")
    splits = [split_for(f"clip{i}", 0.1, 0.1) for i in range(2000)]
    assert 0.07 < splits.count("val") / 2000 < 0.13 and 0.07 < splits.count("test") / 2000 < 0.13
    entries = [IndexEntry(f"c{i}", "cap", f"c{i}", 5, 32, 48, split_for(f"c{i}")) for i in range(5)]
    write_index(entries, tmp_path / "index.jsonl")
    back = read_index(tmp_path)
    assert [e.id for e in back] == [e.id for e in entries] and back[0].path == str(tmp_path / "c0")
    assert all(e.split == "train" for e in read_index(tmp_path, "train"))
    (tmp_path / "index.jsonl").write_text('{"id": 1}\n')
    with pytest.raises(InputError, match="line 1"):
        read_index(tmp_path)
    with pytest.raises(InputError):
        split_for("a", 0.8, 0.8)
