"""Text conditioning: a word-level tokenizer + small transformer (tiny scale) or umT5 from a local folder (full scale).

`encode_prompt(tokenizer, encoder, prompts)` works with both and returns `(B, L, D)` embeddings with padding
positions zeroed (as diffusers' Wan pipelines do). Empty prompts are valid (the unconditional branch of CFG).
Prompts longer than `max_length` tokens are truncated with a warning; prompts over `MAX_PROMPT_CHARS`
characters, or not valid UTF-8, raise `InputError`.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
import torch.nn as nn
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from more4d.errors import InputError
from more4d.models.placement import execution_device

PAD, UNK, EOS = "[PAD]", "[UNK]", "[EOS]"
PUNCTUATION = tuple(".,!?;:'\"-()")  # always in the vocabulary (the pre-tokenizer splits them off)
MAX_PROMPT_CHARS = 4096  # a prompt longer than this is a mistake (a pasted file), not a description
UMT5_MAX_LENGTH = 512  # Wan's text context (diffusers' Wan attention assumes 512 text tokens beside image tokens)

# Words of TrajScene-Synth captions and everyday motion descriptions; anything else maps to [UNK].
TINY_VOCAB: tuple[str, ...] = tuple(
    """a an the and while with of to in on at from into over under around toward towards away closer further by
    its it is are up down left right forward backward forwards backwards slowly quickly fast slow still gently
    moves move moving bounces bounce bouncing circles circle circling spins spin spinning pulses pulse pulsing
    stays stay rolls roll rolling slides slide sliding falls fall falling rises rise rising jumps jump flies fly
    walks walk walking runs run running turns turn turning rotates rotate rotating orbits orbit orbiting pans pan
    panning zooms zoom tilts tilt dolly truck pedestal approaches approach recedes recede shakes swings sways waves
    grows shrinks floats drifts camera ball box cube cylinder capsule sphere cone object objects scene ground floor
    wall sky person man woman dog cat car bird tree water wave waves red green blue yellow orange purple pink white
    black gray grey brown cyan magenta checker checkered striped stripes textured noisy small large big tiny two
    three one another other first second""".split()
)


def build_word_tokenizer(vocab_words: Iterable[str], max_length: int = 32) -> PreTrainedTokenizerFast:
    """A lowercase word-level tokenizer over `vocab_words` (+ [PAD] 0, [UNK] 1, [EOS] 2, punctuation), ending prompts
    with [EOS].

    Words are split on whitespace and punctuation. Save with `save_pretrained(folder)` beside the text encoder;
    reload with `transformers.AutoTokenizer.from_pretrained(folder)`.
    """
    vocab = {PAD: 0, UNK: 1, EOS: 2}
    for word in (*PUNCTUATION, *vocab_words):
        vocab.setdefault(word.lower(), len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase(),
                                           normalizers.Replace(Regex(r"\s+"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", special_tokens=[(EOS, vocab[EOS])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, unk_token=UNK, eos_token=EOS,
                                   model_max_length=max_length, padding_side="right")


class TinyTextEncoder(ModelMixin, ConfigMixin):
    r"""Token embedding + learned positions + a small pre-norm transformer encoder: ids `(B, L)` -> `(B, L, text_dim)`."""

    @register_to_config
    def __init__(self, vocab_size: int = 512, max_length: int = 32, dim: int = 128, num_layers: int = 2,
                 num_heads: int = 4, ffn_dim: int = 512, text_dim: int = 128) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos_embed = nn.Parameter(torch.randn(1, max_length, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, num_heads, ffn_dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, text_dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if input_ids.shape[1] > self.config.max_length:
            raise InputError(f"`input_ids` has {input_ids.shape[1]} tokens, max {self.config.max_length}")
        x = self.embed(input_ids) + self.pos_embed[:, : input_ids.shape[1]]
        pad = None if attention_mask is None else ~attention_mask.bool()
        x = self.encoder(x, src_key_padding_mask=pad)
        return self.proj(self.norm(x))


def check_prompts(prompts: str | bytes | Sequence[str | bytes]) -> list[str]:
    """Prompts as a list of str; bytes must be UTF-8. Raises `InputError` for non-text, bad UTF-8 or huge prompts."""
    if isinstance(prompts, (str, bytes)):
        prompts = [prompts]
    out = []
    for i, p in enumerate(prompts):
        if isinstance(p, bytes):
            try:
                p = p.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"prompt {i} is not valid UTF-8: {exc}") from exc
        if not isinstance(p, str):
            raise InputError(f"prompt {i} must be a string, got {type(p).__name__}")
        try:
            p.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates, e.g. from a mis-decoded file name
            raise InputError(f"prompt {i} is not valid UTF-8 text: {exc}") from exc
        if len(p) > MAX_PROMPT_CHARS:
            raise InputError(f"prompt {i} has {len(p)} characters; at most {MAX_PROMPT_CHARS} are accepted")
        out.append(p)
    if not out:
        raise InputError("`prompts` is empty; pass at least one prompt (\"\" is a valid unconditional prompt)")
    return out


def default_max_length(tokenizer: PreTrainedTokenizerBase, encoder: nn.Module) -> int:
    """32-ish for TinyTextEncoder (its `max_length`), 512 for umT5 (Wan's text context)."""
    if isinstance(encoder, TinyTextEncoder):
        return encoder.config.max_length
    limit = tokenizer.model_max_length
    return UMT5_MAX_LENGTH if limit is None or limit > 10**6 else min(int(limit), UMT5_MAX_LENGTH)


def encode_prompt(tokenizer: PreTrainedTokenizerBase, encoder: nn.Module, prompts: str | Sequence[str],
                  max_length: int | None = None, device: str | torch.device | None = None) -> torch.Tensor:
    """Text embeddings `(B, max_length, D)` for `prompts`; tokens after each prompt's end are zero.

    `encoder` is a `TinyTextEncoder` or a transformers encoder (`UMT5EncoderModel`); `device` defaults to
    the encoder's.
    """
    prompts = check_prompts(prompts)
    max_length = max_length or default_max_length(tokenizer, encoder)
    param = next(encoder.parameters())
    device = execution_device(encoder) if device is None else torch.device(device)
    full = tokenizer(prompts, padding=False, truncation=False)["input_ids"]
    for i, ids in enumerate(full):
        if len(ids) > max_length:
            warnings.warn(f"prompt {i} has {len(ids)} tokens; truncated to {max_length}", stacklevel=2)
    batch = tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True,
                      return_attention_mask=True, return_tensors="pt")
    ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    with torch.set_grad_enabled(torch.is_grad_enabled() and param.requires_grad):
        out = encoder(input_ids=ids, attention_mask=mask)
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out
    return hidden * mask[..., None].to(hidden.dtype)


