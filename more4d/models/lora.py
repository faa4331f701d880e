"""LoRA for the ViSM transformer through peft: add, save/load (safetensors), merge/unmerge, seed conversion.

- `add_lora(transformer, rank=128, alpha=64)` wraps every `nn.Linear` (488 at 14B) in a peft LoRA layer.
- `save_lora` / `load_lora`: one `.safetensors` file, peft key names (`blocks.0.attn1.to_q.lora_A.weight`), the
  peft config as JSON under the metadata key diffusers uses, so `transformer.load_lora_adapter(file)` reads it too.
  `load_lora` also accepts the authors' released kohya-style file (converted on the fly).
- `merge_lora(transformer, weight=0.55)`: W += weight * (alpha / rank) * (B @ A), computed in fp32, with a copy of
  the original weights kept (on CPU by default) so `unmerge_lora` restores them bit for bit.
- `convert_kohya_lora(state_dict, transformer)`: `lora_unet__<orig Wan module path with . -> _>` keys
  (`lora_down.weight [r, in]`, `lora_up.weight [out, r]`, `alpha` 0-d) -> peft state dict, with strict accounting.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model_state_dict, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from safetensors import safe_open
from safetensors.torch import save_file

from more4d.errors import InputError
from more4d.io import atomic_write
from more4d.models.wan_keys import diffusers_to_original_key

DEFAULT_RANK = 128
DEFAULT_ALPHA = 64
DEFAULT_MERGE_WEIGHT = 0.55
ADAPTER_NAME = "vism"
METADATA_KEY = "lora_adapter_metadata"  # diffusers' LORA_ADAPTER_METADATA_KEY
KOHYA_PREFIX = "lora_unet__"


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Names of every `nn.Linear` in `model` (the default LoRA targets), in module order."""
    return [name for name, m in model.named_modules() if type(m) is torch.nn.Linear]


def add_lora(transformer: torch.nn.Module, *, rank: int = DEFAULT_RANK, alpha: float = DEFAULT_ALPHA,
             target_modules: list[str] | None = None, adapter_name: str = ADAPTER_NAME,
             init_lora_weights: bool = True) -> LoraConfig:
    """Add a LoRA adapter (peft) on `target_modules` (default: all Linear layers). B starts at zero."""
    if rank < 1 or alpha <= 0:
        raise InputError(f"LoRA rank must be >= 1 and alpha > 0, got rank={rank}, alpha={alpha}")
    targets = linear_module_names(transformer) if target_modules is None else list(target_modules)
    if not targets:
        raise InputError("no LoRA target modules: the model has no Linear layer")
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights=init_lora_weights)
    transformer.add_adapter(config, adapter_name=adapter_name)
    return config


