"""Stage-1 query features and ``z_t``, and stage-2 scores of (query, candidate) pairs.

Reference path (``kv_reuse=False``, ``src/validate_stage2.py``): one forward per query over its K candidates,
recomputing every candidate's cross-attention keys/values for every pair. Ours (``kv_reuse=True``): the pairs of
all queries are grouped by candidate image; per chunk of images the keys/values of every layer are computed once,
and the pairs of one image attend to them in one call (their queries stacked), in large pair batches sorted by caption
length (``length_batches``), so a batch pads to about its own captions' length rather than the longest of all. Both
give the same scores up to float rounding.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from transformers import BertTokenizer

from common.blip import CirStage1, CirStage2, tokenize
from common.runtime import progress


@dataclass
class Queries:
    """Encoded queries: caption tokens (unpadded, one tensor per query) and stage-1 outputs."""

    input_ids: list[torch.Tensor]
    features: torch.Tensor | None = None
    z_t: list[torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


def precision(device: torch.device, dtype: str = "fp32"):
    """bf16 autocast on CUDA for ``dtype='bf16'``; fp32 (the original) otherwise."""
    if dtype == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def encode_queries(stage1: CirStage1, tokenizer: BertTokenizer,
                   reference_tokens: Callable[[torch.Tensor], torch.Tensor], reference_idx: torch.Tensor,
                   captions: Sequence[str], *, batch_size: int = 32, with_z_t: bool = True,
                   desc: str = "stage-1 queries") -> Queries:
    """Stage-1 query features ``[Q, D]`` and (``with_z_t``) each query's ``z_t`` ``[L_i, H]``.

    ``reference_tokens(rows)`` returns the ViT tokens of gallery rows. Captions are tokenized in batches (padding
    'longest', no truncation) and cut back to their own length; padding is masked, so the values equal the
    original's one-query-at-a-time tokenization up to float rounding.
    """
    device = next(stage1.parameters()).device
    features, z_t, ids = [], [], []
    for start in progress(range(0, len(captions), batch_size), desc=desc):
        rows = reference_idx[start:start + batch_size]
        input_ids, mask = tokenize(tokenizer, list(captions[start:start + batch_size]), device=device)
        hidden = stage1(reference_tokens(rows), input_ids, mask, return_raw=True)
        features.append(torch.nn.functional.normalize(stage1.text_proj(hidden[:, 0]).float(), dim=-1))
        lengths = mask.sum(1).tolist()
        ids.extend(row[:n].cpu() for row, n in zip(input_ids, lengths))
        if with_z_t:
            z_t.extend(row[:n] for row, n in zip(hidden, lengths))
    feats = torch.cat(features) if features else torch.empty(0, stage1.text_proj.out_features, device=device)
    return Queries(ids, feats, z_t if with_z_t else None)


def _pad(rows: Sequence[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D id tensors (or 2-D ``z_t``) to one batch and return it with its 0/1 mask."""
    length = max(row.shape[0] for row in rows)
    out = rows[0].new_zeros((len(rows), length, *rows[0].shape[1:]))
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, :row.shape[0]] = row
        mask[i, :row.shape[0]] = 1
    return out.to(device), mask.to(device)


def length_batches(lengths: torch.Tensor, images: torch.Tensor, pair_batch: int,
                   by_length: bool = True) -> list[torch.Tensor]:
    """Positions ``0..P-1`` of P pairs split into batches of at most ``pair_batch``, each ordered by image (so the
    pairs of one image share one attention call).

    ``by_length``: the pairs are first sorted by caption length ``lengths`` (ties by image ``images``), so each
    batch holds captions of near length and pads little; otherwise they are taken image-major.
    """
    key = lengths * (int(images.max()) + 1) + images if by_length else images
    order = torch.sort(key, stable=True).indices
    return [batch[torch.sort(images[batch], stable=True).indices] for batch in order.split(pair_batch)]


@torch.no_grad()
def stage2_scores(stage2: CirStage2, queries: Queries, candidates: torch.Tensor,
                  candidate_tokens: Callable[[torch.Tensor], torch.Tensor], *, kv_reuse: bool = True,
                  pair_batch: int = 256, image_chunk: int = 32, by_length: bool = True, dtype: str = "fp32",
                  desc: str = "stage-2 re-ranking") -> torch.Tensor:
    """Stage-2 scores ``[Q, C]`` of query i with gallery row ``candidates[i, j]`` (logit 0 of ``cls_head``), fp32.

    ``candidate_tokens(rows)`` returns the ViT tokens of gallery rows. A (query, image) pair that occurs twice in
    a row is scored once. ``by_length`` (K/V reuse only): pair batches are formed by caption length
    (``length_batches``); the scores are the same up to float rounding.
    """
    device = next(stage2.parameters()).device
    scores = torch.empty(candidates.shape, dtype=torch.float32)
    if candidates.numel() == 0:
        return scores
    with precision(device, dtype):
        if not kv_reuse:
            for i in progress(range(len(queries)), desc=desc):
                rows = candidates[i]
                n = len(rows)
                z_t, ids = queries.z_t[i].unsqueeze(0), queries.input_ids[i].to(device).unsqueeze(0)
                mask = torch.ones_like(ids)
                scores[i] = stage2(z_t.expand(n, -1, -1), ids.expand(n, -1), mask.expand(n, -1),
                                   candidate_tokens(rows)).float().cpu()
            return scores
        pairs = torch.stack([torch.arange(len(queries)).repeat_interleave(candidates.shape[1]),
                             candidates.flatten()], 1)
        unique_pairs, inverse = torch.unique(pairs, dim=0, return_inverse=True)
        images = unique_pairs[:, 1].unique()
        caption_lengths = torch.tensor([len(ids) for ids in queries.input_ids])
        unique_scores = torch.empty(len(unique_pairs))
        for start in progress(range(0, len(images), image_chunk), desc=desc):
            chunk = images[start:start + image_chunk]
            kv = stage2.candidate_kv(candidate_tokens(chunk))
            local = torch.full((int(images.max()) + 1,), -1, dtype=torch.long)
            local[chunk] = torch.arange(len(chunk))
            selected = (local[unique_pairs[:, 1]] >= 0).nonzero().flatten()
            for positions in length_batches(caption_lengths[unique_pairs[selected, 0]],
                                            local[unique_pairs[selected, 1]], pair_batch, by_length):
                batch = selected[positions]
                query_rows = unique_pairs[batch, 0].tolist()
                ids, mask = _pad([queries.input_ids[q] for q in query_rows], device)
                z_t, _ = _pad([queries.z_t[q] for q in query_rows], device)
                rows = local[unique_pairs[batch, 1]].to(device)
                unique_scores[batch] = stage2.score_pairs(z_t, ids, mask, kv, rows).float().cpu()
    return unique_scores[inverse].view(candidates.shape)
