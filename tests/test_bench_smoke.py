"""Benchmark scripts run at tiny size, so that they cannot rot (their numbers are recorded in bench/RESULTS.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

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
