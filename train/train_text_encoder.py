"""Pretrain the tiny text encoder on TrajScene-Synth captions (the embedded default only).

    python train/train_text_encoder.py --config train/configs/tiny_text_encoder.yaml --export-dir assets/weights/tiny

At full scale umT5 comes pretrained: its output for a word already carries the words around it. The tiny
word-level encoder has no such pretraining, and at its random initialisation it is a bag of words: its learned
positions start 50x smaller than its token embeddings, so in "a white capsule moves closer and a green capsule
moves away" the output at "white" is the same (cosine 1.000) when the two motions are swapped, and 4D-STraG cannot
tell which object does what. This script gives it the structure of the captions with a local-context objective:
from each token's output, linear heads predict the tokens at offsets -context..+context (itself included), with
cross-entropy over real tokens. The heads are dropped at export; 4D-STraG and 4D-ViSM then keep `text_encoder/`
frozen, as they keep umT5 frozen at full scale.

Data: the captions of `data.pool_size` TrajScene-Synth seeds (drawn without rendering), batches by a seeded
permutation per epoch. Validation: context accuracy on held-out captions, and `val/swap_cos`, the cosine between
the outputs at the first object's colour and shape words when the first two objects' motions are swapped (1 = the
encoder cannot tell the captions apart there).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from more4d.data import sample_captions
from more4d.training.config import (
    VALIDATION_SEED_START,
    TrainConfig,
    add_common_args,
    check,
    config_from_args,
)
from more4d.training.data import StepBatchSampler, synth_config
from more4d.training.records import save_image_grid
from more4d.training.run import Run, entry, load_init, trainable

IGNORE = -100  # cross-entropy target of positions without a real token


@dataclass
class TextEncoderConfig(TrainConfig):
    context: int = 4  # tokens predicted on each side of every token

    def validate(self) -> None:
        super().validate()
        check(self.context >= 1, "context", ">= 1", self.context)
        check(self.preset == "tiny", "preset", "'tiny' (umT5 comes pretrained)", self.preset)
        check(self.data.source == "synth_pool", "data.source", "'synth_pool' (the captions of data.pool_size synth "
              "seeds)", self.data.source)
        check(self.data.train_seed_start + self.data.pool_size <= VALIDATION_SEED_START, "data.pool_size",
              f"seeds below the validation range ({VALIDATION_SEED_START})", self.data.pool_size)


class ContextHeads(nn.Module):
    """One linear head per offset: text embeddings `(B, L, D)` -> logits `(B, L, num_offsets, vocab)`."""

    def __init__(self, dim: int, vocab_size: int, num_offsets: int) -> None:
        super().__init__()
        self.shape = (num_offsets, vocab_size)
        self.linear = nn.Linear(dim, num_offsets * vocab_size)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.linear(embeds).unflatten(-1, self.shape)


def context_targets(ids: torch.Tensor, mask: torch.Tensor, offsets: list[int]) -> torch.Tensor:
    """`(B, L, len(offsets))`: the token at position i + k for every real token i, else IGNORE."""
    B, L = ids.shape
    real = torch.where(mask.bool(), ids, torch.full_like(ids, IGNORE))
    out = torch.full((B, L, len(offsets)), IGNORE, dtype=ids.dtype, device=ids.device)
    for j, k in enumerate(offsets):
        lo, hi = max(0, -k), min(L, L - k)
        out[:, lo:hi, j] = real[:, lo + k:hi + k]
    return out.masked_fill(~mask.bool()[..., None], IGNORE)


def context_loss(encoder: nn.Module, heads: ContextHeads, ids: torch.Tensor, mask: torch.Tensor,
                 offsets: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-entropy of the context heads on token ids / attention mask `(B, L)`, their logits
    `(B, L, len(offsets), vocab)` and targets `(B, L, len(offsets))`."""
    logits = heads(encoder(ids, mask)).float()
    targets = context_targets(ids, mask, offsets)
    loss = F.cross_entropy(logits.flatten(0, 2), targets.flatten(), ignore_index=IGNORE)
    return loss, logits, targets


