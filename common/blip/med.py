"""BLIP's MED text encoder (salesforce/BLIP `models/med.py`, encoder part) in plain torch.

A BERT encoder whose layers can cross-attend to image tokens. Module and parameter names equal upstream's, so the
``text_encoder.*`` entries of released checkpoints load unchanged. No pooler, no token-type embeddings.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from common.blip.config import MedConfig

MODES = ("text", "multimodal")


@dataclass
class MedEncoderOutput:
    last_hidden_state: torch.Tensor


def init_bert_weights(module: nn.Module) -> None:
    """BERT init: N(0, 0.02) Linear and Embedding weights, zero biases, LayerNorm 1/0 (padding row not zeroed)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def self_attention_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[B, L]`` 1/0 mask to the additive ``[B, 1, 1, L]`` bias ``(1 - m) * -10000`` of upstream MED."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * -10000.0


def cross_attention_bias(encoder_attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[B, N]`` mask over image tokens to the additive bias ``(1 - m) * finfo.min`` (``invert_attention_mask``)."""
    return (1.0 - encoder_attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class MedEmbeddings(nn.Module):
    """Word + absolute position embeddings, LayerNorm, dropout."""

    def __init__(self, cfg: MedConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
        self.register_buffer("position_ids", torch.arange(cfg.max_position_embeddings).unsqueeze(0))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        if length > self.position_ids.shape[1]:
            raise ValueError(f"{length} tokens exceed the {self.position_ids.shape[1]} position embeddings")
        x = self.word_embeddings(input_ids) + self.position_embeddings(self.position_ids[:, :length])
        return self.dropout(self.LayerNorm(x))


class MedSelfAttention(nn.Module):
    """Multi-head attention. Cross-attention takes keys and values from ``encoder_width``-wide inputs."""

    def __init__(self, cfg: MedConfig, is_cross_attention: bool = False):
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.head_size = cfg.hidden_size // cfg.num_attention_heads
        kv_width = cfg.encoder_width if is_cross_attention else cfg.hidden_size
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(kv_width, cfg.hidden_size)
        self.value = nn.Linear(kv_width, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.attention_probs_dropout_prob)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_size).permute(0, 2, 1, 3)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_bias: torch.Tensor | None,
        encoder_hidden_states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        source = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        key, value = self.project_memory(source)
        return self.attend(hidden_states, key, value, attention_bias)

    def project_memory(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values ``[B, heads, N, head_size]`` of ``source`` ``[B, N, W]`` (reusable across queries)."""
        return self._split_heads(self.key(source)), self._split_heads(self.value(source))

    def attend(
        self,
        hidden_states: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_bias: torch.Tensor | None,
        group: int = 1,
    ) -> torch.Tensor:
        """Attention of ``hidden_states`` ``[B * group, L, H]`` to precomputed ``key``/``value`` ``[B, heads, N, d]``.

        With ``group > 1`` the ``group`` consecutive rows of each key row attend to that one key row: the queries
        are stacked along the token axis, so a memory shared by several texts is never copied.
        """
        batch, length = hidden_states.shape[0], hidden_states.shape[1]
        query = self._split_heads(self.query(hidden_states).reshape(batch // group, group * length, -1))
        scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(self.head_size)
        if attention_bias is not None:
            scores = scores + attention_bias
        probs = self.dropout(scores.softmax(dim=-1))
        context = torch.matmul(probs, value).permute(0, 2, 1, 3).contiguous()
        return context.view(batch, length, -1)

    def attend_rows(self, hidden_states: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    rows: torch.Tensor) -> torch.Tensor:
        """Row p of ``hidden_states`` ``[P, L, H]`` attends to key/value row ``rows[p]`` (no mask). Consecutive rows
        with the same key row share one ``attend`` call, so sorting the pairs by key row avoids copying keys."""
        segments, counts = torch.unique_consecutive(rows, return_counts=True)
        outputs, start = [], 0
        for row, count in zip(segments.tolist(), counts.tolist()):
            outputs.append(self.attend(hidden_states[start:start + count], key[row:row + 1], value[row:row + 1],
                                       None, group=count))
            start += count
        return torch.cat(outputs)


class MedResidualOutput(nn.Module):
    """Post-norm residual ``LayerNorm(input + dropout(dense(h)))``; ``in_features`` is the width of ``h``
    (hidden size after attention, intermediate size after the FFN)."""

    def __init__(self, cfg: MedConfig, in_features: int):
        super().__init__()
        self.dense = nn.Linear(in_features, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class MedAttention(nn.Module):
    def __init__(self, cfg: MedConfig, is_cross_attention: bool = False):
        super().__init__()
        self.self = MedSelfAttention(cfg, is_cross_attention)
        self.output = MedResidualOutput(cfg, cfg.hidden_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_bias: torch.Tensor | None,
        encoder_hidden_states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.output(self.self(hidden_states, attention_bias, encoder_hidden_states), hidden_states)


class MedIntermediate(nn.Module):
    def __init__(self, cfg: MedConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(hidden_states))


class MedLayer(nn.Module):
    """Self-attention, then (multimodal mode) cross-attention to the image tokens, then the FFN."""

    def __init__(self, cfg: MedConfig):
        super().__init__()
        self.attention = MedAttention(cfg)
        if cfg.add_cross_attention:
            self.crossattention = MedAttention(cfg, is_cross_attention=True)
        self.intermediate = MedIntermediate(cfg)
        self.output = MedResidualOutput(cfg, cfg.intermediate_size)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_bias: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None,
        encoder_bias: torch.Tensor | None,
        mode: str,
    ) -> torch.Tensor:
        hidden_states = self.attention(hidden_states, attention_bias)
        if mode == "multimodal":
            hidden_states = self.crossattention(hidden_states, encoder_bias, encoder_hidden_states)
        return self.output(self.intermediate(hidden_states), hidden_states)


class MedEncoder(nn.Module):
    def __init__(self, cfg: MedConfig):
        super().__init__()
        self.layer = nn.ModuleList(MedLayer(cfg) for _ in range(cfg.num_hidden_layers))


class MedModel(nn.Module):
    """MED encoder. ``mode='text'``: self-attention only (ITC text encoder). ``mode='multimodal'``: every layer
    also cross-attends to ``encoder_hidden_states`` (image tokens). Returns ``.last_hidden_state [B, L, H]``."""

    def __init__(self, cfg: MedConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = MedEmbeddings(cfg)
        self.encoder = MedEncoder(cfg)
        self.apply(init_bert_weights)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_embeds: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        mode: str = "multimodal",
    ) -> MedEncoderOutput:
        """``encoder_embeds`` replaces the embedding output (then ``input_ids`` is not used)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if encoder_embeds is not None:
            hidden_states = encoder_embeds
        elif input_ids is not None:
            hidden_states = self.embeddings(input_ids)
        else:
            raise ValueError("pass input_ids or encoder_embeds")
        dtype = self.embeddings.word_embeddings.weight.dtype
        if attention_mask is None:
            attention_mask = torch.ones(hidden_states.shape[:2], device=hidden_states.device)
        attention_bias = self_attention_bias(attention_mask, dtype)
        encoder_bias = None
        if mode == "multimodal":
            if not self.config.add_cross_attention:
                raise ValueError("multimodal mode needs a config with add_cross_attention=true")
            if encoder_hidden_states is None:
                raise ValueError("multimodal mode needs encoder_hidden_states (image tokens)")
            if encoder_attention_mask is None:
                encoder_attention_mask = torch.ones(encoder_hidden_states.shape[:2], device=hidden_states.device)
            encoder_bias = cross_attention_bias(encoder_attention_mask, dtype)
        for layer in self.encoder.layer:
            hidden_states = layer(hidden_states, attention_bias, encoder_hidden_states, encoder_bias, mode)
        return MedEncoderOutput(last_hidden_state=hidden_states)
