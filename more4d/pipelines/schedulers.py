"""The flow-matching schedulers both stages sample with, by name, and their timestep shift.

A pipeline holds its scheduler as a component (`pipe.scheduler`); swap it the diffusers way,
`pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, ...)`, or by name with `make_scheduler`.
"""

from __future__ import annotations

from typing import Any, Literal

from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

from more4d.errors import InputError

SchedulerName = Literal["euler", "unipc"]
SCHEDULERS: tuple[str, ...] = ("euler", "unipc")
NUM_TRAIN_TIMESTEPS = 1000
DEFAULT_SCHEDULER, DEFAULT_SHIFT = "euler", 5.0
SCHEDULER_SETTINGS = ("scheduler", "shift")  # the keys of a preset's sampler settings that choose the scheduler
FlowScheduler = FlowMatchEulerDiscreteScheduler | UniPCMultistepScheduler
# the config key that holds the timestep shift, per scheduler class
_SHIFT_KEY = {FlowMatchEulerDiscreteScheduler: "shift", UniPCMultistepScheduler: "flow_shift"}


def make_scheduler(name: str, shift: float) -> FlowScheduler:
    """A flow-matching scheduler: "euler" (FlowMatch Euler) or "unipc" (UniPC, flow prediction)."""
    if name == "euler":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=shift)
    if name == "unipc":
        return UniPCMultistepScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, prediction_type="flow_prediction",
                                       use_flow_sigmas=True, flow_shift=shift)
    raise InputError(f"`scheduler` must be one of {SCHEDULERS}, got {name!r}")


def split_scheduler_settings(settings: dict[str, Any]) -> tuple[dict[str, Any], FlowScheduler]:
    """A preset's sampler settings -> (the pipeline's call defaults, the scheduler that their "scheduler" and "shift"
    choose; `DEFAULT_SCHEDULER` and `DEFAULT_SHIFT` where they name none)."""
    rest = {k: v for k, v in settings.items() if k not in SCHEDULER_SETTINGS}
    return rest, make_scheduler(settings.get("scheduler", DEFAULT_SCHEDULER), settings.get("shift", DEFAULT_SHIFT))


def scheduler_shift(scheduler: FlowScheduler) -> float:
    """The timestep shift of a flow-matching scheduler."""
    return float(scheduler.config[_shift_key(scheduler)])


def with_shift(scheduler: FlowScheduler, shift: float | None) -> FlowScheduler:
    """`scheduler` itself, or a new one of its class and config with timestep shift `shift` (None: unchanged)."""
    if shift is None or shift == scheduler_shift(scheduler):
        return scheduler
    return type(scheduler).from_config(scheduler.config, **{_shift_key(scheduler): float(shift)})


def _shift_key(scheduler: FlowScheduler) -> str:
    for cls, key in _SHIFT_KEY.items():
        if isinstance(scheduler, cls):
            return key
    raise InputError(f"the pipeline samples by flow matching; {type(scheduler).__name__} is not one of "
                     f"{[c.__name__ for c in _SHIFT_KEY]}")
