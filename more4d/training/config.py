"""Training configuration: dataclasses loaded from YAML with type and range validation.

Every script defines `XConfig(TrainConfig)` with a nested `model: XModelConfig`. A YAML file gives any subset of
the fields; the command line overrides the common ones (`--output-dir`, `--max-minutes`, `--max-steps`) and any
field by dotted key (`--set model.num_layers=4 data.batch_size=8`). Unknown keys and wrong types raise `InputError`.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from more4d.errors import InputError
from more4d.eval.evaluate import HELD_OUT_SEED_START

DataSource = Literal["synth_on_the_fly", "synth_pool", "synth_dir", "more4d_dir", "seed_dir", "trajscene60k"]

# Held-out evaluation seeds start here (more4d.eval); validation seeds sit just below; training seeds are
# `data.train_seed_start + sample index`, far below both.
VALIDATION_SEED_START = HELD_OUT_SEED_START - 1_000


@dataclass
class DataConfig:
    """Where clips come from and at which size. `synth_on_the_fly` generates TrajScene-Synth on the training device
    at every step; `synth_pool` generates `pool_size` clips there once and draws batches from them."""

    source: DataSource = "synth_on_the_fly"
    path: str | None = None            # folder of clips for *_dir sources
    num_frames: int = 17               # 4k + 1
    height: int = 256
    width: int = 256
    batch_size: int = 8                # per device, per micro-step
    num_workers: int = 2               # DataLoader workers for *_dir sources
    train_seed_start: int = 0          # synth seeds: train_seed_start + global sample index (pool: + pool index)
    pool_size: int = 1024              # synth_pool: clips generated once (device memory: ~2 MB each at 17x64x64)
    pool_chunk_size: int | None = None  # synth_pool: clips rendered (and reduced) at once; None = batch_size
    num_novel_views: int = 1           # synth novel cameras per clip (ViSM)
    photo_prob: float = 0.0            # synth: chance that a surface wears a real photo (SynthConfig.photo_prob)
    unnamed_prob: float = 0.0          # synth: chance of "the <everyday noun> moves ..." (SynthConfig.unnamed_prob)
    large_prob: float = 0.0            # synth: chance that an object is photo-subject sized (SynthConfig.large_prob)
    closeup_prob: float = 0.0          # synth: chance of a close-up of one moving subject (SynthConfig.closeup_prob)
    part_prob: float = 0.0             # synth: chance that a close-up's other object is its part (SynthConfig.part_prob)
    caption_suffix: str = ""           # appended to every caption (e.g. a trigger word)
    strict: bool = False               # trajscene60k: stop at an unreadable sample instead of skipping it


@dataclass
class TrainConfig:
    """Options shared by every training script (nanoGPT-style groups)."""

    # I/O
    output_dir: str = "train/outputs/run"
    export_dir: str | None = None      # fp16 save_pretrained folders written at the end
    export_dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    preset: Literal["tiny", "wan2.1-14b"] = "tiny"  # layout of init_from (more4d.weights presets)
    init_from: str | None = None       # weights folder in the preset's layout: initial + frozen components
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = 3
    best_metric: str | None = None     # a validation metric (e.g. val/epe_m): its best value keeps checkpoints/best
    best_mode: Literal["min", "max"] = "min"
    validation_steps: int = 500
    num_validation_clips: int = 4
    log_steps: int = 10
    # budget
    max_steps: int = 1000
    max_minutes: float | None = None   # wall-clock budget: checkpoint and exit cleanly when reached
    # optimisation
    seed: int = 0
    learning_rate: float = 1e-4
    lr_scheduler: Literal["constant", "constant_with_warmup", "cosine", "linear"] = "constant_with_warmup"
    lr_warmup_steps: int = 100
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    gradient_accumulation_steps: int = 1
    mixed_precision: Literal["no", "bf16", "fp16"] = "bf16"
    gradient_checkpointing: bool = False
    cuda_graphs: bool = False          # capture the step's forward/backward as CUDA graphs (one GPU, no autocast)
    allow_tf32: bool = True
    use_ema: bool = True
    ema_decay: float = 0.999
    max_nonfinite_steps: int = 20      # non-finite losses/gradients tolerated (logged, counted) before stopping
    data: DataConfig = field(default_factory=DataConfig)

    def validate(self) -> None:
        """Range checks beyond types; subclasses extend it."""
        positive = ("checkpointing_steps", "validation_steps", "log_steps", "max_steps", "learning_rate",
                    "gradient_accumulation_steps", "max_nonfinite_steps")
        for name in positive:
            check(getattr(self, name) > 0, name, "> 0", getattr(self, name))
        check(self.max_minutes is None or self.max_minutes > 0, "max_minutes", "> 0 or null", self.max_minutes)
        check(0.0 <= self.ema_decay < 1.0, "ema_decay", "in [0, 1)", self.ema_decay)
        limit = self.checkpoints_total_limit
        check(limit is None or limit >= 1, "checkpoints_total_limit", ">= 1 or null", limit)
        check(self.best_metric is None or self.best_metric.startswith("val/"), "best_metric",
              "a validation metric (val/...) or null", self.best_metric)
        d = self.data
        check((d.num_frames - 1) % 4 == 0 and d.num_frames > 0, "data.num_frames", "4k + 1", d.num_frames)
        for name in ("height", "width"):
            check(getattr(d, name) % 16 == 0 and getattr(d, name) > 0, f"data.{name}", "a positive multiple of 16",
                   getattr(d, name))
        check(d.batch_size > 0, "data.batch_size", "> 0", d.batch_size)
        for name in ("photo_prob", "unnamed_prob", "large_prob", "closeup_prob", "part_prob"):
            check(0.0 <= getattr(d, name) <= 1.0, f"data.{name}", "in [0, 1]", getattr(d, name))
        check(d.pool_size >= d.batch_size, "data.pool_size", f">= data.batch_size ({d.batch_size})", d.pool_size)
        check(d.pool_chunk_size is None or d.pool_chunk_size > 0, "data.pool_chunk_size", "> 0 or null",
              d.pool_chunk_size)
        check(not self.cuda_graphs or self.mixed_precision == "no", "mixed_precision",
              "'no' with cuda_graphs (captured graphs cannot use autocast)", self.mixed_precision)
        if d.source not in ("synth_on_the_fly", "synth_pool"):
            check(d.path is not None and Path(d.path).is_dir(), "data.path", f"an existing folder for {d.source}",
                   d.path)


def check(ok: bool, name: str, expected: str, got: Any) -> None:
    if not ok:
        raise InputError(f"config `{name}` must be {expected}, got {got!r}")


C = TypeVar("C", bound=TrainConfig)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Arguments every training script accepts."""
    parser.add_argument("--config", required=True, help="YAML config (train/configs/*.yaml)")
    parser.add_argument("--output-dir", help="run folder (checkpoints, logs, samples); overrides output_dir")
    parser.add_argument("--export-dir", help="write fp16 save_pretrained folders here at the end")
    parser.add_argument("--max-minutes", type=float, help="wall-clock budget; saves a checkpoint and exits")
    parser.add_argument("--max-steps", type=int, help="total optimisation steps (resumed runs count from 0)")
    parser.add_argument("--resume", default="latest",
                        help="'latest' (default: newest checkpoint in output_dir, if any), 'none', or a checkpoint folder")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override any config field, e.g. --set model.num_layers=4 data.batch_size=2")


