"""Where the released MoGe4D files lie once downloaded (no model code here: presets and the CLI import it).

Paths are `<repository>/<path in it>`; `ReleasedLayout` maps the repository names to local folders.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

STRAG_DIR = "MoGe4D/4D-STraG"
LORA_FILE = "MoGe4D/4D-ViSM/lora_diffusion_pytorch_model.safetensors"
ENCODER_PROMPT = "MoGe4D/VAE/encoder_prompt/pytorch_model.bin"
DECODER_PROMPT = "MoGe4D/VAE/decoder_prompt/pytorch_model.bin"
FINETUNED_VAE = "MoGe4D/VAE/vae/pytorch_model.bin"
WAN_VAE = "Wan2.1-Fun-V1.1-14B-Control/Wan2.1_VAE.pth"
UMT5 = "Wan2.1-Fun-V1.1-14B-Control/models_t5_umt5-xxl-enc-bf16.pth"
TOKENIZER = "Wan2.1-Fun-V1.1-14B-Control/google/umt5-xxl"
CLIP = "Wan2.1-Fun-V1.1-14B-Control/models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
VISM_BASE = "Wan2.1-Fun-V1.1-14B-InP"
UNIDEPTH = "unidepth-v2-vitl14"


class ReleasedLayout:
    """The downloaded repositories, `{name: folder}`; `layout / "MoGe4D/VAE"` resolves a path inside one.

    `layout / ""` is the layout itself, so preset components with an empty subfolder receive it whole. A repository
    that is absent resolves under `missing_root`, where nothing exists, so its files are reported missing by name.
    """

    def __init__(self, folders: dict[str, Path], missing_root: Path = Path("<not downloaded>")) -> None:
        self.folders = {name: Path(p) for name, p in folders.items()}
        self.missing_root = missing_root

    def __truediv__(self, path: str) -> Any:
        if not path:
            return self
        repo, _, rest = str(path).partition("/")
        folder = self.folders.get(repo, self.missing_root / repo)
        return folder / rest if rest else folder

    def __repr__(self) -> str:
        return f"ReleasedLayout({', '.join(f'{k}={v}' for k, v in self.folders.items())})"

    @classmethod
    def find(cls, weights_dir: str | os.PathLike | None) -> ReleasedLayout:
        """The repositories in `weights_dir` (a `more4d weights download --dir` folder) or, with None, in the
        Hugging Face cache; absent or incomplete ones are kept for `check_weights` to name what is missing."""
        from more4d.weights.download import RELEASED_REPOS, local_folder

        folders = {repo.name: local_folder(repo, weights_dir) for repo in RELEASED_REPOS}
        missing_root = Path(weights_dir) if weights_dir is not None else Path("<Hugging Face cache>")
        return cls({k: v for k, v in folders.items() if v is not None}, missing_root)

    def download_hint(self) -> str:
        where = "" if str(self.missing_root).startswith("<") else f" --dir {self.missing_root}"
        return f"run `more4d weights download{where}`"