def save_lora(transformer: torch.nn.Module, path: str | os.PathLike, *, adapter_name: str = ADAPTER_NAME,
              dtype: torch.dtype | None = None) -> Path:
    """Write the adapter's weights (peft names) and config to one `.safetensors` file, atomically."""
    config = _peft_config(transformer, adapter_name)
    state = {k: (v if dtype is None else v.to(dtype)).detach().cpu().contiguous()
             for k, v in get_peft_model_state_dict(transformer, adapter_name=adapter_name).items()}
    meta = {k: sorted(v) if isinstance(v, set) else v for k, v in config.to_dict().items()}
    with atomic_write(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", METADATA_KEY: json.dumps(meta, sort_keys=True)})
    return Path(path)


def load_lora(transformer: torch.nn.Module, path: str | os.PathLike, *, adapter_name: str = ADAPTER_NAME,
              strict: bool = True) -> LoraConfig:
    """Load a LoRA file written by `save_lora`, or the authors' kohya-style ViSM LoRA, as a new adapter.

    Every key of the file must land on a LoRA parameter; with `strict`, every target module must be covered.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"LoRA file {str(path)!r} does not exist")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}
    if any(k.startswith(KOHYA_PREFIX) for k in state):
        converted = convert_kohya_lora(state, transformer, strict=strict)
        config = converted.config
        state = converted.state_dict
    elif METADATA_KEY in meta:
        config = LoraConfig(**_config_kwargs(json.loads(meta[METADATA_KEY])))
    else:
        raise InputError(f"LoRA file {str(path)!r} has neither more4d/diffusers metadata nor kohya "
                         f"'{KOHYA_PREFIX}' keys; cannot tell its rank and alpha")
    transformer.add_adapter(config, adapter_name=adapter_name)
    result = set_peft_model_state_dict(transformer, state, adapter_name=adapter_name)
    missing = [k for k in result.missing_keys if "lora_" in k and f".{adapter_name}." in k]
    if result.unexpected_keys or (strict and missing):
        transformer.delete_adapters(adapter_name)
        raise InputError(f"LoRA file {str(path)!r} does not match the model: "
                         f"{len(result.unexpected_keys)} unexpected keys {result.unexpected_keys[:5]}, "
                         f"{len(missing)} missing {missing[:5]}")
    return config


def _peft_config(transformer: torch.nn.Module, adapter_name: str) -> LoraConfig:
    configs = getattr(transformer, "peft_config", {})
    if adapter_name not in configs:
        raise InputError(f"the model has no LoRA adapter named {adapter_name!r} (has {sorted(configs)})")
    return configs[adapter_name]


def _config_kwargs(meta: dict) -> dict:
    keys = ("r", "lora_alpha", "target_modules", "rank_pattern", "alpha_pattern", "use_rslora", "lora_bias",
            "use_dora", "init_lora_weights")
    return {k: meta[k] for k in keys if k in meta}


def _lora_layers(transformer: torch.nn.Module, adapter_name: str) -> dict[str, LoraLayer]:
    layers = {name: m for name, m in transformer.named_modules()
              if isinstance(m, LoraLayer) and adapter_name in m.lora_A}
    if not layers:
        raise InputError(f"the model has no LoRA adapter named {adapter_name!r}")
    return layers


@torch.no_grad()
def merge_lora(transformer: torch.nn.Module, weight: float = DEFAULT_MERGE_WEIGHT, *,
               adapter_name: str = ADAPTER_NAME, backup_device: str | torch.device = "cpu") -> None:
    """Fold the adapter into the base weights: W += weight * scaling * (B @ A), in fp32; adapters then disabled.

    The original weights are kept on `backup_device` so `unmerge_lora` restores them exactly.
    """
    if getattr(transformer, "_lora_merge_backup", None) is not None:
        raise InputError("a LoRA is already merged into this model: call unmerge_lora first")
    backup: dict[str, torch.Tensor] = {}
    for name, layer in _lora_layers(transformer, adapter_name).items():
        base = layer.get_base_layer().weight
        backup[name] = base.detach().to(backup_device, copy=True)
        down = layer.lora_A[adapter_name].weight.float()
        up = layer.lora_B[adapter_name].weight.float()
        delta = (up @ down) * (layer.scaling[adapter_name] * weight)
        base.copy_((base.float() + delta.to(base.device)).to(base.dtype))
    transformer._lora_merge_backup = backup
    transformer.disable_adapters()


@torch.no_grad()
def unmerge_lora(transformer: torch.nn.Module) -> None:
    """Restore the weights saved by `merge_lora` bit for bit and re-enable the adapters."""
    backup = getattr(transformer, "_lora_merge_backup", None)
    if backup is None:
        raise InputError("no LoRA is merged into this model")
    modules = dict(transformer.named_modules())
    for name, weight in backup.items():
        base = modules[name].get_base_layer().weight
        base.copy_(weight.to(base.device))
    transformer._lora_merge_backup = None
    transformer.enable_adapters()


@torch.no_grad()
def fuse_lora(transformer: torch.nn.Module, weight: float = DEFAULT_MERGE_WEIGHT, *,
              adapter_name: str = ADAPTER_NAME) -> None:
    """Fold the adapter into the base weights for good (as `merge_lora`, no backup kept) and drop the adapter
    layers: the model is a plain base model again, which `save_pretrained` writes as one."""
    merge_lora(transformer, weight, adapter_name=adapter_name, backup_device="meta")
    transformer._lora_merge_backup = None
    transformer.unload_lora()


# --- the authors' kohya-style ViSM LoRA (docs/method.md, "4D-ViSM LoRA") ---------------------------------------------


@dataclass
class ConvertedLoRA:
    """A kohya-style LoRA in peft form: `state_dict` (`{module}.lora_A.weight`/`.lora_B.weight`) and its config."""

    state_dict: dict[str, torch.Tensor]
    config: LoraConfig


def kohya_name(orig_module: str) -> str:
    """`blocks.0.self_attn.q` -> `lora_unet__blocks_0_self_attn_q` (the authors' lora_utils naming)."""
    return KOHYA_PREFIX + orig_module.replace(".", "_")


def kohya_table(transformer: torch.nn.Module) -> dict[str, str]:
    """kohya name -> diffusers module name for every Linear of `transformer` (the seed's 488 targets at 14B),
    through the base Wan key table (`more4d.models.wan_keys`)."""
    table = {}
    for name, module in transformer.named_modules():
        if type(module) is not torch.nn.Linear or ".lora_" in name:
            continue
        name = name.removesuffix(".base_layer")  # already wrapped by peft
        orig = diffusers_to_original_key(name + ".weight")
        if orig is not None:  # layers Wan does not have (e.g. STraG's MAdaNorm) cannot be named by a kohya file
            table[kohya_name(orig.removesuffix(".weight"))] = name
    if not table:
        raise InputError("the model has no Linear layer with an original Wan name; not a Wan transformer?")
    return table


def convert_kohya_lora(state_dict: dict[str, torch.Tensor], transformer: torch.nn.Module, *,
                       strict: bool = True) -> ConvertedLoRA:
    """Convert the authors' ViSM LoRA to peft form for `transformer` (diffusers naming), accounting for every key.

    Raises `InputError` listing keys that are unknown, incomplete (no down/up pair), of the wrong shape, and,
    with `strict`, Linear layers of the model the file does not cover.
    """
    table = kohya_table(transformer)
    modules = dict(transformer.named_modules())
    groups: dict[str, dict[str, torch.Tensor]] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        name, _, part = key.partition(".")
        if name not in table or part not in ("lora_down.weight", "lora_up.weight", "alpha"):
            unknown.append(key)
            continue
        groups.setdefault(name, {})[part] = value
    problems: list[str] = []
    if unknown:
        problems.append(f"{len(unknown)} unknown keys {sorted(unknown)[:5]}")
    out: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    alphas: dict[str, float] = {}
    for name, parts in sorted(groups.items()):
        target = table[name]
        if "lora_down.weight" not in parts or "lora_up.weight" not in parts:
            problems.append(f"{name}: needs lora_down.weight and lora_up.weight, has {sorted(parts)}")
            continue
        down, up = parts["lora_down.weight"], parts["lora_up.weight"]
        linear = modules[target]
        linear = linear.get_base_layer() if isinstance(linear, LoraLayer) else linear
        r = down.shape[0]
        if tuple(down.shape) != (r, linear.in_features) or tuple(up.shape) != (linear.out_features, r):
            problems.append(f"{name}: down {tuple(down.shape)} / up {tuple(up.shape)} do not fit {target} "
                            f"({linear.in_features} -> {linear.out_features})")
            continue
        ranks[target] = r
        alphas[target] = float(parts["alpha"]) if "alpha" in parts else float(r)
        out[f"{target}.lora_A.weight"] = down
        out[f"{target}.lora_B.weight"] = up
    if strict:
        uncovered = sorted(set(table.values()) - set(ranks))
        if uncovered:
            problems.append(f"{len(uncovered)} Linear layers not covered {uncovered[:5]}")
    if problems or not ranks:
        raise InputError("kohya LoRA does not match the ViSM transformer: " + ("; ".join(problems) or "no LoRA keys"))
    r0 = max(set(ranks.values()), key=list(ranks.values()).count)
    a0 = max(set(alphas.values()), key=list(alphas.values()).count)
    config = LoraConfig(r=r0, lora_alpha=a0, target_modules=sorted(ranks),
                        rank_pattern={k: v for k, v in ranks.items() if v != r0},
                        alpha_pattern={k: v for k, v in alphas.items() if v != a0})
    return ConvertedLoRA(out, config)


def to_kohya(converted: ConvertedLoRA, transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Inverse of `convert_kohya_lora`: peft state dict + config -> the authors' kohya-style keys."""
    inverse = {v: k for k, v in kohya_table(transformer).items()}
    cfg = converted.config
    out: dict[str, torch.Tensor] = {}
    for key, value in converted.state_dict.items():
        module, _, part = key.rpartition(".lora_")
        if module not in inverse:
            raise InputError(f"LoRA key {key!r} names no Linear layer of the transformer")
        name = inverse[module]
        out[f"{name}.{'lora_down' if part == 'A.weight' else 'lora_up'}.weight"] = value
        out[f"{name}.alpha"] = torch.tensor(float(cfg.alpha_pattern.get(module, cfg.lora_alpha)))
    return out
