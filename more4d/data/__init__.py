"""TrajScene data: the more4d clip layout, the seed's pickles, TrajScene-Synth, the video builder, datasets."""

from more4d.data.formats import NovelView, TrajClip, read_clip, read_clip_header, write_clip
from more4d.data.synth import (
    SynthBatch,
    SynthConfig,
    generate_batch,
    generate_clips,
    generate_siblings,
    sample_captions,
)

__all__ = ["NovelView", "SynthBatch", "SynthConfig", "TrajClip", "generate_batch", "generate_clips", "generate_siblings",
           "read_clip", "read_clip_header", "sample_captions", "write_clip"]
