"""The shipped embedded default (`assets/weights/tiny`): the direction word of the prompt steers the motion.

Two held-out clips whose caption names one direction ("a cyan box bounces left", "a green cylinder moves right
while the camera moves forward"), as `more4d eval`'s prompt-swap test runs them: the moving tracks' image motion
follows the true direction, and the other way once the word is swapped.
"""

from __future__ import annotations

import pytest

from more4d.data import SynthConfig, generate_batch
from more4d.eval.evaluate import prompt_swap
from more4d.pipelines.strag import STraGPipeline
from more4d.weights import get_preset

SEEDS = (1_000_000_029, 1_000_000_021)


@pytest.fixture(scope="module")
def pipe() -> STraGPipeline:
    if not (get_preset("tiny").default_dir / "strag" / "transformer" / "config.json").is_file():
        pytest.skip("no shipped tiny weights in this checkout")
    pipe = STraGPipeline.from_preset("tiny", device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("seed", SEEDS)
def test_swapping_the_direction_word_flips_the_generated_motion(pipe, seed):
    H, W = pipe.resolution
    clip = generate_batch([seed], SynthConfig(height=H, width=W, novel_views=0)).clips()[0]
    image = clip.frames[0].float() / 255.0
    generate = lambda caption: pipe(image, caption, seed=0)  # noqa: E731
    swap = prompt_swap(generate, clip.caption, generate(clip.caption), clip.points.float(), clip.K.float())
    assert swap is not None and swap["follows"], swap
    assert min(abs(swap["orig"]), abs(swap["swapped"])) > 10  # pixels of mean image motion, both ways
