"""`more4d weights download|list` against a local fake Hub (`more4d.testing_hub`) serving tiny look-alike repos."""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from huggingface_hub.utils import disable_progress_bars
from safetensors.torch import save_file

from more4d.cli import main
from more4d.errors import InputError
from more4d.testing_hub import FakeHub, set_hf_offline, use_hf_home
from more4d.weights.download import RELEASED_REPOS, download_released, released_folders

# repo name -> (files more4d must download, files it must leave on the Hub), laid out like the real repos
LAYOUT: dict[str, tuple[list[str], list[str]]] = {
    "MoGe4D": ([
        "4D-STraG/diffusion_pytorch_model.safetensors",
        "4D-STraG/config.json",
        "4D-ViSM/lora_diffusion_pytorch_model.safetensors",
        "VAE/encoder_prompt/pytorch_model.bin",
        "VAE/decoder_prompt/pytorch_model.bin",
        "VAE/vae/pytorch_model.bin",
    ], [
        "README.md",
        "VAE/checkpoint-100/optimizer.bin",
        "VAE/checkpoint-100/pytorch_model.bin",
        "4D-ViSM/checkpoint-500/optimizer.bin",
    ]),
    "Wan2.1-Fun-V1.1-14B-Control": ([
        "Wan2.1_VAE.pth",
        "models_t5_umt5-xxl-enc-bf16.pth",
        "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth",
        "google/umt5-xxl/tokenizer.json",
        "google/umt5-xxl/special_tokens_map.json",
    ], [
        "README.md",
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ]),
    "Wan2.1-Fun-V1.1-14B-InP": ([
        "config.json",
        "diffusion_pytorch_model-00001-of-00002.safetensors",
        "diffusion_pytorch_model-00002-of-00002.safetensors",
        "diffusion_pytorch_model.safetensors.index.json",
    ], [
        "README.md",
        "Wan2.1_VAE.pth",
    ]),
    "unidepth-v2-vitl14": (["config.json", "model.safetensors"], ["README.md", "pytorch_model.bin"]),
}
BIG_FILE = ("Wan2.1-Fun-V1.1-14B-InP", "diffusion_pytorch_model-00001-of-00002.safetensors")  # ~400 kB


