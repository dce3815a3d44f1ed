"""The twin multimodal encoder of Candidate-Reranking-CIR stage 2 (`src/nlvr_encoder.py`).

Two text streams run side by side. Stream 0 starts from ``z_t`` (stage-1's last hidden state, used directly as the
embedding output); stream 1 from the embeddings of the caption. Each stream has its own self-attention
(``self0``/``self1``, ``dense0``/``dense1``, ``LayerNormA``/``LayerNormB``) and its own cross-attention to its
image memory. The two cross-attention outputs are merged (average below ``merge_start_layer``, ``merge_layer`` on
their concatenation from it on) and the merged tensor is added to each stream's residual. The FFN is shared.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from common.blip.config import MedConfig
from common.blip.med import (
    MedEmbeddings,
    MedIntermediate,
    MedResidualOutput,
    MedSelfAttention,
    cross_attention_bias,
    init_bert_weights,
    self_attention_bias,
)

Pair = tuple[torch.Tensor, torch.Tensor]
MemoryKV = list[tuple[Pair, Pair]]
"""Per layer, the cross-attention ``(key, value)`` of stream 0 and of stream 1, each ``[C, heads, N, head_size]``."""


class TwinSelfOutput(nn.Module):
    """Per-stream projections and LayerNorms; with ``merge`` the projected streams are averaged (or passed through
    ``merge_layer`` when ``use_merge_layer``) and the one merged tensor feeds both residuals."""

    def __init__(self, cfg: MedConfig, merge: bool, use_merge_layer: bool = False):
        super().__init__()
        hidden = cfg.hidden_size
        self.dense0 = nn.Linear(hidden, hidden)
        self.dense1 = nn.Linear(hidden, hidden)
        self.LayerNormA = nn.LayerNorm(hidden, eps=cfg.layer_norm_eps)
        self.LayerNormB = nn.LayerNorm(hidden, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
        self.merge = merge
        self.merge_layer = nn.Linear(2 * hidden, hidden) if use_merge_layer else None

    def forward(self, contexts: Pair, inputs: Pair) -> Pair:
        h0, h1 = self.dense0(contexts[0]), self.dense1(contexts[1])
        if not self.merge:
            return (self.LayerNormA(self.dropout(h0) + inputs[0]), self.LayerNormB(self.dropout(h1) + inputs[1]))
        if self.merge_layer is not None:
            merged = self.merge_layer(torch.cat([h0, h1], dim=-1))
        else:
            merged = (h0 + h1) / 2
        merged = self.dropout(merged)
        return self.LayerNormA(merged + inputs[0]), self.LayerNormB(merged + inputs[1])


class TwinAttention(nn.Module):
    def __init__(self, cfg: MedConfig, is_cross_attention: bool, use_merge_layer: bool = False):
        super().__init__()
        self.self0 = MedSelfAttention(cfg, is_cross_attention)
        self.self1 = MedSelfAttention(cfg, is_cross_attention)
        self.output = TwinSelfOutput(cfg, merge=is_cross_attention, use_merge_layer=use_merge_layer)

    def forward(self, streams: Pair, biases: Pair, memories: Sequence[torch.Tensor | None] = (None, None)) -> Pair:
        contexts = (self.self0(streams[0], biases[0], memories[0]), self.self1(streams[1], biases[1], memories[1]))
        return self.output(contexts, streams)

    def memory_kv(self, memory: torch.Tensor) -> tuple[Pair, Pair]:
        """Both streams' keys and values of one image memory ``[C, N, W]``."""
        return self.self0.project_memory(memory), self.self1.project_memory(memory)

    def forward_kv(self, streams: Pair, kv: tuple[Pair, Pair], group: int = 1,
                   rows: torch.Tensor | None = None) -> Pair:
        """Cross-attention to precomputed keys/values (memory mask of ones): image-major pairs in groups of
        ``group`` (``MedSelfAttention.attend``) or pair p on image ``rows[p]`` (``attend_rows``)."""
        if rows is not None:
            contexts = (self.self0.attend_rows(streams[0], *kv[0], rows),
                        self.self1.attend_rows(streams[1], *kv[1], rows))
        else:
            contexts = (self.self0.attend(streams[0], *kv[0], None, group),
                        self.self1.attend(streams[1], *kv[1], None, group))
        return self.output(contexts, streams)


class TwinLayer(nn.Module):
    def __init__(self, cfg: MedConfig, use_merge_layer: bool):
        super().__init__()
        self.attention = TwinAttention(cfg, is_cross_attention=False)
        self.crossattention = TwinAttention(cfg, is_cross_attention=True, use_merge_layer=use_merge_layer)
        self.intermediate = MedIntermediate(cfg)
        self.output = MedResidualOutput(cfg, cfg.intermediate_size)

    def forward(self, streams: Pair, text_bias: torch.Tensor, memories: Pair, memory_biases: Pair) -> Pair:
        streams = self.attention(streams, (text_bias, text_bias))
        streams = self.crossattention(streams, memory_biases, memories)
        return tuple(self.output(self.intermediate(s), s) for s in streams)

    def forward_kv(self, streams: Pair, text_bias: torch.Tensor, kv: tuple[Pair, Pair], group: int = 1,
                   rows: torch.Tensor | None = None) -> Pair:
        streams = self.attention(streams, (text_bias, text_bias))
        streams = self.crossattention.forward_kv(streams, kv, group, rows)
        return tuple(self.output(self.intermediate(s), s) for s in streams)


