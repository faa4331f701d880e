"""train/: the shared run machinery on a toy model, and each script for a few steps on tiny synthetic data (CPU).

Each script test trains 2 steps (validation + checkpoint at step 2), then resumes to step 3 from the checkpoint,
and checks: finite logged losses, checkpoint folders holding save_pretrained weights, the fp16 export.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import ModuleType

import pytest
import torch

from more4d.errors import InputError
from more4d.training.config import DataConfig, TrainConfig, add_common_args, config_from_args
from more4d.training.data import EncodedPool, batches
from more4d.training.flow import flow_matching_loss
from more4d.training.run import Run, TrainingError

TRAIN_DIR = Path(__file__).resolve().parents[1] / "train"
# tiny data for CPU: 5 frames of 32 x 32, batch 2, 2 validation clips, fp32
SMALL = ["mixed_precision=no", "data.num_frames=5", "data.height=32", "data.width=32", "data.batch_size=2",
         "num_validation_clips=1", "log_steps=1", "validation_steps=2", "checkpointing_steps=2",
         "use_ema=true", "lr_warmup_steps=1"]


@pytest.fixture(autouse=True)
def _fresh_accelerator_state():
    """accelerate keeps its state in class attributes: each test builds its own `Accelerator`."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    from more4d.weights import save_random_tiny

    return save_random_tiny(tmp_path_factory.mktemp("tiny_weights"))


def run_script(mod: ModuleType, config: str, out: Path, steps: int, extra: list[str]) -> dict:
    argv = ["--config", str(TRAIN_DIR / "configs" / config), "--output-dir", str(out / "run"), "--export-dir",
            str(out / "export"), "--max-steps", str(steps), "--set", *SMALL, *extra]
    assert mod.main(argv) == 0
    return json.loads((out / "run" / "summary.json").read_text())


def check_run(out: Path, exported: list[str]) -> None:
    records = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert losses and all(math.isfinite(v) for v in losses)
    assert any(k.startswith("val/") for r in records for k in r)
    assert (out / "run" / "checkpoints" / "checkpoint-2" / "train_state.json").is_file()
    assert (out / "run" / "curves.png").is_file() and list((out / "run" / "samples").glob("*.png"))
    for name in exported:
        files = list((out / "export" / name).glob("*.safetensors"))
        assert files and (out / "export" / name / "config.json").is_file()
        from safetensors.torch import load_file

        assert all(t.dtype == torch.float16 for t in load_file(str(files[0])).values() if t.is_floating_point())


def train_and_resume(mod: ModuleType, config: str, out: Path, extra: list[str], exported: list[str]) -> None:
    first = run_script(mod, config, out, 2, extra)
    assert first["complete"] and first["steps"] == 2 and first["nonfinite"] == 0
    second = run_script(mod, config, out, 3, extra)
    assert second["steps"] == 3 and second["steps_this_run"] == 1  # resumed from checkpoint-2
    check_run(out, exported)


# -- scripts ------------------------------------------------------------------------------------------------------

def test_train_depth_resumes(tmp_path, train_script):
    extra = ["model.block_channels=[8,16]", "model.norm_groups=4", "model.sample_size=32", "frames_per_clip=2",
             "init_from=null"]
    train_and_resume(train_script("train_depth"), "tiny_depth.yaml", tmp_path, extra, ["depth"])


@pytest.fixture(scope="module")
def small_vae_weights(tmp_path_factory) -> Path:
    """vae/ + motion_vae/ smaller than the tiny preset's (base_dim 8, adaptor width 16): CPU-fast."""
    from diffusers import AutoencoderKLWan

    from more4d.models.motion_vae import MotionVAE

    root = tmp_path_factory.mktemp("small_vae")
    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    vae.save_pretrained(root / "vae")
    MotionVAE.from_vae(vae, adaptor_channels=16, adaptor_groups=4).save_pretrained(root / "motion_vae")
    return root


def test_train_vae_rgb_resumes_then_motion(tmp_path, small_vae_weights, train_script):
    extra = [f"init_from={small_vae_weights}", "num_stat_clips=2", "data.pool_size=4"]
    train_and_resume(train_script("train_vae"), "tiny_vae_rgb.yaml", tmp_path / "a", extra, ["vae"])
    motion = [*extra, "axis_balanced=true", "mse_weight=64", "dense_clips=1"]
    summary = run_script(train_script("train_vae"), "tiny_motion_vae.yaml", tmp_path / "b", 2, motion)
    assert summary["complete"] and math.isfinite(summary["final_metrics"]["val/epe_m"])
    config = json.loads((tmp_path / "b" / "export" / "motion_vae" / "config.json").read_text())
    assert config["latents_std"] != [1.0] * 16  # normalisation set from the data at export


