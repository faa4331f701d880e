"""TrajScene data: the more4d clip layout, the authors' pickles and TrajScene-60K archives, TrajScene-Synth, the
video builder, datasets."""

from more4d.data.formats import NovelView, TrajClip, read_clip, read_clip_header, write_clip
from more4d.data.seed_format import read_seed_clip, safe_load_pickle, seed_clip
from more4d.data.synth import (
    SynthBatch,
    SynthConfig,
    generate_batch,
    generate_clips,
    generate_siblings,
    sample_captions,
)
from more4d.data.trajscene60k import SampleError, TrajScene60K, TrajSceneSample

__all__ = ["NovelView", "SampleError", "SynthBatch", "SynthConfig", "TrajClip", "TrajScene60K", "TrajSceneSample",
           "generate_batch", "generate_clips", "generate_siblings", "read_clip", "read_clip_header", "read_seed_clip",
           "safe_load_pickle", "sample_captions", "seed_clip", "write_clip"]