def _write(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    if path.suffix == ".safetensors":
        numel = 100_000 if path.name == BIG_FILE[1] else 64
        save_file({"weight": torch.randn(numel, generator=gen)}, str(path))
    elif path.suffix in (".bin", ".pth"):
        torch.save({"weight": torch.randn(8, 4, generator=gen)}, path)
    elif path.suffix == ".json":
        path.write_text(json.dumps({"file": path.name, "seed": seed}))
    else:
        path.write_text(f"# {path.name}\n")


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> dict[str, Path]:
    """hf repo id -> a local folder with the tiny look-alike repo."""
    root = tmp_path_factory.mktemp("hub_repos")
    for seed, (name, (wanted, unwanted)) in enumerate(LAYOUT.items()):
        for i, rel in enumerate(wanted + unwanted):
            _write(root / name / rel, 100 * seed + i)
    return {repo.hf_repo: root / repo.name for repo in RELEASED_REPOS}


@pytest.fixture
def hub(layout, tmp_path, monkeypatch):
    """A running fake Hub with huggingface_hub pointed at it and at an empty HF_HOME under tmp_path."""
    with FakeHub(layout) as fake, disable_progress_bars():  # keeps stderr to the error line
        fake.activate(monkeypatch, hf_home=tmp_path / "hf_home")
        yield fake


def _files(folder: Path) -> set[str]:
    """Files under `folder`, without huggingface_hub's `.cache/` bookkeeping."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts}


def _same_bytes(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


def test_download_into_dir_via_cli(hub, layout, tmp_path, capsys):
    out = tmp_path / "weights"
    assert main(["weights", "download", "--dir", str(out)]) == 0
    stdout = capsys.readouterr().out
    for repo in RELEASED_REPOS:
        wanted, _ = LAYOUT[repo.name]
        assert _files(out / repo.name) == set(wanted), repo.name
        assert all(_same_bytes(out / repo.name / f, layout[repo.hf_repo] / f) for f in wanted)
        assert re.search(rf"^{re.escape(repo.name)}: {len(wanted)} files, \d+\.\d GB$", stdout, re.M)
    # sizes come first: the total is printed before the first folder is reported done
    total = sum(len(w) for w, _ in LAYOUT.values())
    assert stdout.index(f"total from Hugging Face: {total} files") < stdout.index(" -> ")
    assert not any("checkpoint-" in r.path or r.path.endswith("README.md") for r in hub.gets())
    assert set(released_folders(out)) == {repo.name for repo in RELEASED_REPOS}


def test_download_to_cache_then_found_offline(hub, layout, monkeypatch):
    folders = download_released(repos=["unidepth-v2-vitl14", "MoGe4D"], log=lambda line: None)
    assert all(str(folder).startswith(constants.HF_HUB_CACHE) for folder in folders.values())
    set_hf_offline(monkeypatch)
    hub.stop()
    found = released_folders(None, repos=["MoGe4D", "unidepth-v2-vitl14"])
    assert found == folders
    assert _files(found["MoGe4D"]) == set(LAYOUT["MoGe4D"][0])
    with pytest.raises(InputError, match=r"not downloaded yet \(Wan2.1-Fun-V1.1-14B-Control, Wan2.1-Fun-V1.1-14B-InP missing.*"
                                          r": run `more4d weights download`"):
        released_folders(None)


def test_dropped_connection_resumes_with_range(hub, layout, tmp_path, monkeypatch):
    # huggingface_hub resumes from its last complete chunk (10 MB); smaller chunks let a tiny file resume
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 4096)
    repo_id, filename = "alibaba-pai/Wan2.1-Fun-V1.1-14B-InP", BIG_FILE[1]
    hub.cut_next_get(repo_id, filename, after_bytes=150_000)
    out = tmp_path / "weights"
    assert main(["weights", "download", "--dir", str(out), "--only", "Wan2.1-Fun-V1.1-14B-InP"]) == 0
    first, second = hub.gets(filename)
    assert first.range is None and re.fullmatch(r"bytes=(\d+)-", second.range)
    assert 0 < int(second.range[6:-1]) <= 150_000
    assert _same_bytes(out / BIG_FILE[0] / filename, layout[repo_id] / filename)


def test_failed_run_continues_on_rerun(hub, layout, tmp_path, capsys):
    out = tmp_path / "weights"
    repo_id, filename = "alibaba-pai/Wan2.1-Fun-V1.1-14B-InP", BIG_FILE[1]
    hub.fail_next_get(repo_id, filename, status=500)
    argv = ["weights", "download", "--dir", str(out), "--only", "Wan2.1-Fun-V1.1-14B-InP"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "run the same command again" in err
    done_before = len(hub.gets())
    assert main(argv) == 0
    assert [r.path.rsplit("/", 1)[-1] for r in hub.gets()[done_before:]] == [filename]  # only the failed file
    assert _files(out / BIG_FILE[0]) == set(LAYOUT[BIG_FILE[0]][0])
    assert _same_bytes(out / BIG_FILE[0] / filename, layout[repo_id] / filename)


def _assert_copy_instructions(err: str) -> None:
    assert err.startswith("more4d weights: error:") and len(err.splitlines()) == 1 and "Traceback" not in err
    for repo in RELEASED_REPOS:
        assert repo.hf_repo in err and all(pattern in err for pattern in repo.allow_patterns)
    assert "`more4d weights download --dir DIR`" in err and "--weights DIR" in err


def test_offline_with_nothing_cached(tmp_path, monkeypatch, capsys):
    use_hf_home(monkeypatch, tmp_path / "hf_home")
    set_hf_offline(monkeypatch)
    assert main(["weights", "download"]) == 2
    err = capsys.readouterr().err.strip()
    _assert_copy_instructions(err)
    assert "HF_HUB_OFFLINE" in err


def test_unreachable_hub(hub, tmp_path, capsys):
    hub.stop()
    assert main(["weights", "download", "--dir", str(tmp_path / "weights")]) == 2
    err = capsys.readouterr().err.strip()
    _assert_copy_instructions(err)
    assert f"cannot reach the Hugging Face Hub at {hub.endpoint}" in err


def test_modelscope_without_package(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "modelscope", None)  # makes `import modelscope` fail even if installed
    assert main(["weights", "download", "--source", "modelscope", "--dir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install modelscope" in err and "--source hf" in err and len(err.splitlines()) == 1


def test_modelscope_source_with_fake_package(hub, layout, tmp_path, monkeypatch, capsys):
    calls = []

    def snapshot_download(model_id: str, *, allow_patterns: list[str], local_dir: str) -> str:
        calls.append((model_id, allow_patterns))
        (Path(local_dir) / "from_modelscope.txt").parent.mkdir(parents=True, exist_ok=True)
        (Path(local_dir) / "from_modelscope.txt").write_text(model_id)
        return local_dir

    monkeypatch.setitem(sys.modules, "modelscope", types.SimpleNamespace(snapshot_download=snapshot_download))
    out = tmp_path / "weights"
    assert main(["weights", "download", "--source", "modelscope", "--dir", str(out)]) == 0
    assert calls == [(r.modelscope_repo, list(r.allow_patterns)) for r in RELEASED_REPOS if r.modelscope_repo]
    assert "unidepth-v2-vitl14: 2 files, 0.0 GB (not on ModelScope: from Hugging Face)" in capsys.readouterr().out
    assert _files(out / "unidepth-v2-vitl14") == set(LAYOUT["unidepth-v2-vitl14"][0])
    assert {r.path.split("/resolve/")[0] for r in hub.gets()} == {"/lpiccinelli/unidepth-v2-vitl14"}


@pytest.mark.parametrize("kind", ["file", "under-a-file"])
def test_bad_dir_fails_before_any_request(hub, tmp_path, capsys, kind):
    blocker = tmp_path / "target"
    blocker.write_text("not a folder")
    target = blocker if kind == "file" else blocker / "weights"  # a folder that cannot be created
    assert main(["weights", "download", "--dir", str(target)]) == 2
    assert "--dir" in capsys.readouterr().err
    assert hub.requests == []


def test_pattern_matching_nothing_names_repo_and_pattern(tmp_path, monkeypatch):
    pruned = tmp_path / "unidepth"  # the release without its weights file
    _write(pruned / "config.json", 0)
    with FakeHub({"lpiccinelli/unidepth-v2-vitl14": pruned}) as fake:
        fake.activate(monkeypatch, hf_home=tmp_path / "hf_home")
        with pytest.raises(InputError, match=r"lpiccinelli/unidepth-v2-vitl14 .* no file matching model\.safetensors"):
            download_released(tmp_path / "weights", repos=["unidepth-v2-vitl14"], log=lambda line: None)
        assert fake.gets() == []


def test_weights_list(hub, tmp_path, capsys):
    out = tmp_path / "weights"
    assert main(["weights", "download", "--dir", str(out), "--only", "unidepth-v2-vitl14", "MoGe4D"]) == 0
    (out / "MoGe4D" / "VAE" / "vae" / "pytorch_model.bin").unlink()
    capsys.readouterr()
    assert main(["weights", "list", "--dir", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"released weights in {out}"
    headers = {line.split()[0]: line for line in lines[1:] if not line.startswith(" ")}
    assert headers["unidepth-v2-vitl14"].endswith("[present]") and "modelscope: -" in headers["unidepth-v2-vitl14"]
    assert headers["MoGe4D"].endswith("[incomplete]") and "hf: Yanran21/MoGe4D" in headers["MoGe4D"]
    assert headers["Wan2.1-Fun-V1.1-14B-InP"].endswith("[missing]")
    assert "  missing  VAE/vae/pytorch_model.bin" in lines and "  ok       4D-STraG/*.safetensors" in lines
    assert sum(line.startswith("  ") for line in lines) == sum(len(r.allow_patterns) for r in RELEASED_REPOS)