def swap_first_motions(caption: str) -> str | None:
    """The caption with its first two objects' motion phrases swapped; None if they are the same or missing."""
    objects, sep, camera = caption.partition(" while ")
    phrases = [p.split(" ", 3) for p in objects.split(" and ")]
    if len(phrases) < 2 or len(phrases[0]) < 4 or len(phrases[1]) < 4 or phrases[0][3] == phrases[1][3]:
        return None
    phrases[0][3], phrases[1][3] = phrases[1][3], phrases[0][3]
    return " and ".join(" ".join(p) for p in phrases) + sep + camera


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    args = parser.parse_args(argv)
    cfg = config_from_args(TextEncoderConfig, args)
    run = Run(cfg, "text_encoder", argv)

    comps = load_init(cfg, "tokenizer", "text_encoder")
    tokenizer, encoder = comps["tokenizer"], comps["text_encoder"].train().requires_grad_(True)
    offsets = list(range(-cfg.context, cfg.context + 1))
    heads = ContextHeads(encoder.config.text_dim, encoder.config.vocab_size, len(offsets))
    params = trainable(encoder) + trainable(heads)
    optimizer = run.optimizer(params)
    encoder, heads, optimizer, lr_scheduler = run.prepare(encoder, heads, optimizer, run.lr_scheduler(optimizer))
    run.track({"text_encoder": encoder, "heads": heads}, no_export=("heads",))
    run.resume(args.resume)

    def tokenize(captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tok = tokenizer(captions, padding="max_length", max_length=encoder.config.max_length, truncation=True,
                        return_tensors="pt")
        return tok.input_ids.to(run.device), tok.attention_mask.to(run.device)

    synth = synth_config(cfg.data)
    pool = sample_captions(range(cfg.data.train_seed_start, cfg.data.train_seed_start + cfg.data.pool_size), synth)
    sampler = StepBatchSampler(len(pool), cfg.data.batch_size, run.step * cfg.gradient_accumulation_steps,
                               run.accelerator.process_index, run.accelerator.num_processes, cfg.seed)
    stream = (tokenize([pool[i] for i in index]) for index in sampler)
    val_captions = sample_captions(range(VALIDATION_SEED_START, VALIDATION_SEED_START + cfg.num_validation_clips),
                                   synth)
    pairs = [(c, s) for c in val_captions if (s := swap_first_motions(c)) is not None]

    def train_step(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return context_loss(encoder, heads, *batch, offsets)[0], {}

    def log_validation(step: int) -> dict[str, float]:  # Run.validate: eval mode, no grad, EMA weights
        model = run.models["text_encoder"]
        loss, logits, targets = context_loss(model, run.models["heads"], *tokenize(val_captions), offsets)
        real = targets != IGNORE
        acc = (logits.argmax(-1) == targets)[real].float().mean()
        metrics = {"val/loss": float(loss), "val/context_acc": float(acc)}
        if pairs:
            ids, mask = tokenize([c for pair in pairs for c in pair])
            out = model(ids, mask).unflatten(0, (len(pairs), 2))  # (P, 2, L, D)
            cos = F.cosine_similarity(out[:, 0], out[:, 1], dim=-1)  # (P, L)
            metrics["val/swap_cos"] = float(cos[:, 1:3].mean())  # the first object's colour and shape words
            n = int(mask[0].sum())
            grid = F.cosine_similarity(out[0, 0, :n, None], out[0, 1, None, :n], dim=-1).cpu().numpy()
            save_image_grid(run.out / "samples" / f"step_{step:07d}.png", [[np.kron(grid, np.ones((8, 8)))]],
                            col_titles=["cos(original, motions swapped)"], row_titles=[pairs[0][0][:40]])
        return metrics

    stop = run.fit(train_step, stream, optimizer, lr_scheduler, params, samples_per_batch=cfg.data.batch_size,
                   validate=log_validation)
    final = run.validate(log_validation)
    run.finish(stop, final)
    return 0


if __name__ == "__main__":
    entry(main)
