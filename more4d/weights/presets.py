"""Model presets: where each component's weights live and how to load them.

- "tiny": the embedded default (`assets/weights/tiny`, written by `save_random_tiny` or by train/).
- "moge4d": the authors' released MoGe4D weights in their native layout, as `more4d weights download` fetches
  them (into `--dir DIR`, then `--weights DIR`; or into the Hugging Face cache, then no `--weights`); loaders in
  `more4d.weights.released`.
- "wan2.1-14b": the same scale from a local folder in more4d's own layout (`--weights DIR`):

    DIR/
      vae/                 AutoencoderKLWan (Wan2.1 VAE)          config.json, diffusion_pytorch_model.safetensors
      motion_vae/          MotionVAE (VAE + motion adaptors)       config.json, diffusion_pytorch_model.safetensors
      text_encoder/        UMT5EncoderModel (umT5-XXL)             config.json, model.safetensors
      tokenizer/           umT5 tokenizer                          tokenizer.json (or spiece.model)
      depth/               UniDepth-V2 (optional: else pass depth) config.json, model.safetensors
      strag/transformer/   STraGTransformer (MPM + MAdaNorm)       config.json, diffusion_pytorch_model.safetensors
      strag/motion_encoder/ OmniMAE ViT-B/16                       vitb_pretrain.torch
      vism/transformer/    Wan2.1-Fun-14B-InP                      config.json, diffusion_pytorch_model.safetensors
      vism/lora.safetensors optional ViSM LoRA (more4d or kohya)   merged at load
      vism/image_encoder/  CLIPVisionModel (ViT-H/14)              config.json, model.safetensors
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from more4d.errors import InputError
from more4d.weights import layout as released
from more4d.weights.layout import ReleasedLayout

logger = logging.getLogger(__name__)
STATUS_FILE = "status.json"  # optional: {"untrained"|"below_bar": [component folders], "report": path}

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_DIR = REPO_ROOT / "assets" / "weights" / "tiny"

DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json")
TRANSFORMERS_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "half": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Component:
    """One model folder (or file) of a preset: `files` lists required files in it, each as a tuple of alternatives;
    with no `files`, `subfolder` names a file that must exist. The loader gets `root / subfolder`."""

    name: str
    subfolder: str
    loader: str  # "module:callable(folder, device, dtype) -> component"
    files: tuple[tuple[str, ...], ...] = (("config.json",), DIFFUSERS_WEIGHTS)
    optional: bool = False

    def missing(self, root: Path | ReleasedLayout) -> list[str]:
        folder = root / self.subfolder
        if not self.files:
            return [] if folder.is_file() else [self.subfolder]
        prefix = f"{self.subfolder}/" if self.subfolder else ""
        return [f"{prefix}{alts[0]}" + (f" (or {', '.join(alts[1:])})" if len(alts) > 1 else "")
                for alts in self.files if not any((folder / a).is_file() for a in alts)]

    def load(self, root: Path | ReleasedLayout, device: torch.device, dtype: torch.dtype) -> Any:
        module, attr = self.loader.split(":")
        fn: Callable[..., Any] = getattr(importlib.import_module(module), attr)
        return fn(root / self.subfolder, device=device, dtype=dtype)


@dataclass(frozen=True)
class Preset:
    """A model scale: its components, default folder, working resolution and sampling defaults.

    `released`: the weights are the authors' download (`ReleasedLayout`), not one folder. `vism_lora`: a LoRA file
    (relative to the weights root) merged into the ViSM transformer when present.
    """

    name: str
    components: tuple[Component, ...]
    default_dir: Path | None
    resolution: tuple[int, int]  # (H, W) the models were trained at; inputs are bucketed to about this area
    strag_defaults: dict[str, Any] = field(default_factory=dict)
    vism_defaults: dict[str, Any] = field(default_factory=dict)
    fps: float = 8.0
    vism_lora: str | None = None
    released: bool = False
    vae_tiling: bool = False  # pipelines built from the preset encode/decode in spatial tiles (less GPU memory)

    def component(self, name: str) -> Component:
        for c in self.components:
            if c.name == name:
                return c
        raise InputError(f"preset {self.name!r} has no component {name!r}")


_L = "more4d.weights.presets"
_COMMON = (
    Component("vae", "vae", f"{_L}:load_diffusers_vae"),
    Component("motion_vae", "motion_vae", f"{_L}:load_motion_vae"),
    Component("vism_transformer", "vism/transformer", f"{_L}:load_vism_transformer"),
    Component("vism_image_encoder", "vism/image_encoder", f"{_L}:load_clip_vision",
              files=(("config.json",), TRANSFORMERS_WEIGHTS)),
)
_FULL_SCALE = dict(
    resolution=(368, 512),
    strag_defaults=dict(num_frames=49, num_inference_steps=50, guidance_scale=6.0, shift=5.0, scheduler="euler"),
    # the authors' "Flow" sampler takes its shift from their yaml (5.0) for both stages; their --shift 3.0 is inert
    vism_defaults=dict(num_inference_steps=50, guidance_scale=6.0, shift=5.0),
    vae_tiling=True,  # untiled, the 49x368x512 Wan VAE runs both stages out of an 80 GB card (bench/RESULTS.md)
)
_R, _E = "more4d.weights.released", "more4d.weights.wan_encoders"
PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        components=_COMMON + (
            Component("tokenizer", "tokenizer", f"{_L}:load_tokenizer", files=(("tokenizer.json",),)),
            Component("text_encoder", "text_encoder", f"{_L}:load_tiny_text_encoder"),
            Component("depth", "depth", f"{_L}:load_tiny_depth"),
            Component("transformer", "strag/transformer", f"{_L}:load_strag_transformer"),
            Component("motion_encoder", "strag/motion_encoder", f"{_L}:load_tiny_motion_encoder"),
        ),
        default_dir=TINY_DIR,
        resolution=(256, 256),
        # 8 Euler steps without guidance: lower held-out motion error than 2 steps, as low as 4; guidance makes
        # the tiny model's motion larger and worse; its moving regions end inside photos' objects, which the
        # surface smoothing keeps whole (assets/weights/tiny/README.md)
        strag_defaults=dict(num_frames=17, num_inference_steps=8, guidance_scale=1.0, shift=5.0, scheduler="euler",
                            surface_smoothing=100),
        # holes by push-pull: the tiny RGB VAE reconstructs frames at ~18 dB, below what a pixel-space fill reaches in the
        # holes (assets/weights/tiny/README.md, "4D-ViSM"); `inpaint="model"` runs the tiny diffusion model
        vism_defaults=dict(num_inference_steps=4, guidance_scale=1.0, shift=3.0, inpaint="pushpull", composite=True),
    ),
    "moge4d": Preset(
        name="moge4d",
        components=(
            Component("vae", released.WAN_VAE, f"{_R}:load_wan_vae", files=()),
            Component("motion_vae", "", f"{_R}:load_released_motion_vae",
                      files=((released.FINETUNED_VAE,), (released.ENCODER_PROMPT,), (released.DECODER_PROMPT,))),
            Component("tokenizer", released.TOKENIZER, f"{_L}:load_tokenizer",
                      files=(("tokenizer.json", "spiece.model"),)),
            Component("text_encoder", released.UMT5, f"{_E}:load_wan_umt5", files=()),
            Component("depth", released.UNIDEPTH, f"{_L}:load_unidepth", files=(("config.json",), ("model.safetensors",)),
                      optional=True),
            Component("transformer", released.STRAG_DIR, f"{_R}:load_released_strag",
                      files=(DIFFUSERS_WEIGHTS,)),
            Component("motion_encoder", released.STRAG_DIR, f"{_R}:load_released_omnimae",
                      files=(DIFFUSERS_WEIGHTS,)),
            Component("vism_transformer", released.VISM_BASE, f"{_L}:load_vism_transformer",
                      files=(("config.json",), DIFFUSERS_WEIGHTS)),
            Component("vism_image_encoder", released.CLIP, f"{_E}:load_wan_clip_vision", files=()),
        ),
        default_dir=None,
        vism_lora=released.LORA_FILE,
        released=True,
        **_FULL_SCALE,
    ),
    "wan2.1-14b": Preset(
        name="wan2.1-14b",
        components=_COMMON + (
            Component("tokenizer", "tokenizer", f"{_L}:load_tokenizer", files=(("tokenizer.json", "spiece.model"),)),
            Component("text_encoder", "text_encoder", f"{_L}:load_umt5", files=(("config.json",), TRANSFORMERS_WEIGHTS)),
            Component("depth", "depth", f"{_L}:load_unidepth", files=(("config.json",), ("model.safetensors",)),
                      optional=True),
            Component("transformer", "strag/transformer", f"{_L}:load_strag_transformer"),
            Component("motion_encoder", "strag/motion_encoder", f"{_L}:load_omnimae",
                      files=(("vitb_pretrain.torch",),)),
        ),
        default_dir=None,
        vism_lora="vism/lora.safetensors",
        **_FULL_SCALE,
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise InputError(f"unknown model preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`device` as a torch.device that exists on this machine ("cuda" without a GPU raises `InputError`)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise InputError(f"`device` must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"`device` {str(dev)!r} requested but CUDA is not available on this machine; use 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"`device` {str(dev)!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise InputError("`device` 'mps' requested but MPS is not available on this machine")
    elif dev.type != "cpu":
        raise InputError(f"`device` must be 'cpu', 'cuda' or 'mps', got {device!r}")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Weights dtype: default bf16 on CUDA, fp32 elsewhere; fp16 on CPU raises `InputError` (unsupported ops)."""
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        if dtype.lower() not in DTYPES:
            raise InputError(f"`dtype` must be one of {sorted(DTYPES)}, got {dtype!r}")
        dtype = DTYPES[dtype.lower()]
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise InputError(f"`dtype` must be float32, float16 or bfloat16, got {dtype}")
    if dtype == torch.float16 and device.type == "cpu":
        raise InputError("`dtype` float16 is not supported on CPU (slow or missing kernels); use float32 or bfloat16")
    return dtype