def load_umt5(folder: str | os.PathLike, *, device: str | torch.device = "cpu",
              dtype: torch.dtype = torch.float32) -> tuple[PreTrainedTokenizerBase, nn.Module]:
    """(tokenizer, `UMT5EncoderModel`) from a local folder holding both (or `tokenizer/` + `text_encoder/`).

    Never downloads: a missing file raises `InputError`.
    """
    from transformers import AutoTokenizer, UMT5EncoderModel

    folder = Path(folder)
    enc_dir = folder / "text_encoder" if (folder / "text_encoder").is_dir() else folder
    tok_dir = folder / "tokenizer" if (folder / "tokenizer").is_dir() else folder
    if not (enc_dir / "config.json").is_file():
        raise InputError(f"umT5 folder {str(enc_dir)!r} has no config.json")
    if not any((tok_dir / f).is_file() for f in ("tokenizer.json", "spiece.model")):
        raise InputError(f"umT5 tokenizer folder {str(tok_dir)!r} has no tokenizer.json or spiece.model")
    tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
    encoder = UMT5EncoderModel.from_pretrained(enc_dir, torch_dtype=dtype, local_files_only=True).to(device)
    return tokenizer, encoder.eval()


def tiny_text_encoder_for(tokenizer: PreTrainedTokenizerBase, **config) -> TinyTextEncoder:
    """A TinyTextEncoder sized for `tokenizer` (vocab rounded up to a multiple of 64)."""
    vocab = int(math.ceil(len(tokenizer) / 64) * 64)
    return TinyTextEncoder(vocab_size=vocab, max_length=tokenizer.model_max_length, **config)