def test_axis_weights_equalise_the_axes(train_script):
    axis_weights = train_script("train_vae").axis_weights
    m = torch.zeros(2, 3, 5, 4, 4)
    m[:, 0, 1:, :2], m[:, 1, 1:, :2], m[:, 2, 1:, :2] = 0.1, -0.05, 0.4  # y moves half as far as x, depth 4x
    weight = torch.zeros(2, 5, 4, 4)
    weight[:, :, :2] = 1.0
    w = axis_weights(m, weight).flatten()
    assert torch.allclose(w * torch.tensor([0.1, 0.05, 0.4]), torch.full((3,), 0.55 / 3))  # equal weighted shares
    m[:, 1] = 0.0  # an axis that does not move in the batch gets the capped weight, not inf
    assert axis_weights(m, weight).flatten()[1] == train_script("train_vae").AXIS_WEIGHT_MAX


def test_train_strag(tmp_path, tiny_weights, train_script):
    extra = [f"init_from={tiny_weights}", "val_inference_steps=2", "data.source=synth_pool", "data.pool_size=3",
             "cache_latents=true", "train_text_encoder=true", "pooled_text=true"]  # a pool of 3 encoded clips
    train_and_resume(train_script("train_strag"), "tiny_strag.yaml", tmp_path, extra,
                     ["strag/transformer", "strag/motion_encoder", "text_encoder"])
    config = json.loads((tmp_path / "export" / "strag" / "transformer" / "config.json").read_text())
    assert config["pooled_text"]  # the path added to the shipped-layout transformer is exported with it


def test_train_vism(tmp_path, tiny_weights, train_script):
    extra = [f"init_from={tiny_weights}", "val_inference_steps=2", "data.num_novel_views=1"]
    train_and_resume(train_script("train_vism"), "tiny_vism.yaml", tmp_path, extra,
                     ["vism/transformer", "vism/image_encoder"])


def test_train_text_encoder(tmp_path, tiny_weights, train_script):
    extra = [f"init_from={tiny_weights}", "data.pool_size=8", "num_validation_clips=16", "context=2"]
    script = train_script("train_text_encoder")
    train_and_resume(script, "tiny_text_encoder.yaml", tmp_path, extra, ["text_encoder"])
    assert not (tmp_path / "export" / "heads").exists()  # the context heads are training-only

    for bad, match in (("data.source=synth_on_the_fly", "data.source"), ("data.train_seed_start=999998996", "validation")):
        with pytest.raises(InputError, match=match):  # captions come from synth seeds below the validation range
            run_script(script, "tiny_text_encoder.yaml", tmp_path / "bad", 1, [*extra, bad])


def test_text_encoder_context_targets_and_motion_swap(train_script):
    mod = train_script("train_text_encoder")
    ids, mask = torch.tensor([[5, 6, 7, 0]]), torch.tensor([[1, 1, 1, 0]])
    targets = mod.context_targets(ids, mask, [-1, 0, 2])
    I = mod.IGNORE  # noqa: E741
    assert targets[0].tolist() == [[I, 5, 7], [5, 6, I], [6, 7, I], [I, I, I]]
    assert (mod.swap_first_motions("a red ball moves left and a blue box spins while the camera pans left")
            == "a red ball spins and a blue box moves left while the camera pans left")
    assert mod.swap_first_motions("a red ball spins and a blue box spins") is None
    assert mod.swap_first_motions("a red ball moves left") is None


# -- machinery ----------------------------------------------------------------------------------------------------

def _toy_run(tmp_path: Path, **overrides):

    options = dict(max_steps=4, mixed_precision="no", log_steps=1, checkpointing_steps=1, lr_warmup_steps=0)
    cfg = TrainConfig(output_dir=str(tmp_path), **{**options, **overrides})
    run = Run(cfg, "toy", [])
    model = torch.nn.Linear(3, 2)
    opt = run.optimizer(list(model.parameters()))
    model, opt, sched = run.prepare(model, opt, run.lr_scheduler(opt))
    run.track({"toy": model})
    return run, model, opt, sched


def _batches():
    g = torch.Generator().manual_seed(0)
    while True:
        yield torch.randn(4, 3, generator=g)


def test_run_nonfinite_is_counted_and_stops(tmp_path):

    run, model, opt, sched = _toy_run(tmp_path, max_nonfinite_steps=2)
    before = [p.detach().clone() for p in model.parameters()]

    def step(x):
        return model(x).sum() * float("nan"), {}

    with pytest.raises(TrainingError, match="non-finite"):
        run.fit(step, _batches(), opt, sched, list(model.parameters()), samples_per_batch=4)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # no update applied
    events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events if "event" in e] == ["nonfinite_loss", "nonfinite_loss"]