def config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    """Build and validate `cls` from `--config` YAML, `--set` overrides and the common flags."""
    path = Path(args.config)
    if not path.is_file():
        raise InputError(f"--config {str(path)!r} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise InputError(f"--config {str(path)!r} must hold a mapping, got {type(raw).__name__}")
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--set expects KEY=VALUE, got {item!r}")
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    flags = {"output_dir": args.output_dir, "export_dir": args.export_dir, "max_minutes": args.max_minutes,
             "max_steps": args.max_steps}
    raw.update({k: v for k, v in flags.items() if v is not None})
    cfg = build_dataclass(cls, raw)
    cfg.validate()
    return cfg


def build_dataclass(cls: type, raw: dict[str, Any], prefix: str = "") -> Any:
    """Construct dataclass `cls` from a nested dict, checking keys and value types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise InputError(f"unknown config key(s) {[prefix + k for k in unknown]}; valid keys: {sorted(names)}")
    kwargs = {k: _coerce(hints[k], v, prefix + k) for k, v in raw.items()}
    return cls(**kwargs)


_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin, targs = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise InputError(f"config `{key}` must be a mapping, got {value!r}")
        return build_dataclass(tp, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in targs:
            return None
        errors = []
        for option in (a for a in targs if a is not type(None)):
            try:
                return _coerce(option, value, key)
            except InputError as exc:
                errors.append(str(exc))
        raise InputError(errors[0])
    if origin is Literal:
        if isinstance(value, bool) and {"no", "yes"} & set(targs):  # YAML 1.1 reads `no` as false
            value = "yes" if value else "no"
        if value not in targs:
            raise InputError(f"config `{key}` must be one of {list(targs)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise InputError(f"config `{key}` must be a list, got {value!r}")
        inner = targs[0] if targs else Any
        items = [_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads `1e-3` (no dot) as a string
    if tp is bool and not isinstance(value, bool):
        raise InputError(f"config `{key}` must be true or false, got {value!r}")
    if tp is int and isinstance(value, bool):
        raise InputError(f"config `{key}` must be an integer, got {value!r}")
    if not isinstance(value, tp):
        raise InputError(f"config `{key}` must be {tp.__name__}, got {value!r} ({type(value).__name__})")
    return value


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
