"""Can a text encoder tell which object does what? For held-out captions whose first two objects move differently,
the cosine between its outputs at the first object's colour and shape words, caption vs motions swapped (1 = it
cannot).

    python train/runs/tiny/session11/text_probe.py WEIGHTS_DIR [WEIGHTS_DIR ...]
"""

import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, "train")
from _lib.config import VALIDATION_SEED_START  # noqa: E402
from train_text_encoder import swap_first_motions  # noqa: E402

from more4d.data import SynthConfig, sample_captions  # noqa: E402
from more4d.models.text_encoder import encode_prompt  # noqa: E402
from more4d.weights import load_components  # noqa: E402


def main() -> None:
    captions = sample_captions(range(VALIDATION_SEED_START, VALIDATION_SEED_START + 512), SynthConfig())
    pairs = [(c, s) for c in captions if (s := swap_first_motions(c)) is not None]
    for folder in sys.argv[1:]:
        c = load_components("tiny", folder, device="cpu", only=("tokenizer", "text_encoder"))
        with torch.no_grad():
            out = encode_prompt(c["tokenizer"], c["text_encoder"], [x for p in pairs for x in p])
        out = out.unflatten(0, (len(pairs), 2))
        cos = F.cosine_similarity(out[:, 0, 1:3], out[:, 1, 1:3], dim=-1)
        print(f"{folder}: {len(pairs)} pairs, swap cos {float(cos.mean()):.4f} (min {float(cos.min()):.4f})")


if __name__ == "__main__":
    main()
