"""Frozen-encoder features of a training batch: rows of a table computed once per run, or (no table) the frozen
encoder run at every step, as the CLIP4Cir scripts do. Both give the same features up to float rounding when the
encoder is in eval mode and preprocessing is deterministic."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

DEFAULT_CHUNK_SIZE = 32


class FrozenImages:
    """Image features of a batch field: rows of a precomputed ``table`` (the field holds row indices), or
    (``table=None``) the frozen ``encoder`` run on the images (the field holds pixels) in chunks of ``chunk_size``."""

    def __init__(self, encoder: Callable[[torch.Tensor], torch.Tensor], device: torch.device,
                 table: torch.Tensor | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE):
        self.encoder, self.device, self.table, self.chunk_size = encoder, device, table, chunk_size

    @torch.no_grad()
    def __call__(self, field: torch.Tensor) -> torch.Tensor:
        field = field.to(self.device, non_blocking=True)
        if self.table is not None:
            return self.table[field]
        return torch.cat([self.encoder(chunk) for chunk in field.split(self.chunk_size)])


class FrozenTexts:
    """Text features of a list of strings from a precomputed table over ``texts``, or (no table) the frozen encoder
    in one call."""

    def __init__(self, encoder: Callable[[list[str]], torch.Tensor], texts: Sequence[str] | None = None,
                 table: torch.Tensor | None = None):
        self.encoder, self.table = encoder, table
        self.rows = {text: row for row, text in enumerate(texts or [])}

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        if self.table is None:
            return self.encoder(list(texts))
        missing = [text for text in texts if text not in self.rows]
        if missing:
            raise KeyError(f"{len(missing)} caption(s) are not in the text-feature table, e.g. {missing[0]!r}")
        return self.table[torch.tensor([self.rows[text] for text in texts], device=self.table.device)]


@torch.no_grad()
def encode_texts(text_encoder: nn.Module | Callable[[list[str]], torch.Tensor], texts: Sequence[str],
                 batch_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """Raw text features [S, D] of ``texts`` in this process only, fp32."""
    return torch.cat([text_encoder(list(texts[i:i + batch_size])).float() for i in range(0, len(texts), batch_size)])