def test_run_graphed_is_off_by_default_and_needs_cuda(tmp_path):

    run, model, *_ = _toy_run(tmp_path)
    assert run.graphed(model, torch.zeros(4, 3)) is model
    run.cfg.cuda_graphs = True
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="cuda_graphs needs one CUDA process"):
            run.graphed(model, torch.zeros(4, 3))


def test_synth_pool_batches_are_seeded_resumable_and_checked():

    from more4d.data.synth import SynthConfig, generate_batch

    cfg = TrainConfig(data=DataConfig(source="synth_pool", pool_size=6, num_frames=5, height=16, width=16,
                                      batch_size=2))

    class Acc:
        process_index, num_processes, device = 0, 1, torch.device("cpu")

    stream = batches(cfg, Acc(), 0)
    first = [next(stream) for _ in range(4)]
    resumed = next(batches(cfg, Acc(), 3))
    assert torch.equal(resumed.points, first[3].points) and resumed.captions == first[3].captions
    pool = generate_batch(range(6), SynthConfig(num_frames=5, height=16, width=16, novel_views=0))
    epoch = [pool.captions.index(c) for b in first[:3] for c in b.captions]
    assert sorted(epoch) == list(range(6))  # one epoch: every pool clip once
    with pytest.raises(InputError, match="lower data.pool_size"):
        next(batches(TrainConfig(data=DataConfig(source="synth_pool", pool_size=10**8, num_frames=5, height=16,
                                                 width=16, batch_size=2)), Acc(), 0))
    clip = first[0].select([1])
    assert torch.equal(clip.frames[0], pool.frames[epoch[1]]) and clip.captions == [pool.captions[epoch[1]]]

    # a reduced pool (what cache_latents keeps), rendered 4 clips at a time: the same clips in the same order
    def reduce(batch):
        return EncodedPool({"image": batch.frames[:, 0]}, batch.captions)

    chunked = TrainConfig(data=DataConfig(source="synth_pool", pool_size=6, pool_chunk_size=4, num_frames=5,
                                          height=16, width=16, batch_size=2))
    reduced = [next(s) for s in [batches(chunked, Acc(), 0, reduce=reduce)] for _ in range(4)]
    for full, small in zip(first, reduced):
        assert isinstance(small, EncodedPool) and small.captions == full.captions
        assert torch.equal(small.tensors["image"], full.frames[:, 0])


def test_flow_matching_loss_weight():

    latents, cond = torch.randn(2, 4, 1, 2, 2), torch.zeros(2, 1, 1, 2, 2)

    def loss(weight):
        return flow_matching_loss(lambda x, t: x[:, :4] * 0, latents, cond, "uniform", 5.0,
                                  torch.Generator().manual_seed(0), weight)

    assert torch.allclose(loss(None), loss(torch.full((2, 1, 1, 2, 2), 3.0)))  # constant weight: plain MSE
    only_first = torch.zeros(2, 1, 1, 2, 2)
    only_first[0] = 1
    assert not torch.allclose(loss(None), loss(only_first))


def test_run_checkpoint_limit_budget_and_export(tmp_path):
    run, model, opt, sched = _toy_run(tmp_path, checkpoints_total_limit=2, export_dir=str(tmp_path / "export"))
    stop = run.fit(lambda x: (model(x).pow(2).mean(), {}), _batches(), opt, sched, list(model.parameters()),
                   samples_per_batch=4)
    assert stop == "max_steps"
    assert [p.name for p in run.checkpoints()] == ["checkpoint-3", "checkpoint-4"]
    assert (tmp_path / "checkpoints" / "checkpoint-4" / "ema" / "toy" / "model.safetensors").is_file()
    summary = run.finish(stop)
    assert summary["complete"] and (tmp_path / "export" / "toy" / "model.safetensors").is_file()


