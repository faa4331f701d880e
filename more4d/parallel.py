"""Multi-GPU inference: context parallelism (diffusers' Ulysses / ring attention) and CFG-parallel.

- **context**: every rank holds the whole transformer and 1/N of the video tokens; attention exchanges
  heads (Ulysses all-to-all) or key/value chunks (ring). This is diffusers' own `enable_parallelism` with the
  model's `_cp_plan` (`WanTransformer3DModel`, inherited by `STraGTransformer`).
- **cfg**: the transformer input batch (`[cond, uncond]` when a pipeline batches classifier-free guidance) is
  split over 2 ranks and the noise predictions are all-gathered, so each rank denoises identical latents.
- **both**: 2 CFG groups of N/2 context-parallel ranks each.

The command-line launcher is `more4d.commands.parallel` (`torchrun ... -m more4d.commands.parallel generate ...`).

From Python:

>>> info = init_distributed()                  # torchrun env; nccl on CUDA, gloo on CPU
>>> pipe = STraGPipeline.from_preset("wan2.1-14b", device=info.device, dtype="bf16")
>>> setup_parallel(pipe, info.world_size, "both")
>>> scene = pipe(image, prompt)                # same scene on every rank
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
from diffusers import ContextParallelConfig, ModelMixin
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.models._modeling_parallel import ContextParallelOutput
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from more4d.errors import InputError
from more4d.models.strag_transformer import STraGTransformer

logger = logging.getLogger(__name__)

ParallelMode = Literal["context", "cfg", "both"]
PARALLEL_MODES: tuple[str, ...] = ("context", "cfg", "both")
CFG_DEGREE = 2  # conditional + unconditional branch
# NVLink multicast stays off (the lent multi-GPU machines do not support it reliably).
MULTICAST_OFF_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
MESH_DIMS = ("cfg", "ring", "ulysses")
CFG_HOOK, MOTION_HOOK, CHECK_HOOK = "more4d_cfg_parallel", "more4d_motion_tokens", "more4d_token_check"


# 1) process group ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DistInfo:
    """This process in a torchrun job (world_size 1 without torchrun)."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the torchrun job described by RANK / LOCAL_RANK / WORLD_SIZE (a no-op without them).

    Backend: "nccl" on CUDA (one GPU per local rank), "gloo" on the CPU. NVLink multicast is switched off unless
    the environment already says otherwise (`MULTICAST_OFF_ENV`).
    """
    for key, value in MULTICAST_OFF_ENV.items():
        os.environ.setdefault(key, value)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise InputError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s): "
                             "launch at most one process per GPU (torchrun --nproc-per-node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if device.type == "cuda" else "gloo")
        dist.init_process_group(backend, device_id=device if backend == "nccl" else None)
    return DistInfo(rank, local_rank, world_size, device)


def is_main_process() -> bool:
    """True on rank 0, or when not distributed."""
    return not dist.is_initialized() or dist.get_rank() == 0


# 2) layout -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ParallelPlan:
    """How `parallel` ranks are used: `cfg` x `ring` x `ulysses` == world size."""

    mode: str
    cfg: int
    ring: int
    ulysses: int
    mesh: DeviceMesh | None

    @property
    def context(self) -> int:
        return self.ring * self.ulysses


def plan_degrees(parallel: int, mode: str, ring_degree: int = 1) -> tuple[int, int, int]:
    """`(cfg, ring, ulysses)` degrees for `parallel` ranks in `mode`; raises `InputError` for impossible layouts."""
    if mode not in PARALLEL_MODES:
        raise InputError(f"parallel mode must be one of {PARALLEL_MODES}, got {mode!r}")
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise InputError(f"`parallel` must be a positive number of processes, got {parallel!r}")
    if parallel == 1:
        return 1, 1, 1
    if mode == "cfg" and parallel != CFG_DEGREE:
        raise InputError(f"parallel mode 'cfg' uses exactly {CFG_DEGREE} processes (cond / uncond), got {parallel}; "
                         "use mode 'both' for more")
    if mode == "both" and parallel % CFG_DEGREE:
        raise InputError(f"parallel mode 'both' needs an even number of processes, got {parallel}")
    cfg = CFG_DEGREE if mode in ("cfg", "both") else 1
    context = parallel // cfg
    if ring_degree < 1 or context % ring_degree:
        raise InputError(f"`ring_degree` must divide the context-parallel degree {context}, got {ring_degree}")
    return cfg, ring_degree, context // ring_degree


def make_mesh(cfg: int, ring: int, ulysses: int, device_type: str) -> DeviceMesh:
    """A ("cfg", "ring", "ulysses") device mesh over all ranks (rank = (c * ring + r) * ulysses + u)."""
    return init_device_mesh(device_type, (cfg, ring, ulysses), mesh_dim_names=MESH_DIMS)


# 3) context parallel (diffusers) --------------------------------------------------------------------------------

@contextlib.contextmanager
def _count_cpu_as_device() -> Iterator[None]:
    """diffusers 0.42.1 `ModelMixin._resolve_parallel_config` picks its device as
    `rank % torch.accelerator.device_count()`, a division by zero on a machine without an accelerator. Count one
    device while it runs so the CPU (gloo) path works; a no-op where an accelerator exists."""
    if torch.accelerator.device_count() > 0:
        yield
        return
    count = torch.accelerator.device_count
    torch.accelerator.device_count = lambda: 1
    try:
        yield
    finally:
        torch.accelerator.device_count = count


class TokenCheckHook(ModelHook):
    """On the rotary embedding, before diffusers splits its output: the video tokens (latent grid / patch) must
    split evenly over the context ranks (diffusers asserts otherwise); say how to fix it."""

    def __init__(self, degree: int) -> None:
        super().__init__()
        self.degree = degree

    def pre_forward(self, module: torch.nn.Module, hidden_states: torch.Tensor, *args: Any, **kwargs: Any
                    ) -> tuple[tuple, dict]:
        grid = [n // p for n, p in zip(hidden_states.shape[2:], module.patch_size, strict=True)]
        if (grid[0] * grid[1] * grid[2]) % self.degree:
            raise InputError(f"{grid[0] * grid[1] * grid[2]} video tokens ({grid[0]} x {grid[1]} x {grid[2]}) do not "
                             f"split over {self.degree} context-parallel ranks; choose another resolution, frame count "
                             "or number of processes")
        return (hidden_states, *args), kwargs


class MotionTokenHook(ModelHook):
    """Context parallel for STraG's MAdaNorm (a block hook that runs after diffusers' sequence split).

    `STraGTransformer` gives every block `motion (B, R, P, C)`: SiLU'd MPM features per spatial token, one row per
    latent frame (R = frames) or one row shared by all (R = 1), which MAdaNorm broadcasts over the frames of the
    block's tokens. A rank's token chunk need not start on a frame boundary, so hand the block the rows of its
    own tokens instead, `(B, 1, n, C)` (MAdaNorm then modulates token by token).
    """

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config  # the ContextParallelConfig; its mesh exists once `enable_parallelism` has run

    def pre_forward(self, module: torch.nn.Module, hidden_states: torch.Tensor, *args: Any, **kwargs: Any
                    ) -> tuple[tuple, dict]:
        args = list(args)
        motion = kwargs.get("motion", args[3] if len(args) > 3 else None)
        if motion is None:
            return (hidden_states, *args), kwargs
        mesh = self.config._flattened_mesh
        n, rank = hidden_states.shape[1], dist.get_rank(mesh.get_group())
        token = torch.arange(rank * n, (rank + 1) * n, device=motion.device)
        per_frame = motion.shape[2]
        row = token // per_frame if motion.shape[1] > 1 else torch.zeros_like(token)
        local = motion[:, row, token % per_frame].unsqueeze(1)
        if "motion" in kwargs:
            kwargs["motion"] = local
        else:
            args[3] = local
        return (hidden_states, *args), kwargs


def context_parallel_plan(transformer: torch.nn.Module) -> dict[str, Any]:
    """The model's `_cp_plan`; for a STraGTransformer with reference tokens (seed-compat), the sequence is gathered
    after the last block instead of after `proj_out`, because its forward drops the reference tokens in between."""
    plan = dict(transformer._cp_plan)
    if getattr(transformer, "ref_conv", None) is not None:
        plan.pop("proj_out")
        plan[f"blocks.{len(transformer.blocks) - 1}"] = ContextParallelOutput(gather_dim=1, expected_dims=3)
    return plan


def enable_context_parallel(transformer: torch.nn.Module, ring: int, ulysses: int, mesh: DeviceMesh) -> None:
    """Shard `transformer`'s video tokens over `mesh` with diffusers' `enable_parallelism` and the model's
    `_cp_plan`. Ulysses needs the head count divisible by its degree; otherwise diffusers' "Ulysses anything" mode
    is used (stock Wan only). Ring attention needs a backend that returns the log-sum-exp (e.g. "flash",
    "_native_cudnn"); the default SDPA backend ("native") supports Ulysses only.
    """
    if getattr(transformer, "_cp_plan", None) is None:
        raise InputError(f"{type(transformer).__name__} has no context-parallel plan (`_cp_plan`)")
    heads, strag = transformer.config.num_attention_heads, isinstance(transformer, STraGTransformer)
    if heads % ulysses and (ring > 1 or strag):
        raise InputError(f"the Ulysses degree ({ulysses}) must divide the {heads} attention heads of "
                         f"{type(transformer).__name__}{' with ring attention' if ring > 1 else ''}")
    config = ContextParallelConfig(ring_degree=ring, ulysses_degree=ulysses, mesh=mesh["ring", "ulysses"],
                                   ulysses_anything=heads % ulysses != 0)
    if strag:  # registered first: these hooks run inside diffusers' split hooks
        for block in transformer.blocks:
            HookRegistry.check_if_exists_or_initialize(block).register_hook(MotionTokenHook(config), MOTION_HOOK)
    with _count_cpu_as_device():
        transformer.enable_parallelism(config=config, cp_plan=context_parallel_plan(transformer))
    if not config.ulysses_anything:  # registered last: runs before the split
        HookRegistry.check_if_exists_or_initialize(transformer.rope).register_hook(
            TokenCheckHook(ring * ulysses), CHECK_HOOK)


# 4) CFG parallel -------------------------------------------------------------------------------------------------

class CFGParallelHook(ModelHook):
    """Split the transformer's input batch over the ranks of `group`; all-gather the output batch.

    Registered last (outermost), it runs before diffusers' context-parallel hooks. A pipeline that batches CFG as
    `[cond, uncond]` thus runs each branch on its own rank and every rank gets both noise predictions.
    """

    def __init__(self, group: dist.ProcessGroup) -> None:
        super().__init__()
        self.group, self.size, self.index = group, dist.get_world_size(group), dist.get_rank(group)
        self.batch, self.split, self.warned = 0, False, False

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        self.batch = (kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]).shape[0]
        self.split = self.batch % self.size == 0
        if not self.split:
            if not self.warned:
                logger.warning("a batch of %d does not split over %d CFG ranks (CFG off, or the pipeline runs its "
                               "branches one by one): every rank computes all of it", self.batch, self.size)
                self.warned = True
            return args, kwargs
        return tuple(self._local(a) for a in args), {k: self._local(v) for k, v in kwargs.items()}

    def _local(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == self.batch:
            return value.chunk(self.size)[self.index]
        return value

    def post_forward(self, module: torch.nn.Module, output: Any) -> Any:
        if not self.split:
            return output
        if isinstance(output, torch.Tensor):
            return self._gather(output)
        if isinstance(output, tuple):
            return tuple(self._gather(o) if isinstance(o, torch.Tensor) else o for o in output)
        for key, value in output.items():  # a diffusers BaseOutput
            output[key] = self._gather(value) if isinstance(value, torch.Tensor) else value
        return output

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(self.size)]
        dist.all_gather(parts, x.contiguous(), group=self.group)
        return torch.cat(parts, dim=0)


def enable_cfg_parallel(transformer: torch.nn.Module, group: dist.ProcessGroup) -> None:
    """Run each share of `transformer`'s input batch on one rank of `group` (see `CFGParallelHook`)."""
    HookRegistry.check_if_exists_or_initialize(transformer).register_hook(CFGParallelHook(group), CFG_HOOK)


