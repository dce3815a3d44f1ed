"""BLIP model variants used by the papers. Attribute names equal the upstream state-dict prefixes, so released
checkpoints load unchanged (see ``common.blip.checkpoint``).

| class | upstream | used by |
|---|---|---|
| ``BlipItc`` | ``BLIP_Retrieval`` without ITM/momentum (TCR ``blip_tta``) | TCR |
| ``BlipRetrieval`` | ``BLIP_Retrieval`` (``models/blip_retrieval.py``) | full released files |
| ``BlipImageEncoder`` / ``BlipTextEncoder`` | Bi-BLIP4CIR ``BLIPImgEncoder`` / ``BLIPTextEncoder`` | Bi-BLIP4CIR |
| ``CirStage1`` / ``CirStage2`` | CR ``blip_stage1.BLIP_Retrieval`` / ``blip_stage2.BLIP_NLVR`` | Candidate re-ranking |
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertTokenizer

from common.blip.config import MedConfig, ViTConfig
from common.blip.med import MedModel
from common.blip.med_twin import MemoryKV, TwinMedModel
from common.blip.tokenizer import tokenize
from common.blip.vit import create_vit

TextBatch = str | Sequence[str] | tuple[torch.Tensor, torch.Tensor] | Mapping[str, torch.Tensor]


def with_first_token(input_ids: torch.Tensor, token_id: int) -> torch.Tensor:
    """A copy of ``input_ids`` whose position 0 is ``token_id`` (BLIP's ``[ENC]`` overwrite)."""
    input_ids = input_ids.clone()
    input_ids[:, 0] = token_id
    return input_ids


class BlipItc(nn.Module):
    """ViT + MED + projections: BLIP's image-text contrastive (ITC) features, as TCR uses them.

    ``vit`` is a preset name or a ``ViTConfig``; the MED's ``encoder_width`` is set to the ViT width.
    """

    def __init__(
        self,
        vit: str | ViTConfig,
        med: MedConfig,
        image_size: int,
        *,
        embed_dim: int = 256,
        vit_grad_ckpt: bool = False,
        vit_ckpt_layer: int = 0,
        drop_path_rate: float | None = None,
    ):
        super().__init__()
        self.visual_encoder, vision_width = create_vit(vit, image_size, vit_grad_ckpt, vit_ckpt_layer, drop_path_rate)
        self.med_config = med.replace(encoder_width=vision_width)
        self.text_encoder = MedModel(self.med_config)
        self.vision_proj = nn.Linear(vision_width, embed_dim)
        self.text_proj = nn.Linear(self.med_config.hidden_size, embed_dim)

    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        """All ViT tokens ``[B, T, W]``."""
        return self.visual_encoder(images)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised ``vision_proj(CLS)`` ``[B, embed_dim]``."""
        return F.normalize(self.vision_proj(self.visual_encoder(images)[:, 0]), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """L2-normalised ``text_proj(CLS)`` of the text-mode MED ``[B, embed_dim]`` (``[CLS]`` first, no ``[ENC]``)."""
        hidden = self.text_encoder(input_ids, attention_mask, mode="text").last_hidden_state
        return F.normalize(self.text_proj(hidden[:, 0]), dim=-1)


class BlipRetrieval(BlipItc):
    """BLIP's retrieval model: ``BlipItc`` plus ``itm_head`` and ``temp``, and with momentum the ``*_m`` copies
    and the queues, so released ``model_*.pth`` files load completely. No training losses.

    ``enc_token_id`` (``tokenizer.enc_token_id``) is needed by ``itm_logits``.
    """

    def __init__(
        self,
        vit: str | ViTConfig,
        med: MedConfig,
        image_size: int,
        *,
        embed_dim: int = 256,
        with_itm: bool = True,
        with_momentum: bool = True,
        queue_size: int = 57600,
        momentum: float = 0.995,
        temp_init: float = 0.07,
        enc_token_id: int | None = None,
        vit_grad_ckpt: bool = False,
        vit_ckpt_layer: int = 0,
        drop_path_rate: float | None = None,
    ):
        super().__init__(vit, med, image_size, embed_dim=embed_dim, vit_grad_ckpt=vit_grad_ckpt,
                         vit_ckpt_layer=vit_ckpt_layer, drop_path_rate=drop_path_rate)
        self.enc_token_id = enc_token_id
        self.momentum = momentum
        self.temp = nn.Parameter(torch.tensor(temp_init))
        if with_itm:
            self.itm_head = nn.Linear(self.med_config.hidden_size, 2)
        if with_momentum:
            self.visual_encoder_m, vision_width = create_vit(vit, image_size, vit_grad_ckpt, vit_ckpt_layer,
                                                             drop_path_rate)
            self.vision_proj_m = nn.Linear(vision_width, embed_dim)
            self.text_encoder_m = MedModel(self.med_config)
            self.text_proj_m = nn.Linear(self.med_config.hidden_size, embed_dim)
            self.copy_params()
            self.register_buffer("image_queue", F.normalize(torch.randn(embed_dim, queue_size), dim=0))
            self.register_buffer("text_queue", F.normalize(torch.randn(embed_dim, queue_size), dim=0))
            self.register_buffer("idx_queue", torch.full((1, queue_size), -100))
            self.register_buffer("ptr_queue", torch.zeros(1, dtype=torch.long))

    def model_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(online, momentum) module pairs; empty without momentum."""
        names = ("visual_encoder", "vision_proj", "text_encoder", "text_proj")
        return [(getattr(self, n), getattr(self, n + "_m")) for n in names if hasattr(self, n + "_m")]

    @torch.no_grad()
    def copy_params(self) -> None:
        """Set the momentum copies to the online weights (frozen), as upstream does at construction."""
        for online, momentum in self.model_pairs():
            for param, param_m in zip(online.parameters(), momentum.parameters()):
                param_m.copy_(param)
                param_m.requires_grad = False

    def itm_logits(self, image_embeds: torch.Tensor, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor) -> torch.Tensor:
        """ITM logits ``[B, 2]`` (class 1 = match): multimodal MED with ``[ENC]`` first over all image tokens."""
        if not hasattr(self, "itm_head"):
            raise RuntimeError("this BlipRetrieval was built with with_itm=False")
        if self.enc_token_id is None:
            raise RuntimeError("itm_logits needs enc_token_id (pass tokenizer.enc_token_id to the constructor)")
        hidden = self.text_encoder(with_first_token(input_ids, self.enc_token_id), attention_mask,
                                   encoder_hidden_states=image_embeds, mode="multimodal").last_hidden_state
        return self.itm_head(hidden[:, 0])


class BlipImageEncoder(nn.Module):
    """Bi-BLIP4CIR image side: ViT + ``vision_proj``; returns the *unnormalised* ``vision_proj(CLS)``."""

    def __init__(
        self,
        vit: str | ViTConfig,
        image_size: int,
        *,
        embed_dim: int = 256,
        vit_grad_ckpt: bool = False,
        vit_ckpt_layer: int = 0,
        drop_path_rate: float | None = None,
    ):
        super().__init__()
        self.visual_encoder, vision_width = create_vit(vit, image_size, vit_grad_ckpt, vit_ckpt_layer, drop_path_rate)
        self.vision_proj = nn.Linear(vision_width, embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.vision_proj(self.visual_encoder(images)[:, 0])


class BlipTextEncoder(nn.Module):
    """Bi-BLIP4CIR text side: text-mode MED + ``text_proj``; returns the *unnormalised* ``text_proj(CLS)``.

    Strings are tokenized with ``padding='longest'``, truncation to ``max_length`` (77), ``[CLS]`` first.
    ``embed_dim`` is the ``text_proj`` width: 256 to load the released projection, or e.g. a fresh 640.
    ``encoder_width`` sizes the unused cross-attention (default: the config's value, 768 in BLIP's file, which
    upstream hard-codes).
    """

    def __init__(
        self,
        med: MedConfig,
        tokenizer: BertTokenizer | None = None,
        *,
        embed_dim: int = 256,
        encoder_width: int | None = None,
        max_length: int = 77,
    ):
        super().__init__()
        self.med_config = med if encoder_width is None else med.replace(encoder_width=encoder_width)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.text_encoder = MedModel(self.med_config)
        self.text_proj = nn.Linear(self.med_config.hidden_size, embed_dim)

    def tokenize(self, texts: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Upstream tokenization: longest padding, truncation to ``max_length``, on the module's device."""
        if self.tokenizer is None:
            raise RuntimeError("BlipTextEncoder was built without a tokenizer; pass token ids instead of strings")
        return tokenize(self.tokenizer, texts, padding="longest", truncation=True, max_length=self.max_length,
                        device=self.text_proj.weight.device)

    def forward(self, texts: TextBatch) -> torch.Tensor:
        """``texts``: strings, an ``(input_ids, attention_mask)`` pair, or a mapping with those two keys."""
        if isinstance(texts, str) or (isinstance(texts, Sequence) and texts and isinstance(texts[0], str)):
            input_ids, attention_mask = self.tokenize(texts)
        elif isinstance(texts, Mapping):
            input_ids, attention_mask = texts["input_ids"], texts["attention_mask"]
        else:
            input_ids, attention_mask = texts
        hidden = self.text_encoder(input_ids, attention_mask, mode="text").last_hidden_state
        return self.text_proj(hidden[:, 0])


class CirStage1(nn.Module):
    """Candidate re-ranking stage 1: the caption with ``[ENC]`` cross-attends to the reference image tokens.

    Query ``q = normalize(text_proj(h[:, 0]))``, target ``t = normalize(vision_proj(ViT(x)[:, 0]))``, logits
    ``q tᵀ / temp`` with a learnable, unclamped ``temp``. ``return_raw`` gives ``h`` = stage-2's ``z_t``.
    """

    def __init__(
        self,
        vit: str | ViTConfig,
        med: MedConfig,
        image_size: int,
        *,
        enc_token_id: int,
        embed_dim: int = 256,
        temp_init: float = 0.07,
        vit_grad_ckpt: bool = False,
        vit_ckpt_layer: int = 0,
        drop_path_rate: float | None = None,
    ):
        super().__init__()
        self.enc_token_id = enc_token_id
        self.visual_encoder, vision_width = create_vit(vit, image_size, vit_grad_ckpt, vit_ckpt_layer, drop_path_rate)
        self.med_config = med.replace(encoder_width=vision_width)
        self.text_encoder = MedModel(self.med_config)
        self.vision_proj = nn.Linear(vision_width, embed_dim)
        self.text_proj = nn.Linear(self.med_config.hidden_size, embed_dim)
        self.temp = nn.Parameter(torch.tensor(temp_init))

    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        """All ViT tokens ``[B, T, W]`` (the reference-image memory of the query)."""
        return self.visual_encoder(images)

    def target_features(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """L2-normalised ``vision_proj`` of the CLS token of ViT tokens ``[B, T, W]``."""
        return F.normalize(self.vision_proj(image_embeds[:, 0]), dim=-1)

    def forward(
        self,
        reference_embeds: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        return_raw: bool = False,
    ) -> torch.Tensor:
        """Fused query ``[B, embed_dim]`` (normalised), or with ``return_raw`` the hidden states ``[B, L, H]``."""
        hidden = self.text_encoder(with_first_token(input_ids, self.enc_token_id), attention_mask,
                                   encoder_hidden_states=reference_embeds, mode="multimodal").last_hidden_state
        if return_raw:
            return hidden
        return F.normalize(self.text_proj(hidden[:, 0]), dim=-1)

    def logits(self, query: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``query @ target.T / temp`` (``temp`` is not clamped, as upstream)."""
        return query @ target.t() / self.temp


class CirStage2(nn.Module):
    """Candidate re-ranking stage 2: ViT (drop-path 0.1 by default, as upstream) + twin MED + ``cls_head``.

    The score of a (query, candidate) pair is logit 0 of ``cls_head(cat(s0[:, 0], s1[:, 0]))``.
    """

    def __init__(
        self,
        vit: str | ViTConfig,
        med: MedConfig,
        image_size: int,
        *,
        enc_token_id: int,
        merge_start_layer: int = 6,
        vit_grad_ckpt: bool = False,
        vit_ckpt_layer: int = 0,
        drop_path_rate: float | None = 0.1,
    ):
        super().__init__()
        self.enc_token_id = enc_token_id
        self.visual_encoder, vision_width = create_vit(vit, image_size, vit_grad_ckpt, vit_ckpt_layer, drop_path_rate)
        self.med_config = med.replace(encoder_width=vision_width)
        self.text_encoder = TwinMedModel(self.med_config, merge_start_layer=merge_start_layer)
        hidden = self.med_config.hidden_size
        self.cls_head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2))

    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        """All ViT tokens ``[B, T, W]`` of the candidates."""
        return self.visual_encoder(images)

    def logits(
        self,
        z_t: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        candidate_embeds: torch.Tensor,
    ) -> torch.Tensor:
        """``cls_head`` logits ``[B, 2]``; row b pairs ``z_t[b]`` and caption b with candidate b (both streams)."""
        pair = self.text_encoder(with_first_token(input_ids, self.enc_token_id), attention_mask, z_t,
                                 encoder_hidden_states=candidate_embeds)
        return self.cls_head(pair)

    def forward(
        self,
        z_t: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        candidate_embeds: torch.Tensor,
    ) -> torch.Tensor:
        """Scores ``[B]`` (logit 0)."""
        return self.logits(z_t, input_ids, attention_mask, candidate_embeds)[:, 0]

    def candidate_kv(self, candidate_embeds: torch.Tensor) -> MemoryKV:
        """Cross-attention keys/values of candidate ViT tokens ``[C, T, W]``, computed once per image and shared by
        every query whose candidates include it (upstream recomputes them for every pair)."""
        return self.text_encoder.memory_kv(candidate_embeds)

    def score_pairs(
        self,
        z_t: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        kv: MemoryKV,
        rows: torch.Tensor,
    ) -> torch.Tensor:
        """Scores ``[P]`` of pairs (``z_t[p]``, caption p, candidate ``rows[p]`` of ``kv``); equals ``forward``."""
        pair = self.text_encoder.forward_kv(with_first_token(input_ids, self.enc_token_id), attention_mask, z_t, kv,
                                            rows=rows)
        return self.cls_head(pair)[:, 0]

    def score_grid(
        self,
        z_t: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        candidate_embeds: torch.Tensor,
    ) -> torch.Tensor:
        """Scores ``[Q, C]`` of every query (``z_t`` ``[Q, L, H]`` and its caption) against every candidate
        ``[C, T, W]``, with each candidate's keys/values computed once (the training step's B x B matrix; upstream
        runs one forward per query, recomputing them B times)."""
        n_queries, n_candidates = z_t.shape[0], candidate_embeds.shape[0]
        kv = self.candidate_kv(candidate_embeds)

        def tile(x: torch.Tensor) -> torch.Tensor:
            return x.unsqueeze(0).expand(n_candidates, *x.shape).reshape(n_candidates * n_queries, *x.shape[1:])

        ids = with_first_token(input_ids, self.enc_token_id)
        pair = self.text_encoder.forward_kv(tile(ids), tile(attention_mask), tile(z_t), kv, group=n_queries)
        return self.cls_head(pair)[:, 0].view(n_candidates, n_queries).t()
