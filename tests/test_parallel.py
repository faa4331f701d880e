"""more4d.parallel on the CPU: 2 and 4 forked processes over gloo, tiny random transformers and the tiny STraG
pipeline; every parallel output must equal the single-process one (fp32, atol 1e-5). The torchrun launcher
(`more4d.commands.parallel`) end to end on 2 processes."""

from __future__ import annotations

import json
import multiprocessing
import os
import traceback
from collections.abc import Callable

import pytest
import torch
import torch.distributed as dist

from more4d.commands import parallel as launcher
from more4d.errors import InputError
from more4d.models.strag_transformer import TINY_STRAG_CONFIG, STraGTransformer
from more4d.models.vism import TINY_VISM_CONFIG, build_vism_transformer
from more4d.parallel import plan_degrees, setup_parallel

ATOL = 1e-5
SMALL_STRAG = dict(TINY_STRAG_CONFIG, num_layers=2)
SMALL_VISM = dict(TINY_VISM_CONFIG, num_layers=2)


# harness: fork (children inherit the imports; spawn would re-import diffusers in each) ----------------------------

def _worker(fn: Callable, rank: int, world: int, store: str, queue: multiprocessing.Queue) -> None:
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
        queue.put((rank, fn(rank, world)))
    except BaseException:  # report everything to the parent, which fails the test
        queue.put((rank, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_ranks(fn: Callable[[int, int], dict], world: int, tmp_path) -> list[dict]:
    """Run `fn(rank, world)` in `world` forked processes joined by gloo; return each rank's result."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(fn, r, world, str(tmp_path / "store"), queue)) for r in range(world)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    for rank in range(world):
        assert not isinstance(results[rank], str), f"rank {rank} failed:\n{results[rank]}"
    return [results[r] for r in range(world)]


# models and inputs --------------------------------------------------------------------------------------------------

def strag(seed_compat: bool = False) -> STraGTransformer:
    """Tiny STraG with non-zero MAdaNorm gates (zero gates would hide a wrong motion split)."""
    torch.manual_seed(0)
    model = STraGTransformer(**SMALL_STRAG, seed_compat=seed_compat).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".gate"):
                p.normal_(0, 0.5)
    return model


def strag_inputs(batch: int = 2, frames: int = 3) -> dict[str, torch.Tensor]:
    """Latents `(B, 64, frames, 8, 8)`: 16 tokens per frame, so 2 ranks split the 48 tokens mid-frame."""
    g = torch.Generator().manual_seed(1)
    return dict(hidden_states=torch.randn(batch, 64, frames, 8, 8, generator=g),
                timestep=torch.tensor([700.0, 300.0][:batch]),
                encoder_hidden_states=torch.randn(batch, 7, 128, generator=g),
                motion_features=torch.randn(batch, 128, 6, 6, generator=g))


def forward(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs, return_dict=False)[0]


def compare(make: Callable[[], torch.nn.Module], inputs: dict, mode: str, world: int) -> dict:
    """Max |parallel - single| for a fresh model; the single-process reference runs before any hook exists."""
    model = make()
    ref = forward(model, inputs)
    plan = setup_parallel(model, world, mode)
    out = forward(model, inputs)
    return dict(diff=(out - ref).abs().max().item(), shape=tuple(out.shape), degrees=(plan.cfg, plan.context))


# tests ----------------------------------------------------------------------------------------------------------------

def test_plan_degrees():
    assert plan_degrees(1, "context") == plan_degrees(1, "cfg") == (1, 1, 1)
    assert plan_degrees(4, "context") == (1, 1, 4)
    assert plan_degrees(8, "context", ring_degree=2) == (1, 2, 4)
    assert plan_degrees(2, "cfg") == (2, 1, 1)
    assert plan_degrees(8, "both") == (2, 1, 4)
    for parallel, mode, ring in [(4, "cfg", 1), (3, "both", 1), (0, "context", 1), (4, "context", 3),
                                 (2, "sequence", 1)]:
        with pytest.raises(InputError):
            plan_degrees(parallel, mode, ring)


def test_setup_needs_processes():
    model = strag()
    assert setup_parallel(model, 1).mesh is None  # a no-op
    with pytest.raises(InputError, match="needs 2 processes"):
        setup_parallel(model, 2, "context")


def _transformers(rank: int, world: int) -> dict:
    vism_inputs = dict(hidden_states=torch.randn(2, 36, 3, 8, 8), timestep=torch.tensor([700.0, 300.0]),
                       encoder_hidden_states=torch.randn(2, 512, 128), encoder_hidden_states_image=torch.randn(2, 5, 128))
    result = dict(
        strag_context=compare(strag, strag_inputs(), "context", world),
        strag_seed_compat=compare(lambda: strag(seed_compat=True), strag_inputs(), "context", world),
        strag_cfg=compare(strag, strag_inputs(), "cfg", world),
        strag_cfg_batch1=compare(strag, strag_inputs(batch=1), "cfg", world),
        vism_context=compare(lambda: build_vism_transformer(SMALL_VISM).eval(), vism_inputs, "context", world),
    )
    model = strag()
    setup_parallel(model, world, "context")
    try:
        forward(model, strag_inputs(frames=1) | dict(hidden_states=torch.randn(2, 64, 1, 2, 6)))  # 3 tokens
    except InputError as exc:
        result["odd_tokens"] = str(exc)
    return result


def test_two_processes_match_single(tmp_path):
    """STraG (Ulysses with the MAdaNorm token split, seed-compat reference tokens, CFG-parallel, a batch of 1 that
    does not split) and the ViSM Wan (3 heads: diffusers' Ulysses-anything) on 2 gloo processes."""
    results = run_ranks(_transformers, 2, tmp_path)
    for r in results:
        for name in ("strag_context", "strag_seed_compat", "strag_cfg", "strag_cfg_batch1", "vism_context"):
            assert r[name]["diff"] < ATOL, (name, r[name])
        assert r["strag_context"]["degrees"] == (1, 2) and r["strag_cfg"]["degrees"] == (2, 1)
        assert r["strag_cfg"]["shape"] == (2, 16, 3, 8, 8) and r["strag_cfg_batch1"]["shape"] == (1, 16, 3, 8, 8)
        assert "3 video tokens (1 x 1 x 3) do not split over 2" in r["odd_tokens"]


def _both(rank: int, world: int) -> dict:
    return compare(strag, strag_inputs(), "both", world)


def test_four_processes_cfg_and_context(tmp_path):
    """mode "both" on 4 processes: 2 CFG groups x 2 Ulysses ranks."""
    for r in run_ranks(_both, 4, tmp_path):
        assert r["degrees"] == (2, 2) and r["diff"] < ATOL, r


def _pipeline(rank: int, world: int) -> dict:
    import copy

    from more4d.models.builders import build_tiny_strag_components
    from more4d.pipelines.strag import STraGPipeline

    comps = build_tiny_strag_components(seed=0)
    with torch.no_grad():
        for name, p in comps["transformer"].named_parameters():
            if name.endswith(".gate"):
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(2))
    pipe = STraGPipeline(**{k: v.eval() if isinstance(v, torch.nn.Module) else v for k, v in comps.items()},
                         resolution=(64, 64))
    pipe.set_progress_bar_config(disable=True)
    image = torch.rand(48, 64, 3, generator=torch.Generator().manual_seed(3))
    latents: list[torch.Tensor] = []
    kwargs = dict(num_frames=5, num_inference_steps=2, guidance_scale=4.0, depth=torch.full((48, 64), 3.0),
                  callback_on_step_end=lambda p, i, t, kw: latents.append(kw["latents"]))
    ref = pipe(image, "a dog runs", **kwargs).points
    result = {}
    for mode in ("context", "cfg"):
        pipe.register_modules(transformer=copy.deepcopy(comps["transformer"]))
        setup_parallel(pipe, world, mode)
        points = pipe(image, "a dog runs", **kwargs).points
        result[mode] = dict(latents=(latents[-1] - latents[1]).abs().max().item(),
                            points=((points - ref).abs().max() / ref.abs().max()).item())
    return result


def test_strag_pipeline_two_processes(tmp_path):
    """STraGPipeline end to end (batched CFG 4.0, 2 steps, 5 x 48 x 64) on 2 processes. Context: bit-equal. CFG:
    each rank runs a batch of 1 instead of 2, so float32 GEMMs round differently (noise predictions ~5e-6 apart);
    the random tiny motion-VAE decoder amplifies that to ~3e-4 of the point scale."""
    for r in run_ranks(_pipeline, 2, tmp_path):
        assert r["context"]["latents"] < ATOL and r["context"]["points"] < ATOL, r
        assert r["cfg"]["latents"] < 1e-4 and r["cfg"]["points"] < 2e-3, r


def _launch(argv: list[str]) -> Callable[[int, int], dict]:
    """`fn(rank, world)` running the launcher with torchrun's environment (the process group already exists)."""
    def run(rank: int, world: int) -> dict:
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
        return dict(rc=launcher.main(argv))
    return run


def test_launcher_generates_on_two_processes(tmp_path, capsys):
    """`torchrun --nproc-per-node 2 -m more4d.commands.parallel generate ... --parallel-mode cfg`: rank 0 writes the
    scene of a 2-process CFG-parallel run; an argument error and --render-only stop before any model loads."""
    from PIL import Image

    from more4d.weights import save_random_tiny

    weights = save_random_tiny(tmp_path / "weights")
    Image.fromarray(torch.randint(0, 255, (48, 64, 3), dtype=torch.uint8).numpy()).save(tmp_path / "in.png")
    out = tmp_path / "out"
    argv = ["generate", str(tmp_path / "in.png"), "--prompt", "a red ball moves left", "--weights", str(weights),
            "--frames", "5", "--steps", "2", "--resolution", "64x64", "--device", "cpu", "--out", str(out),
            "--parallel-mode", "cfg"]
    assert [r["rc"] for r in run_ranks(_launch(argv), 2, tmp_path)] == [0, 0]
    settings = json.loads((out / "settings.json").read_text())
    assert settings["scene"]["parallel"] == {"processes": 2, "mode": "cfg"}
    assert sorted(p.name for p in out.iterdir()) == ["preview.mp4", "scene.safetensors", "settings.json"]

    with pytest.raises(SystemExit):
        launcher.main(["export", "scene.safetensors"])  # not launchable: argparse's usage error
    render_only = ["render", str(out / "scene.safetensors"), "--render-only", "--preset", "orbit", "--out", str(tmp_path)]
    assert launcher.main(render_only) == 2
    assert "--render-only uses no model" in capsys.readouterr().err