def test_run_keeps_the_best_checkpoint_and_takes_a_new_learning_rate_on_resume(tmp_path):
    from accelerate.state import AcceleratorState
    from safetensors.torch import load_file


    def train(run, model, opt, sched, scores: dict[int, float]) -> None:
        run.fit(lambda x: (model(x).pow(2).mean(), {}), _batches(), opt, sched, list(model.parameters()),
                samples_per_batch=4, validate=lambda step: {"val/score": scores[step]})

    best = tmp_path / "checkpoints" / "best"
    run, *rest = _toy_run(tmp_path, best_metric="val/score", validation_steps=1, checkpoints_total_limit=1)
    train(run, *rest, {1: 3.0, 2: 1.0, 3: 2.0, 4: 5.0})
    assert [p.name for p in run.checkpoints()] == ["checkpoint-4"]  # the rolling limit does not touch best/
    state = json.loads((best / "train_state.json").read_text())
    assert state["step"] == 2 and state["best"] == {"metric": "val/score", "value": 1.0}
    assert not list((tmp_path / "checkpoints").glob("*.partial"))
    crashed = tmp_path / "checkpoints" / "checkpoint-9.partial"  # a save cut short: never taken for a checkpoint
    crashed.mkdir()
    (crashed / "train_state.json").write_text("{}")
    assert [p.name for p in run.checkpoints()] == ["checkpoint-4"]

    AcceleratorState._reset_state(reset_partial_state=True)
    run, model, opt, sched = _toy_run(tmp_path, best_metric="val/score", validation_steps=1, learning_rate=3e-4,
                                      max_steps=6)
    assert run.resume("latest") == 4 and run.best == 1.0  # the best so far comes back with the run
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([3e-4])  # not the checkpoint's 1e-4
    train(run, model, opt, sched, {5: 2.0, 6: 0.5})
    assert json.loads((best / "train_state.json").read_text())["step"] == 6
    assert sched.get_last_lr() == pytest.approx([3e-4])

    run.cfg.best_metric = "val/epe"
    with pytest.raises(InputError, match="best_metric 'val/epe' is not logged"):
        run._keep_best({"val/score": 1.0})

    AcceleratorState._reset_state(reset_partial_state=True)  # export the best: resume it, with no step to run
    run, *rest = _toy_run(tmp_path / "exported", max_steps=6, export_dir=str(tmp_path / "export"))
    assert run.resume(str(best)) == 6
    train(run, *rest, {})
    run.finish("max_steps")
    exported, ema = (load_file(str(f / "toy" / "model.safetensors")) for f in (tmp_path / "export", best / "ema"))
    assert all(torch.equal(t, ema[k].half()) for k, t in exported.items())  # the best's EMA weights, in fp16


def test_run_time_budget_stops_cleanly(tmp_path):
    run, model, opt, sched = _toy_run(tmp_path, max_minutes=1e-6)
    stop = run.fit(lambda x: (model(x).pow(2).mean(), {}), _batches(), opt, sched, list(model.parameters()),
                   samples_per_batch=4)
    assert stop == "max_minutes" and run.step == 1
    assert not run.finish(stop)["complete"] and run.checkpoints()


def test_config_validation(tmp_path, train_script):
    import argparse



    train_depth = train_script("train_depth")
    parser = argparse.ArgumentParser()
    add_common_args(parser)
    train_strag = train_script("train_strag")

    def load_config(cls, config: str, *sets: str):
        argv = ["--config", str(TRAIN_DIR / "configs" / config), "--set", *sets]
        return config_from_args(cls, parser.parse_args(argv))

    def load(*sets: str):
        return load_config(train_depth.DepthConfig, "tiny_depth.yaml", *sets)

    def load_strag(*sets: str):
        return load_config(train_strag.STraGConfig, "tiny_strag.yaml", *sets)

    assert load("model.norm_groups=4").model.norm_groups == 4
    assert load("mixed_precision=no").mixed_precision == "no"  # YAML `no` is read as false
    assert load("learning_rate=1e-3").learning_rate == 1e-3  # YAML 1.1 reads `1e-3` as a string
    with pytest.raises(InputError, match="unknown config key"):
        load("model.depth_layers=3")
    with pytest.raises(InputError, match="learning_rate"):
        load("learning_rate=fast")
    with pytest.raises(InputError, match="num_frames"):
        load("data.num_frames=6")
    with pytest.raises(InputError, match="data.path"):
        load("data.source=synth_dir", "data.path=/nonexistent")
    with pytest.raises(InputError, match="cuda_graphs"):
        load("cuda_graphs=true", "mixed_precision=bf16")
    with pytest.raises(InputError, match="pool_size"):
        load("data.source=synth_pool", "data.pool_size=1")
    with pytest.raises(InputError, match="pool_chunk_size"):
        load("data.pool_chunk_size=0")

    with pytest.raises(InputError, match="synth_pool"):
        load_strag("cache_latents=true", "data.source=synth_on_the_fly")
    with pytest.raises(InputError, match="umT5 stays frozen"):
        load_strag("train_text_encoder=true", "preset=wan2.1-14b")
    with pytest.raises(InputError, match="moving_weight"):
        load_strag("moving_weight=0")
    for bad in (["l1_weight=0"], ["mse_weight=-1"]):  # the motion VAE's loss needs a positive, non-empty mix
        with pytest.raises(InputError, match="l1_weight/mse_weight"):
            load_config(train_script("train_vae").VAEConfig, "tiny_motion_vae.yaml", *bad)
    with pytest.raises(InputError, match="does not exist"):
        config_from_args(train_depth.DepthConfig, parser.parse_args(["--config", str(tmp_path / "none.yaml")]))
