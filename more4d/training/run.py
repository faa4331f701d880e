"""`Run`: the machinery every training script shares (accelerate, checkpoints, EMA, budget, logging, export).

A script builds its models, optimiser and data, then:

    run = Run(cfg, "strag", argv)
    model, optimizer, lr_scheduler = run.prepare(model, optimizer, run.lr_scheduler(optimizer))
    run.track({"strag/transformer": model})          # checkpointed as save_pretrained folders (+ EMA)
    run.resume(args.resume)
    stop = run.fit(train_step, batches(run.step), optimizer, lr_scheduler, params, validate=log_validation)
    run.finish(stop)                                   # final checkpoint, curves, summary, fp16 export

Checkpoints live in `<output_dir>/checkpoints/checkpoint-<step>/`: accelerate's optimiser/scheduler/RNG state plus
one `save_pretrained` folder per tracked model (`<name>/`, and `ema/<name>/` with EMA weights) and
`train_state.json`. Non-finite losses or gradients are never skipped silently: each is logged to
`metrics.jsonl` and counted, the optimiser step of that window is not applied, and past `max_nonfinite_steps`
the run stops with `TrainingError`.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.scheduler import AcceleratedScheduler
from accelerate.utils import DistributedType, ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from more4d.errors import InputError
from more4d.io import atomic_write
from more4d.training.config import TrainConfig, config_to_dict, dump_config
from more4d.training.records import MetricsWriter, plot_curves

CHECKPOINT_PREFIX = "checkpoint-"
BEST_CHECKPOINT = "best"           # checkpoints/best: the best validation so far (best_metric), never pruned
RAW_WEIGHTS_NAME = "model.safetensors"


class TrainingError(RuntimeError):
    """Training cannot continue (e.g. too many non-finite losses); the message says what to change."""


# ---------------------------------------------------------------------------------------------------------------
# save_pretrained folders for any module


def save_module(module: torch.nn.Module, folder: Path, dtype: torch.dtype | None = None) -> None:
    """Write `module` as a save_pretrained folder (diffusers/transformers) or `model.safetensors`, cast to `dtype`."""
    folder.mkdir(parents=True, exist_ok=True)
    if hasattr(module, "save_pretrained"):
        if dtype is None:
            module.save_pretrained(folder)
            return
        orig = next(module.parameters()).dtype
        torch.nn.Module.to(module, dtype)  # the plain cast (diffusers' `to` warns about fp32 modules)
        try:
            module.save_pretrained(folder)
        finally:
            torch.nn.Module.to(module, orig)
        return
    state = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(state, str(folder / RAW_WEIGHTS_NAME))


def _read_safetensors(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise InputError(f"no .safetensors weights in {str(folder)!r}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def load_module_weights(module: torch.nn.Module, folder: Path) -> None:
    """Load every `*.safetensors` in `folder` into `module` (strict: names and shapes must match)."""
    state = _read_safetensors(folder)
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(f"weights in {str(folder)!r} do not match the model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")


@contextlib.contextmanager
def ema_weights(module: torch.nn.Module, ema: EMAModel | None) -> Iterator[None]:
    """Temporarily swap the EMA weights into `module` (no-op without EMA)."""
    if ema is None:
        yield
        return
    params = trainable(module)
    ema.store(params)
    ema.copy_to(params)
    try:
        yield
    finally:
        ema.restore(params)


def trainable(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def load_init(cfg: TrainConfig, *names: str) -> dict[str, Any]:
    """Components `names` of the preset folder `cfg.init_from` on the CPU in float32 (frozen, eval mode)."""
    from more4d.weights import load_components

    if cfg.init_from is None:
        raise InputError(f"config `init_from` must name a weights folder holding {list(names)} (e.g. written by "
                         "`python -m more4d.weights.presets DIR` or an earlier stage's --export-dir)")
    return load_components(cfg.preset, cfg.init_from, device="cpu", dtype=torch.float32, only=names)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"


# ---------------------------------------------------------------------------------------------------------------


class Run:
    """One training run: accelerator, tracked models + EMA, checkpoints, budget, metrics, export."""

    def __init__(self, cfg: TrainConfig, name: str, argv: list[str] | None = None) -> None:
        self.cfg, self.name = cfg, name
        self.out = Path(cfg.output_dir)
        self.accelerator = Accelerator(
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            mixed_precision=cfg.mixed_precision,
            project_config=ProjectConfiguration(project_dir=str(self.out), logging_dir=str(self.out / "logs")),
        )
        set_seed(cfg.seed)
        if cfg.allow_tf32 and torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.step = 0
        self.nonfinite = 0
        self.wall_before = 0.0            # seconds spent by earlier invocations (from the checkpoint)
        self.start = time.monotonic()
        self.start_step = 0
        self.models: dict[str, torch.nn.Module] = {}
        self.emas: dict[str, EMAModel] = {}
        self.wrapped: list[torch.nn.Module] = []
        self.no_export: set[str] = set()
        self.last_metrics: dict[str, float] = {}
        self.best: float | None = None    # best value of cfg.best_metric in this output_dir
        self._schedulers: list[Any] = []
        self._validated, self._validated_metrics = -1, {}
        self.command = " ".join([Path(sys.argv[0]).name if argv is None else f"train_{name}.py", *(
            sys.argv[1:] if argv is None else argv)])
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, self.out / "config.yaml")
        self.metrics = MetricsWriter(self.out, enabled=self.is_main)

    # -- properties -------------------------------------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def sharded(self) -> bool:
        return self.accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.start

    # -- set-up -----------------------------------------------------------------------------------------------
    def optimizer(self, params: list[torch.nn.Parameter], lr: float | None = None) -> torch.optim.Optimizer:
        cfg = self.cfg
        if not params:
            raise InputError("nothing to train: every parameter is frozen")
        return torch.optim.AdamW(params, lr=lr or cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                 weight_decay=cfg.adam_weight_decay, eps=cfg.adam_epsilon)

    def lr_scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        n = self.accelerator.num_processes
        return get_scheduler(self.cfg.lr_scheduler, optimizer, num_warmup_steps=self.cfg.lr_warmup_steps * n,
                             num_training_steps=self.cfg.max_steps * n)

    def prepare(self, *objs: Any) -> Any:
        """`accelerator.prepare`; under DeepSpeed the per-GPU micro-batch comes from the config (no DataLoader)."""
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
        if plugin is not None:
            plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = self.cfg.data.batch_size
        prepared = self.accelerator.prepare(*objs)
        self._schedulers += [o for o in (prepared if isinstance(prepared, tuple) else (prepared,))
                             if isinstance(o, AcceleratedScheduler)]
        return prepared

    def graphed(self, module: torch.nn.Module, *sample_args: torch.Tensor) -> Callable[..., Any]:
        """`module` with its forward and backward captured as CUDA graphs when `cuda_graphs` is set, else itself.

        For models of many small kernels (the tiny Wan VAE launches ~11k a step, so its step is bound by the host,
        not the GPU): every call replays the graphs, so inputs must keep `sample_args`' shapes and dtypes. The
        parameters stay the module's own, so the optimiser, EMA, checkpoints and eager validation are unchanged.
        """
        if not self.cfg.cuda_graphs:
            return module
        if self.device.type != "cuda" or self.accelerator.num_processes > 1:
            raise InputError(f"cuda_graphs needs one CUDA process; this run has {self.accelerator.num_processes} "
                             f"on {self.device.type}: set cuda_graphs: false")
        return torch.cuda.make_graphed_callables(module, sample_args)

    def track(self, models: dict[str, torch.nn.Module], no_export: tuple[str, ...] = ()) -> None:
        """Checkpoint/export these (prepared) models under their names (paths like `strag/transformer`).

        `no_export`: names checkpointed but not exported as whole models (e.g. a LoRA-wrapped base model).
        """
        self.no_export = set(no_export)
        for name, wrapped in models.items():
            module = self.accelerator.unwrap_model(wrapped)
            self.wrapped.append(wrapped)
            self.models[name] = module
            if self.cfg.use_ema and trainable(module):
                ema = EMAModel(trainable(module), decay=self.cfg.ema_decay, foreach=True)
                ema.to(self.device)
                self.emas[name] = ema
        if len(self.models) == len(models):  # first call
            self.accelerator.register_save_state_pre_hook(self._save_hook)
            self.accelerator.register_load_state_pre_hook(self._load_hook)

    def _save_hook(self, models: list, weights: list, output_dir: str) -> None:
        if self.sharded:  # DeepSpeed/FSDP write their own shards; folders come from export()
            return
        if self.is_main:
            out = Path(output_dir)
            for name, module in self.models.items():
                save_module(module, out / name)
                with ema_weights(module, self.emas.get(name)):
                    if name in self.emas:
                        save_module(module, out / "ema" / name)
        weights.clear()  # models are in the folders above; accelerate need not write model.safetensors

    def _train_state(self) -> dict[str, Any]:
        return {"step": self.step, "nonfinite": self.nonfinite, "wall_s": self.wall_before + self.elapsed_s,
                "ema_steps": {k: e.optimization_step for k, e in self.emas.items()},
                "model": config_to_dict(self.cfg).get("model"),
                "best": {"metric": self.cfg.best_metric, "value": self.best}}

    def _load_hook(self, models: list, input_dir: str) -> None:
        if self.sharded:
            return
        folder = Path(input_dir)
        for name, module in self.models.items():
            load_module_weights(module, folder / name)
            if name in self.emas:
                state = _read_safetensors(folder / "ema" / name)
                names = [n for n, p in module.named_parameters() if p.requires_grad]
                for shadow, key in zip(self.emas[name].shadow_params, names):
                    shadow.copy_(state[key])
        models.clear()  # loaded above; accelerate need not look for model.safetensors

    # -- checkpoints ------------------------------------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        """Complete checkpoint folders in `output_dir/checkpoints`, oldest first."""
        folder = self.out / "checkpoints"
        if not folder.is_dir():
            return []
        found = [p for p in folder.iterdir() if p.name.startswith(CHECKPOINT_PREFIX)
                 and p.name[len(CHECKPOINT_PREFIX):].isdigit() and (p / "train_state.json").is_file()]
        return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))

    def save_checkpoint(self, name: str | None = None) -> Path:
        """Save the full state as `checkpoints/checkpoint-<step>` (the newest `checkpoints_total_limit` are kept)
        or, given `name`, as `checkpoints/<name>` (never pruned).

        The state is written to `<folder>.partial` and renamed when complete, so a crash mid-save leaves the
        previous checkpoint of that name intact; older checkpoints are pruned only after the new one exists.
        """
        path = self.out / "checkpoints" / (name or f"{CHECKPOINT_PREFIX}{self.step}")
        partial = path.with_name(path.name + ".partial")
        if self.is_main and partial.exists():
            shutil.rmtree(partial)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(partial))
        self.accelerator.wait_for_everyone()
        if self.is_main:
            (partial / "train_state.json").write_text(json.dumps(self._train_state(), indent=1))
            if path.exists():
                shutil.rmtree(path)
            partial.rename(path)
            limit = self.cfg.checkpoints_total_limit
            rolling = self.checkpoints()
            for stale in rolling[: max(0, len(rolling) - limit)] if limit and name is None else []:
                shutil.rmtree(stale)
        self.accelerator.wait_for_everyone()
        return path

    def resume(self, which: str = "latest") -> int:
        """Load `latest` (newest in output_dir, if any), a checkpoint folder, or nothing (`none`); return the step."""
        if which == "none":
            return 0
        if which == "latest":
            found = self.checkpoints()
            if not found:
                return 0
            path = found[-1]
        else:
            path = Path(which)
            if not (path / "train_state.json").is_file():
                raise InputError(f"--resume {which!r} is not a checkpoint folder (no train_state.json)")
        state = json.loads((path / "train_state.json").read_text())
        saved_model = state.get("model")
        current = config_to_dict(self.cfg).get("model")
        if saved_model is not None and saved_model != current:
            diff = sorted(k for k in set(saved_model) | set(current or {}) if saved_model.get(k) != (current or {})
                          .get(k))
            raise InputError(f"checkpoint {str(path)!r} was trained with a different model config (keys {diff}); "
                             "use the same config or a new --output-dir")
        self.accelerator.load_state(str(path))
        self._apply_learning_rate()
        self.best = self._saved_best()
        for name, ema in self.emas.items():
            ema.optimization_step = int(state.get("ema_steps", {}).get(name, state["step"]))
        self.step = self.start_step = int(state["step"])
        self.nonfinite = int(state.get("nonfinite", 0))
        self.wall_before = float(state.get("wall_s", 0.0))
        self.accelerator.print(f"resumed from {path} at step {self.step}")
        return self.step

    def _apply_learning_rate(self) -> None:
        """After loading a checkpoint, scale its schedule to this config's `learning_rate` if that changed."""
        for sched in self._schedulers:
            inner = sched.scheduler
            ratio = self.cfg.learning_rate / inner.base_lrs[0]
            if math.isclose(ratio, 1.0, rel_tol=1e-6):
                continue
            self.accelerator.print(f"learning_rate {inner.base_lrs[0]:g} in the checkpoint -> "
                                   f"{self.cfg.learning_rate:g} (this config)")
            inner.base_lrs = [lr * ratio for lr in inner.base_lrs]
            for group in inner.optimizer.param_groups:
                for key in ("lr", "initial_lr"):
                    if key in group:
                        group[key] *= ratio

    def _saved_best(self) -> float | None:
        """The value recorded in this output_dir's `checkpoints/best`, if it was kept for the same metric."""
        state_file = self.out / "checkpoints" / BEST_CHECKPOINT / "train_state.json"
        if self.cfg.best_metric is None or not state_file.is_file():
            return None
        best = json.loads(state_file.read_text()).get("best") or {}
        return best.get("value") if best.get("metric") == self.cfg.best_metric else None

    def _keep_best(self, metrics: dict[str, float]) -> None:
        """Save `checkpoints/best` when `best_metric` improved on its best value in this output_dir."""
        name, improved = self.cfg.best_metric, True
        if name is None:
            return
        if self.is_main:
            if name not in metrics:
                raise InputError(f"best_metric {name!r} is not logged by {self.name}'s validation; it logs "
                                 f"{sorted(metrics)}")
            value, sign = metrics[name], 1.0 if self.cfg.best_mode == "min" else -1.0
            improved = math.isfinite(value) and (self.best is None or sign * value < sign * self.best)
        if self._all_true(improved):  # every rank takes the main process's decision
            if self.is_main:
                self.best = value
                self.accelerator.print(f"step {self.step}: new best {name}={value:.4g} -> "
                                       f"checkpoints/{BEST_CHECKPOINT}")
            self.save_checkpoint(BEST_CHECKPOINT)

    # -- the loop ---------------------------------------------------------------------------------------------
    def _all_true(self, flag: bool) -> bool:
        """Agree across processes (so every rank skips or applies the same step)."""
        if self.accelerator.num_processes == 1:
            return flag
        t = torch.tensor(0.0 if flag else 1.0, device=self.device)
        return bool(self.accelerator.reduce(t, "sum").item() == 0)

    def _record_nonfinite(self, what: str, value: float) -> None:
        self.nonfinite += 1
        self.metrics.write(self.step, {"event": f"nonfinite_{what}", "value": value, "train/nonfinite": self.nonfinite})
        self.accelerator.print(f"step {self.step}: non-finite {what} ({value}); update not applied "
                               f"[{self.nonfinite}/{self.cfg.max_nonfinite_steps}]")
        if self.nonfinite >= self.cfg.max_nonfinite_steps:
            last = self.checkpoints()
            raise TrainingError(
                f"{self.name}: {self.nonfinite} non-finite losses/gradients (limit max_nonfinite_steps="
                f"{self.cfg.max_nonfinite_steps}); last at step {self.step}. Lower learning_rate, raise "
                f"max_grad_norm strictness or check the data; last checkpoint: {last[-1] if last else 'none'}")

    def time_up(self) -> bool:
        limit = self.cfg.max_minutes
        return limit is not None and not self._all_true(self.elapsed_s < limit * 60.0)

    def fit(self, train_step: Callable[[Any], tuple[torch.Tensor, dict[str, float]]], batches: Iterator[Any],
            optimizer: torch.optim.Optimizer, lr_scheduler: Any, params: list[torch.nn.Parameter], *,
            samples_per_batch: int, validate: Callable[[int], dict[str, float]] | None = None) -> str:
        """Train until `max_steps` or `max_minutes`; returns the stop reason (`"max_steps"` or `"max_minutes"`).

        `train_step(batch) -> (loss, logs)` runs the forward pass (under autocast) and returns a scalar loss.
        """
        cfg, acc = self.cfg, self.accelerator
        bar = tqdm(total=cfg.max_steps, initial=self.step, desc=self.name, disable=not self.is_main,
                   dynamic_ncols=True)
        window: dict[str, list[float]] = {}
        bad_window = False
        t_window, samples = time.perf_counter(), 0
        stop = "max_steps"
        while self.step < cfg.max_steps:
            batch = next(batches)
            with acc.accumulate(*self.wrapped):
                with acc.autocast():
                    loss, logs = train_step(batch)
                value = float(loss.detach().float().item())
                if self._all_true(math.isfinite(value)):
                    acc.backward(loss)
                    for k, v in {"train/loss": value, **logs}.items():
                        window.setdefault(k, []).append(float(v))
                else:
                    bad_window = True
                    self._record_nonfinite("loss", value)
                samples += samples_per_batch * acc.num_processes
                if not acc.sync_gradients:
                    continue
                norm = None if bad_window else acc.clip_grad_norm_(params, cfg.max_grad_norm)  # None: DeepSpeed
                grad_norm = math.nan if norm is None else float(norm)
                if norm is not None and not math.isfinite(grad_norm):
                    bad_window = True
                    self._record_nonfinite("grad_norm", grad_norm)
                if not bad_window:
                    optimizer.step()
                    lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            self.step += 1
            if not bad_window:
                for name, ema in self.emas.items():
                    ema.step(trainable(self.models[name]))
            bad_window = False
            if math.isfinite(grad_norm):
                window.setdefault("train/grad_norm", []).append(grad_norm)
            if self.step % cfg.log_steps == 0 or self.step == cfg.max_steps:
                dt = time.perf_counter() - t_window
                logs = {k: sum(v) / len(v) for k, v in window.items()}
                logs.update({"train/lr": lr_scheduler.get_last_lr()[0], "train/samples_per_s": samples / max(dt, 1e-9),
                             "train/nonfinite": self.nonfinite})
                self.metrics.write(self.step, logs)
                self.last_metrics.update(logs)
                bar.set_postfix(loss=f"{logs.get('train/loss', math.nan):.4f}",
                                samples_s=f"{logs['train/samples_per_s']:.1f}")
                window, t_window, samples = {}, time.perf_counter(), 0
            bar.update(1)
            if validate is not None and self.step % cfg.validation_steps == 0:
                self.validate(validate)
            if self.step % cfg.checkpointing_steps == 0:
                self.save_checkpoint()
            if self.time_up():
                stop = "max_minutes"
                break
        bar.close()
        return stop

    def validate(self, fn: Callable[[int], dict[str, float]]) -> dict[str, float]:
        """Run `fn(step)` on the main process with EMA weights swapped in, models in eval mode; log its metrics."""
        metrics: dict[str, float] = {}
        if self._validated == self.step:
            return self._validated_metrics
        if self.is_main:
            with contextlib.ExitStack() as stack:
                for name, module in self.models.items():
                    stack.enter_context(ema_weights(module, self.emas.get(name)))
                modes = {name: m.training for name, m in self.models.items()}
                for m in self.models.values():
                    m.eval()
                try:
                    with torch.no_grad(), self.accelerator.autocast():
                        metrics = fn(self.step)
                finally:
                    for name, m in self.models.items():
                        m.train(modes[name])
            self.metrics.write(self.step, metrics)
            self.last_metrics.update(metrics)
            self.accelerator.print(f"step {self.step} validation: " + ", ".join(f"{k}={v:.4g}" for k, v in
                                                                               metrics.items()))
        self.accelerator.wait_for_everyone()
        self._validated, self._validated_metrics = self.step, metrics
        self._keep_best(metrics)
        return metrics

    # -- the end ----------------------------------------------------------------------------------------------
    def export(self, export_dir: Path, extra: Callable[[Path], None] | None = None) -> None:
        """Write each tracked model (EMA weights if any) as a `save_pretrained` folder in `export_dtype`."""
        dtype = getattr(torch, self.cfg.export_dtype)
        for name, module in self.models.items():
            if name in self.no_export:
                continue
            if self.sharded:
                state = self.accelerator.get_state_dict(self.wrapped[list(self.models).index(name)])
                if self.is_main:
                    module.load_state_dict(state)
            if self.is_main:
                target = export_dir / name
                if target.exists():
                    shutil.rmtree(target)
                with ema_weights(module, self.emas.get(name)):
                    save_module(module, target, dtype=dtype)
        if extra is not None and self.is_main:
            extra(export_dir)
        self.accelerator.wait_for_everyone()

    def finish(self, stop: str, final_metrics: dict[str, float] | None = None,
               export_extra: Callable[[Path], None] | None = None) -> dict[str, Any]:
        """Final checkpoint, export (if `export_dir`), curves and `summary.json`; returns the summary."""
        found = self.checkpoints()
        if not found or found[-1].name != f"{CHECKPOINT_PREFIX}{self.step}":
            self.save_checkpoint()
        if self.cfg.export_dir:
            self.export(Path(self.cfg.export_dir), export_extra)
        summary = {
            "model": self.name, "complete": self.step >= self.cfg.max_steps, "stop_reason": stop,
            "steps": self.step, "steps_this_run": self.step - self.start_step, "max_steps": self.cfg.max_steps,
            "wall_s_this_run": round(self.elapsed_s, 1), "wall_s_total": round(self.wall_before + self.elapsed_s, 1),
            "card": device_name(self.device), "num_processes": self.accelerator.num_processes,
            "torch": torch.__version__, "nonfinite": self.nonfinite, "command": self.command,
            "export_dir": self.cfg.export_dir,
            "final_metrics": {**self.last_metrics, **(final_metrics or {})},
        }
        if self.is_main:
            with (self.out / "runs.jsonl").open("a") as f:
                f.write(json.dumps(summary) + "\n")
            with atomic_write(self.out / "summary.json") as tmp:
                tmp.write_text(json.dumps(summary, indent=1))
            plot_curves(self.out / "metrics.jsonl", self.out / "curves.png", title=f"{self.name} ({summary['card']})")
            self.metrics.close()
            state = "complete" if summary["complete"] else f"stopped by {stop}; rerun the same command to resume"
            print(f"{self.name}: step {self.step}/{self.cfg.max_steps} ({state}); run folder {self.out}")
        self.accelerator.end_training()
        return summary


def entry(main: Callable[[list[str] | None], int]) -> None:
    """Run a script's `main`; user mistakes and training failures end with one clear line, not a traceback."""
    try:
        code = main(None)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 2
    except TrainingError as exc:
        print(f"training stopped: {exc}", file=sys.stderr)
        code = 1
    raise SystemExit(code)
