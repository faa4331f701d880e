"""The shipped embedded default (`assets/weights/tiny`): every file is there and holds weights, not a Git LFS
pointer; the direction word of the prompt steers the motion. Missing weights fail these tests, never skip them.

Two held-out clips whose caption names one direction ("a cyan box bounces left", "a green cylinder moves right
while the camera moves forward"), as `more4d eval`'s prompt-swap test runs them: the moving tracks' image motion
follows the true direction, and the other way once the word is swapped.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from more4d.data import SynthConfig, generate_batch
from more4d.eval.evaluate import prompt_swap
from more4d.pipelines.strag import STraGPipeline
from more4d.weights import check_weights, get_preset

SEEDS = (1_000_000_029, 1_000_000_021)
LFS_POINTER = b"version https://git-lfs.github.com/spec/"  # how every Git LFS pointer file starts


def lfs_pointers(root: Path) -> list[str]:
    """Files under `root` that are Git LFS pointers (a checkout without `git lfs pull`)."""
    def is_pointer(path: Path) -> bool:
        with path.open("rb") as f:
            return f.read(len(LFS_POINTER)) == LFS_POINTER

    return sorted(str(f.relative_to(root)) for f in root.rglob("*") if f.is_file() and is_pointer(f))


def test_lfs_pointers_are_found(tmp_path):
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\n"
                                                        "oid sha256:0\nsize 1\n")
    (tmp_path / "config.json").write_text("{}")
    assert lfs_pointers(tmp_path) == ["vae/model.safetensors"]


def test_shipped_weights_are_present_and_not_pointers():
    root = check_weights("tiny")  # raises, listing every missing file
    assert root == get_preset("tiny").default_dir and list(root.rglob("*.safetensors"))
    assert lfs_pointers(root) == [], "Git LFS pointers instead of weights: run `git lfs pull`"


@pytest.fixture(scope="module")
def pipe() -> STraGPipeline:
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