def weights_folder(preset: Preset, weights_dir: str | os.PathLike | None) -> Path | ReleasedLayout:
    """The preset's weights root: a folder, or for the released preset the downloaded repositories."""
    if preset.released:
        return ReleasedLayout.find(weights_dir)
    if weights_dir is None:
        if preset.default_dir is None:
            raise InputError(f"model preset {preset.name!r} needs a local weights folder (--weights DIR); "
                             f"layout: see more4d/weights/presets.py")
        return preset.default_dir
    return Path(weights_dir)


def check_weights(preset: str, weights_dir: str | os.PathLike | None = None,
                  only: Iterable[str] | None = None) -> Path | ReleasedLayout:
    """Return the weights folder after checking that every required file exists.

    Raises `InputError` listing each missing file (relative to the folder).
    """
    spec = get_preset(preset)
    root = weights_folder(spec, weights_dir)
    if isinstance(root, Path) and not root.is_dir():
        raise InputError(f"weights folder {str(root)!r} for preset {spec.name!r} does not exist"
                         + ("; check the path" + (", or leave out --weights to use the shipped tiny weights"
                                                   if spec.name == "tiny" else "")
                            if weights_dir is not None else "; the shipped weights belong there: restore them "
                            "from the repository (git checkout assets/weights)"))
    wanted = set(only) if only is not None else None
    missing = [f for c in spec.components if (wanted is None or c.name in wanted) and not c.optional
               for f in c.missing(root)]
    if missing:
        where = f"{root.missing_root}" if isinstance(root, ReleasedLayout) else str(root)
        hint = f"; {root.download_hint()}" if isinstance(root, ReleasedLayout) else ""
        raise InputError(f"weights for preset {spec.name!r} in {where!r} are missing {len(missing)} file(s){hint}:"
                         "\n  " + "\n  ".join(missing))
    return root