# 5) entry point --------------------------------------------------------------------------------------------------

def pipeline_transformer(pipe: Any) -> torch.nn.Module:
    """The diffusion transformer of `pipe` (a STraGPipeline / ViSMPipeline, or a transformer itself)."""
    if isinstance(pipe, ModelMixin):
        return pipe
    transformer = getattr(pipe, "transformer", None)
    if transformer is None:
        raise InputError(f"{type(pipe).__name__} has no `transformer` to parallelise")
    return transformer


def setup_parallel(pipe: Any, parallel: int, mode: ParallelMode = "context", *, ring_degree: int = 1
                   ) -> ParallelPlan:
    """Spread the transformer of `pipe` over `parallel` processes (== the torch.distributed world size).

    Args:
        pipe: STraGPipeline, ViSMPipeline, or a `WanTransformer3DModel` (subclass).
        parallel: number of processes; 1 does nothing.
        mode: "context" (sequence split), "cfg" (cond / uncond on 2 ranks) or "both" (2 x parallel/2).
        ring_degree: ranks of the context group that use ring attention (the rest Ulysses); default all Ulysses.
    Returns:
        the ParallelPlan (degrees and device mesh).
    """
    cfg, ring, ulysses = plan_degrees(parallel, mode, ring_degree)
    if parallel == 1:
        return ParallelPlan(mode, 1, 1, 1, None)
    if not dist.is_initialized() or dist.get_world_size() != parallel:
        found = dist.get_world_size() if dist.is_initialized() else 1
        raise InputError(f"--parallel {parallel} needs {parallel} processes, found {found}: launch with "
                         f"`torchrun --nproc-per-node {parallel} -m more4d.commands.parallel ...`")
    transformer = pipeline_transformer(pipe)
    mesh = make_mesh(cfg, ring, ulysses, next(transformer.parameters()).device.type)
    if ring * ulysses > 1:
        enable_context_parallel(transformer, ring, ulysses, mesh)
    if cfg > 1:
        enable_cfg_parallel(transformer, mesh.get_group("cfg"))
    return ParallelPlan(mode, cfg, ring, ulysses, mesh)
