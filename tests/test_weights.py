"""Weight presets: folder validation (each missing file named), device/dtype requests, random tiny weights."""

from __future__ import annotations

import pytest
import torch

from more4d.errors import InputError
from more4d.weights import (
    PRESETS,
    check_weights,
    get_preset,
    load_components,
    resolve_device,
    resolve_dtype,
    save_random_tiny,
)

TINY_FOLDERS = ("vae", "motion_vae", "text_encoder", "tokenizer", "depth", "strag/transformer",
                "strag/motion_encoder", "vism/transformer", "vism/image_encoder")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_random_tiny(tmp_path_factory.mktemp("tiny"), seed=0)


def test_unknown_preset_and_14b_needs_folder():
    with pytest.raises(InputError, match="unknown model preset"):
        get_preset("wan2.2")
    with pytest.raises(InputError, match="--weights"):
        check_weights("wan2.1-14b")


@pytest.mark.parametrize("preset", sorted(p for p in PRESETS if not PRESETS[p].released))
def test_missing_files_are_each_listed(preset, tmp_path):
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text("{}")
    with pytest.raises(InputError) as err:
        check_weights(preset, tmp_path)
    msg = str(err.value)
    assert "\n  vae/diffusion_pytorch_model.safetensors" in msg and "\n  vae/config.json" not in msg
    assert "strag/transformer/config.json" in msg and "text_encoder/config.json" in msg
    assert ("depth/" in msg) == (preset == "tiny")  # UniDepth is optional at 14B (users may pass depth)
    with pytest.raises(InputError, match="does not exist"):
        check_weights(preset, tmp_path / "nope")


def test_released_layout_missing_files_name_the_download_command(tmp_path):
    (tmp_path / "MoGe4D" / "4D-STraG").mkdir(parents=True)
    with pytest.raises(InputError) as err:
        check_weights("moge4d", tmp_path)
    msg = str(err.value)
    assert f"run `more4d weights download --dir {tmp_path}`" in msg
    for name in ("MoGe4D/4D-STraG/diffusion_pytorch_model.safetensors", "MoGe4D/VAE/vae/pytorch_model.bin",
                 "Wan2.1-Fun-V1.1-14B-Control/Wan2.1_VAE.pth", "Wan2.1-Fun-V1.1-14B-InP/config.json"):
        assert f"\n  {name}" in msg
    assert "unidepth" not in msg  # optional: users may pass depth


def test_device_and_dtype_requests():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    for bad in ("tpu", "gpu0", 3.5):
        with pytest.raises(InputError, match="device"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(InputError, match="float16 is not supported on CPU"):
        resolve_dtype("fp16", torch.device("cpu"))
    for bad in ("int8", torch.int32):
        with pytest.raises(InputError, match="dtype"):
            resolve_dtype(bad, torch.device("cpu"))


def test_random_tiny_layout_budget_and_roundtrip(tiny_dir):
    for sub in TINY_FOLDERS:
        assert (tiny_dir / sub).is_dir(), sub
    size = sum(p.stat().st_size for p in tiny_dir.rglob("*.safetensors"))
    assert size <= 32 * 2**20, f"tiny weights are {size / 2**20:.1f} MiB (budget 32)"
    assert check_weights("tiny", tiny_dir) == tiny_dir
    comps = load_components("tiny", tiny_dir, only=("depth", "transformer"))
    assert set(comps) == {"depth", "transformer"}
    assert comps["transformer"].dtype == torch.float32 and not comps["transformer"].training
    again = load_components("tiny", tiny_dir, only=("depth",))["depth"]
    image = torch.rand(20, 28, 3)
    torch.testing.assert_close(comps["depth"](image).depth, again(image).depth)
    with pytest.raises(InputError, match="float16"):
        load_components("tiny", tiny_dir, dtype="float16", only=("depth",))


def test_seeded_weights_are_reproducible(tiny_dir, tmp_path):
    from safetensors.torch import load_file

    other = save_random_tiny(tmp_path / "again", seed=0)
    for sub in ("strag/transformer", "depth"):
        a = load_file(next((tiny_dir / sub).glob("*.safetensors")))
        b = load_file(next((other / sub).glob("*.safetensors")))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_status_file_flags_untrained_components(tiny_dir, caplog):
    import json
    import logging

    from more4d.weights.presets import STATUS_FILE, flagged_components

    assert flagged_components(tiny_dir) == []
    status = {"untrained": ["depth"], "below_bar": ["vae"], "report": "README.md"}
    (tiny_dir / STATUS_FILE).write_text(json.dumps(status))
    try:
        with caplog.at_level(logging.WARNING, logger="more4d.weights.presets"):
            load_components("tiny", tiny_dir, only=["tokenizer"])
            assert "untrained" not in caplog.text  # only the components actually loaded are reported
            load_components("tiny", tiny_dir, only=["depth"])
            assert "untrained placeholders" in caplog.text and "depth" in caplog.text
            assert "below their quality bar" not in caplog.text
            load_components("tiny", tiny_dir, only=["vae"])
        assert "below their quality bar: vae" in caplog.text
    finally:
        (tiny_dir / STATUS_FILE).unlink()