def load_components(preset: str = "tiny", weights_dir: str | os.PathLike | None = None, *,
                    device: str | torch.device | None = "cpu", dtype: str | torch.dtype | None = None,
                    only: Iterable[str] | None = None) -> dict[str, Any]:
    """Load a preset's components (`only`: a subset by name) as `{name: model}`, eval mode, on `device`.

    Optional components whose files are absent come back as None (e.g. no UniDepth: pass `depth=` instead).
    """
    spec = get_preset(preset)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    root = check_weights(preset, weights_dir, only)
    out: dict[str, Any] = {}
    for c in spec.components:
        if only is not None and c.name not in set(only):
            continue
        if c.optional and c.missing(root):
            out[c.name] = None
            continue
        model = c.load(root, dev, dt)
        if isinstance(model, torch.nn.Module):
            model.eval().requires_grad_(False)
        out[c.name] = model
    if isinstance(root, Path):
        _warn_flagged(root, [c.subfolder for c in spec.components if c.name in out and out[c.name] is not None])
    return out


def _read_status(root: str | os.PathLike) -> dict[str, Any]:
    file = Path(root) / STATUS_FILE
    return json.loads(file.read_text()) if file.is_file() else {}


def flagged_components(root: str | os.PathLike, flag: str = "untrained") -> list[str]:
    """Component folders listed under `flag` in the weights folder's `status.json`: "untrained" (random
    placeholders) or "below_bar" (trained, but short of their quality bar in the training report)."""
    return list(_read_status(root).get(flag, []))


_FLAG_MESSAGES = {"untrained": "are untrained placeholders (random init)",
                  "below_bar": "are trained but below their quality bar"}


def _warn_flagged(root: Path, loaded: list[str]) -> None:
    status = _read_status(root)
    for flag, what in _FLAG_MESSAGES.items():
        flagged = [p for p in status.get(flag, []) if p in loaded]
        if flagged:
            logger.warning("weights in %s %s: %s; outputs depending on them are not reliable. See %s", root, what,
                           ", ".join(flagged), status.get("report", ""))


