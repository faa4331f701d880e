"""Benchmark scripts run at tiny size, so that they cannot rot (their numbers are recorded in bench/RESULTS.md)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_released_both_stages_tiny(tmp_path):
    results = load("bench_released").main(["--scale", "tiny", "--root", str(tmp_path / "layout")])
    assert [r["stage"] for r in results] == ["strag", "vism"]
    assert all(r["finite"] and len(r["step_s"]) == 1 and r["written_gb"] > 0 for r in results)
    assert not (tmp_path / "layout").exists()  # the written weights are removed


def test_bench_render_torch_tiny(tmp_path):
    results = load("bench_render").main([
        "--points", "400", "--size", "16", "--iters", "1", "--warmup", "0", "--backends", "torch",
        "--scenes", "12x16", "--frames", "3", "--repeats", "1", "--out", str(tmp_path)])
    assert [(r["mode"], r["backend"]) for r in results["throughput"]] == [("disk", "torch"), ("gaussian", "torch")]
    (row,) = results["agreement"]
    assert row["backend"] == "torch" and row["rgb_max"] == 0.0 and row["psnr_db"] is None  # CPU renders repeat exactly
    assert json.loads((tmp_path / "bench_render.json").read_text())["agreement"] == [row]


def test_bench_render_gsplat_without_cuda_says_why_and_fails(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load("bench_render").main(["--backends", "gsplat", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("gsplat: not run: needs a CUDA device")
    assert "error" in json.loads((tmp_path / "bench_render.json").read_text())["gsplat"]
