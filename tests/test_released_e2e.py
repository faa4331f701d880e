"""From `more4d weights download` to `more4d generate` and `more4d render` on the released MoGe4D layout, in tiny
random weights served by a local fake Hugging Face Hub (`more4d.testing_hub`), through the CLI a user runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from huggingface_hub.utils import disable_progress_bars
from PIL import Image
from safetensors.torch import save_file

from more4d.cli import main
from more4d.scene import Scene4D
from more4d.testing_hub import FakeHub, set_hf_offline
from more4d.testing_released import write_released_layout
from more4d.weights.download import RELEASED_REPOS

SMALL = ["--resolution", "64x64", "--frames", "5", "--steps", "2"]


@pytest.fixture(scope="module")
def hub_repos(tmp_path_factory):
    """hf repo id -> folder: the released layout at tiny size, plus files more4d must not download."""
    root = write_released_layout(tmp_path_factory.mktemp("hub"))
    unidepth = root / "unidepth-v2-vitl14"
    unidepth.mkdir()
    (unidepth / "config.json").write_text(json.dumps({"encoder": "vitl14"}))
    save_file({"w": torch.zeros(4)}, unidepth / "model.safetensors")
    (root / "MoGe4D" / "VAE" / "checkpoint-100").mkdir()
    torch.save({"step": torch.tensor(100)}, root / "MoGe4D" / "VAE" / "checkpoint-100" / "optimizer.bin")
    return {repo.hf_repo: root / repo.name for repo in RELEASED_REPOS}


@pytest.fixture
def inputs(tmp_path):
    image, depth = tmp_path / "photo.png", tmp_path / "depth.npy"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((60, 80, 3)) * 255).astype(np.uint8)).save(image)
    np.save(depth, (2.0 + rng.random((60, 80))).astype(np.float32))
    return str(image), str(depth)


def generate_and_render(tmp_path, inputs, weights: list[str]) -> Scene4D:
    image, depth = inputs
    out = tmp_path / "out"
    assert main(["generate", image, "--prompt", "a ball rolls to the left", "--model", "moge4d", *weights,
                 *SMALL, "--depth", depth, "--out", str(out)]) == 0
    scene = Scene4D.load(out / "scene.safetensors")
    assert scene.points.shape == (5, 48 * 80, 3) and torch.isfinite(scene.points).all()  # 64x64 area, 3:4
    assert scene.metadata["seed_compat"] and scene.metadata["num_inference_steps"] == 2
    render = tmp_path / "orbit"
    assert main(["render", str(out / "scene.safetensors"), "--model", "moge4d", *weights, "--preset", "orbit",
                 "--steps", "2", "--out", str(render)]) == 0
    assert all((render / f).stat().st_size > 0 for f in ("final.mp4", "render.mp4", "mask.mp4"))
    return scene


def test_download_to_dir_then_generate_and_render(hub_repos, inputs, tmp_path, monkeypatch, capsys):
    weights = tmp_path / "weights"
    with FakeHub(hub_repos) as hub, disable_progress_bars():
        hub.activate(monkeypatch, hf_home=tmp_path / "hf_home")
        assert main(["weights", "download", "--dir", str(weights)]) == 0
        assert not any("checkpoint-" in r.path for r in hub.gets())
    assert "total from Hugging Face" in capsys.readouterr().out
    generate_and_render(tmp_path, inputs, ["--weights", str(weights)])


def test_download_to_cache_then_generate_without_weights_flag(hub_repos, inputs, tmp_path, monkeypatch):
    with FakeHub(hub_repos) as hub, disable_progress_bars():
        hub.activate(monkeypatch, hf_home=tmp_path / "hf_home")
        assert main(["weights", "download"]) == 0
    set_hf_offline(monkeypatch)  # the Hub is gone: generation reads the cache only
    generate_and_render(tmp_path, inputs, [])


def test_generate_before_download_says_what_to_run(inputs, tmp_path, monkeypatch, capsys):
    image, depth = inputs
    with FakeHub({}) as hub:
        hub.activate(monkeypatch, hf_home=tmp_path / "hf_home")
    set_hf_offline(monkeypatch)
    code = main(["generate", image, "--prompt", "a ball", "--model", "moge4d", *SMALL, "--depth", depth,
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "run `more4d weights download`" in err and "4D-STraG" in err
    assert not (tmp_path / "out").exists()