# -- loaders: `fn(folder, device, dtype)` -----------------------------------------------------------------------

def _from_pretrained(cls: Any, folder: Path, device: torch.device, dtype: torch.dtype) -> Any:
    return cls.from_pretrained(folder, torch_dtype=dtype, local_files_only=True).to(device)


def load_diffusers_vae(folder: Path, device: torch.device, dtype: torch.dtype) -> Any:
    from diffusers import AutoencoderKLWan

    # the Wan VAE runs in fp32 on CPU; bf16 is fine on GPU
    return _from_pretrained(AutoencoderKLWan, folder, device, dtype)


def load_motion_vae(folder: Path, device: torch.device, dtype: torch.dtype) -> Any:
    from more4d.models.motion_vae import MotionVAE

    return _from_pretrained(MotionVAE, folder, device, dtype)


def load_strag_transformer(folder: Path, device: torch.device, dtype: torch.dtype) -> Any:
    from more4d.models.strag_transformer import STraGTransformer

    return _from_pretrained(STraGTransformer, folder, device, dtype)


def load_tiny_motion_encoder(folder: Path, device: torch.device, dtype: torch.dtype) -> Any:
    from more4d.models.motion_features import TinyMotionEncoder

    return _from_pretrained(TinyMotionEncoder, folder, device, dtype)


def load_omnimae(folder: Path, device: torch.device, dtype: torch.dtype) -> Any:
    from more4d.models.motion_features import OmniMAEViT

    return OmniMAEViT.from_omnimae_checkpoint(folder / "vitb_pretrain.torch").to(device=device, dtype=dtype)


def load_tiny_text_encoder(folder: Path, device: torch.device, dtype: torch.dtype) -> Any:
    from more4d.models.text_encoder import TinyTextEncoder

    return _from_pretrained(TinyTextEncoder, folder, device, dtype)


def load_umt5(folder: Path, device: torch.device, dtype: torch.dtype) -> Any:
    from transformers import UMT5EncoderModel

    return _from_pretrained(UMT5EncoderModel, folder, device, dtype)


def load_tokenizer(folder: Path, device: torch.device, dtype: torch.dtype) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def load_clip_vision(folder: Path, device: torch.device, dtype: torch.dtype) -> Any:
    from transformers import CLIPVisionModel

    return _from_pretrained(CLIPVisionModel, folder, device, dtype)


def load_vism_transformer(folder: Path, device: torch.device, dtype: torch.dtype) -> Any:
    from more4d.models.vism import load_vism_transformer as load

    return load(folder, dtype=dtype, device=device)


def load_tiny_depth(folder: Path, device: torch.device, dtype: torch.dtype) -> Any:
    from more4d.depth import TinyDepthEstimator, TinyDepthNet

    return TinyDepthEstimator.from_net(_from_pretrained(TinyDepthNet, folder, device, dtype))


def load_unidepth(folder: Path, device: torch.device, dtype: torch.dtype) -> Any:
    from more4d.depth import UniDepthEstimator

    return UniDepthEstimator(folder, device=device)


# -- random tiny weights ----------------------------------------------------------------------------------------

# The tiny RGB VAE (`vae/`, shared by STraG conditions and ViSM; `motion_vae/` starts as its copy).
def save_random_tiny(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Write the whole tiny layout (docs/contracts.md) with seeded random weights, fp16 safetensors + configs.

    For tests and as the initialisation of train/. Returns the folder.
    """
    from more4d.depth import TinyDepthNet
    from more4d.models.builders import build_tiny_strag_components
    from more4d.models.vism import build_tiny_vism_components

    root = Path(folder)
    strag = build_tiny_strag_components(seed=seed)
    vism = build_tiny_vism_components(seed=seed)
    torch.manual_seed(seed)
    parts = {
        "vae": strag["vae"], "motion_vae": strag["motion_vae"], "text_encoder": strag["text_encoder"],
        "tokenizer": strag["tokenizer"], "depth": TinyDepthNet(), "strag/transformer": strag["transformer"],
        "strag/motion_encoder": strag["motion_encoder"], "vism/transformer": vism["transformer"],
        "vism/image_encoder": vism["image_encoder"],
    }
    for sub, part in parts.items():
        if isinstance(part, torch.nn.Module):
            for p in part.parameters():  # plain cast (ModelMixin.to warns about fp32-kept modules)
                p.data = p.data.to(torch.float16)
        part.save_pretrained(root / sub)
    return root


if __name__ == "__main__":  # python -m more4d.weights.presets [FOLDER]: random tiny weights
    import sys

    print(save_random_tiny(sys.argv[1] if len(sys.argv) > 1 else TINY_DIR))
