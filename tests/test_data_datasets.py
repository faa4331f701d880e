"""Training datasets (Motion VAE, STraG, ViSM) over written clips, aspect buckets, deterministic batches."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from more4d.data import SynthConfig, generate_clips, write_clip
from more4d.data.datasets import BucketBatchSampler, MotionVAEDataset, STraGDataset, ViSMDataset
from more4d.data.index import INDEX_NAME, entry_for_clip, write_index
from more4d.errors import InputError
from more4d.geometry import denormalize_motion, motion_alphas, video_to_motion


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    entries = []
    for size, seeds in (((24, 32), (0, 1, 2)), ((32, 24), (3, 4))):
        config = SynthConfig(num_frames=5, height=size[0], width=size[1], novel_views=1)
        for seed, clip in zip(seeds, generate_clips(seeds, config)):
            write_clip(clip, root / f"c{seed}")
            entries.append(entry_for_clip(root / f"c{seed}", root))
    write_index(entries, root / INDEX_NAME)
    return root


def test_vae_and_strag_items(root):
    vae = MotionVAEDataset(root, split=None)
    item = vae[0]
    assert item["motion"].shape == (3, 5, 24, 32) and item["visibility"].shape == (5, 24, 32)
    assert item["video"].min() >= -1 and item["video"].max() <= 1 and item["valid"].all()
    assert torch.equal(item["motion"][:, 0], torch.zeros(3, 24, 32))
    strag = STraGDataset(root, split=None)
    s = strag[0]
    clip = strag.clip(0)
    m = video_to_motion(s["motion"])
    back = denormalize_motion(m, clip.points[0], motion_alphas(s["K"], (24, 32)))
    assert torch.allclose(back, clip.points, atol=1e-4)
    assert s["image"].shape == (3, 24, 32) and s["depth"].shape == (24, 32) and isinstance(s["caption"], str)


def test_vism_item(root):
    ds = ViSMDataset(root, split=None, view=0)
    item = ds[0]
    assert item["render"].shape == (3, 5, 24, 32) and item["mask"].shape == (5, 24, 32)
    assert item["target"].shape == (3, 5, 24, 32) and item["c2w"].shape == (5, 4, 4)
    assert 0 < item["mask"].mean() < 0.9  # a novel camera reveals holes, most pixels are covered
    source = ViSMDataset(root, split=None, source_prob=1.0)[0]
    assert source["mask"][0].mean() < 0.05  # the source camera at frame 0 sees every point


def test_buckets_and_loader(root):
    ds = MotionVAEDataset(root, split=None)
    sampler = BucketBatchSampler(ds, batch_size=2, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(5)) and len(sampler) == 3
    assert all(len({ds.bucket(i) for i in b}) == 1 for b in batches)
    assert batches == list(BucketBatchSampler(ds, batch_size=2, seed=1))
    loader = DataLoader(ds, batch_sampler=sampler)
    assert {tuple(b["motion"].shape[-2:]) for b in loader} == {(24, 32), (32, 24)}
    assert len(BucketBatchSampler(ds, batch_size=2, drop_last=True)) == 2


def test_bad_index(root, tmp_path):
    with pytest.raises(InputError):
        MotionVAEDataset(tmp_path)
    with pytest.raises(InputError, match="no clips"):
        MotionVAEDataset([], split="train")
    with pytest.raises(InputError):
        MotionVAEDataset(root, split="holdout")
