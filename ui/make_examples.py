"""Write the app's example inputs: frame 0 of TrajScene-Synth clips + their captions.

    python -m ui.make_examples            # -> assets/examples/example_*.png + prompts.json

Held-out seeds (1_000_000+) so examples are not training clips; deterministic on any machine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from more4d.data.synth import SynthConfig, generate_clips
from more4d.io import atomic_write

DEFAULT_SEEDS = (1_000_003, 1_000_011, 1_000_024, 1_000_042, 1_000_077, 1_000_123)
OUT_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"


def make_examples(out_dir: Path = OUT_DIR, seeds: tuple[int, ...] = DEFAULT_SEEDS) -> list[dict[str, str]]:
    """Write one PNG per seed and `prompts.json` ([{"image", "prompt", "seed"}]); returns the index."""
    out_dir.mkdir(parents=True, exist_ok=True)
    config = SynthConfig(num_frames=17, height=256, width=256, novel_views=0)
    index = []
    for seed, clip in zip(seeds, generate_clips(seeds, config)):
        name = f"example_{seed}.png"
        with atomic_write(out_dir / name) as tmp:
            Image.fromarray(np.asarray(clip.frames[0])).save(tmp, format="PNG", optimize=True)
        index.append({"image": name, "prompt": clip.caption, "seed": seed})
    with atomic_write(out_dir / "prompts.json") as tmp:
        tmp.write_text(json.dumps(index, indent=2) + "\n")
    return index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    for item in make_examples(args.out):
        print(f"{item['image']}: {item['prompt']}")


if __name__ == "__main__":
    main()