class TwinEncoder(nn.Module):
    def __init__(self, cfg: MedConfig, merge_start_layer: int):
        super().__init__()
        self.layer = nn.ModuleList(TwinLayer(cfg, i >= merge_start_layer) for i in range(cfg.num_hidden_layers))


class TwinMedModel(nn.Module):
    """CR stage-2 encoder. Keys: ``embeddings.*`` and ``encoder.layer.{i}.{attention,crossattention}.{self0,self1,
    output.{dense0,dense1,LayerNormA,LayerNormB}}``, ``crossattention.output.merge_layer`` for
    ``i >= merge_start_layer``, and the shared ``intermediate``/``output``."""

    def __init__(self, cfg: MedConfig, merge_start_layer: int = 6):
        super().__init__()
        self.config = cfg
        self.merge_start_layer = merge_start_layer
        self.embeddings = MedEmbeddings(cfg)
        self.encoder = TwinEncoder(cfg, merge_start_layer)
        self.apply(init_bert_weights)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        z_t: torch.Tensor,
        encoder_hidden_states: torch.Tensor | Sequence[torch.Tensor],
        encoder_attention_mask: torch.Tensor | Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Return ``cat(stream0[:, 0], stream1[:, 0])`` ``[B, 2H]``.

        ``input_ids``/``attention_mask`` are the caption (the mask serves both streams); ``z_t`` ``[B, L, H]`` must
        have the caption's length. ``encoder_hidden_states`` is one memory for both streams or a pair.
        """
        if z_t.shape[:2] != input_ids.shape:
            raise ValueError(f"z_t {tuple(z_t.shape)} does not match the caption tokens {tuple(input_ids.shape)}")
        memories = _as_pair(encoder_hidden_states)
        if encoder_attention_mask is None:
            encoder_attention_mask = [torch.ones(m.shape[:2], device=m.device) for m in memories]
        dtype = self.embeddings.word_embeddings.weight.dtype
        memory_biases = tuple(cross_attention_bias(m, dtype) for m in _as_pair(encoder_attention_mask))
        text_bias = self_attention_bias(attention_mask, dtype)
        streams = (z_t, self.embeddings(input_ids))
        for layer in self.encoder.layer:
            streams = layer(streams, text_bias, memories, memory_biases)
        return torch.cat([streams[0][:, 0], streams[1][:, 0]], dim=-1)

    def memory_kv(self, encoder_hidden_states: torch.Tensor) -> MemoryKV:
        """Every layer's cross-attention keys/values of image memories ``[C, N, W]``: they depend on the image only,
        so one computation serves every text paired with it."""
        return [layer.crossattention.memory_kv(encoder_hidden_states) for layer in self.encoder.layer]

    def forward_kv(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        z_t: torch.Tensor,
        kv: MemoryKV,
        rows: torch.Tensor | None = None,
        group: int = 1,
    ) -> torch.Tensor:
        """``forward`` for P pairs over precomputed ``memory_kv`` of C images (all-ones memory mask); ``[P, 2H]``.

        ``rows`` ``[P]``: pair p attends to image ``rows[p]``; pairs sorted by image share one attention call per
        image. Without ``rows``, the pairs are image-major, ``P = C * group``: pairs ``c * group .. (c + 1) * group
        - 1`` attend to image c (the training grid). Keys/values are never copied per pair.
        """
        if z_t.shape[:2] != input_ids.shape:
            raise ValueError(f"z_t {tuple(z_t.shape)} does not match the caption tokens {tuple(input_ids.shape)}")
        if rows is None and z_t.shape[0] != kv[0][0][0].shape[0] * group:
            raise ValueError(f"{z_t.shape[0]} pairs do not form {kv[0][0][0].shape[0]} images x {group} texts")
        text_bias = self_attention_bias(attention_mask, self.embeddings.word_embeddings.weight.dtype)
        streams = (z_t, self.embeddings(input_ids))
        for layer, layer_kv in zip(self.encoder.layer, kv):
            streams = layer.forward_kv(streams, text_bias, layer_kv, group, rows)
        return torch.cat([streams[0][:, 0], streams[1][:, 0]], dim=-1)


def _as_pair(value: torch.Tensor | Sequence[torch.Tensor]) -> Pair:
    if isinstance(value, torch.Tensor):
        return value, value
    if len(value) != 2:
        raise ValueError(f"expected one tensor or a pair, got {len(value)} tensors")
    return value[0], value[1]
