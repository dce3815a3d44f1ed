"""BLIP's vision transformer (salesforce/BLIP `models/vit.py`), with the upstream parameter names."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from common.blip.config import ViTConfig


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth per sample: zero a residual branch with probability ``drop_prob``, rescale the rest."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = torch.rand(shape, dtype=x.dtype, device=x.device).add_(keep_prob).floor_()
    return x.div(keep_prob) * mask


class DropPath(nn.Module):
    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class PatchEmbed(nn.Module):
    """Square image to a sequence of patch embeddings (Conv2d with kernel = stride = patch)."""

    def __init__(self, image_size: int, patch_size: int, width: int):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch_size}")
        self.image_size = image_size
        self.num_patches = (image_size // patch_size) ** 2
        self.proj = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"expected {self.image_size}x{self.image_size} images, got {tuple(x.shape[-2:])}")
        return self.proj(x).flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, qkv_bias: bool):
        super().__init__()
        self.heads = heads
        self.scale = (width // heads) ** -0.5
        self.qkv = nn.Linear(width, width * 3, bias=qkv_bias)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(batch, tokens, width)
        return self.proj(x)


class Block(nn.Module):
    """Pre-norm transformer block. With ``grad_checkpointing`` the block is recomputed in the backward pass
    (non-reentrant) while training with grad enabled; the parameter names do not change."""

    def __init__(self, cfg: ViTConfig, drop_path_rate: float, grad_checkpointing: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.attn = Attention(cfg.width, cfg.heads, cfg.qkv_bias)
        self.drop_path = DropPath(drop_path_rate)
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.mlp = Mlp(cfg.width, int(cfg.width * cfg.mlp_ratio))
        self.grad_checkpointing = grad_checkpointing

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)


class VisionTransformer(nn.Module):
    """BLIP ViT: patch embedding, CLS token, learned positions, pre-norm blocks, final LayerNorm.

    Returns all tokens ``[B, 1 + (image_size / patch)^2, width]``. ``grad_ckpt_last_k`` checkpoints the last k
    blocks (upstream ``vit_grad_ckpt``/``vit_ckpt_layer``). ``drop_path_rate=None`` takes the preset's rate; the
    rate rises linearly from 0 at the first block to ``drop_path_rate`` at the last.
    """

    def __init__(
        self,
        cfg: ViTConfig,
        image_size: int,
        grad_ckpt_last_k: int = 0,
        drop_path_rate: float | None = None,
    ):
        super().__init__()
        self.cfg = cfg
        self.image_size = image_size
        self.width = cfg.width
        rate = cfg.drop_path_rate if drop_path_rate is None else drop_path_rate
        self.patch_embed = PatchEmbed(image_size, cfg.patch_size, cfg.width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, cfg.width))
        rates = torch.linspace(0, rate, cfg.depth).tolist()
        self.blocks = nn.ModuleList(
            Block(cfg, rates[i], grad_checkpointing=i >= cfg.depth - grad_ckpt_last_k) for i in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init_weights)

    @property
    def num_patches(self) -> int:
        return self.patch_embed.num_patches

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed[:, : x.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def create_vit(
    name_or_cfg: str | ViTConfig,
    image_size: int,
    grad_ckpt: bool = False,
    ckpt_layer: int = 0,
    drop_path_rate: float | None = None,
) -> tuple[VisionTransformer, int]:
    """Build a BLIP ViT and return ``(module, width)``, like upstream ``create_vit``.

    ``drop_path_rate=None`` reproduces upstream: 0 for base and always 0.1 for large (upstream's ``0.1 or rate``
    ignores the argument for ViT-L). A number is honoured for every preset.
    """
    cfg = ViTConfig.preset(name_or_cfg) if isinstance(name_or_cfg, str) else name_or_cfg
    vit = VisionTransformer(cfg, image_size, grad_ckpt_last_k=ckpt_layer if grad_ckpt else 0,
                            drop_path_rate=drop_path_rate)
    return vit, cfg.width


def interpolate_pos_embed(pos_embed: torch.Tensor, num_patches: int) -> torch.Tensor:
    """Resize a ``[1, 1 + g*g, W]`` position embedding to ``1 + num_patches`` tokens, keeping the CLS row.

    The patch grid is resized bicubically (``align_corners=False``); equal sizes return the input unchanged.
    """
    old_size = math.isqrt(pos_embed.shape[1] - 1)
    new_size = math.isqrt(num_patches)
    if old_size * old_size != pos_embed.shape[1] - 1 or new_size * new_size != num_patches:
        raise ValueError(f"cannot map {pos_embed.shape[1]} position embeddings (1 + a square) to {num_patches} patches")
    if old_size == new_size:
        return pos_embed
    width = pos_embed.shape[-1]
    cls_row, grid = pos_embed[:, :1], pos_embed[:, 1:]
    grid = grid.reshape(-1, old_size, old_size, width).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new_size, new_size), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).flatten(1, 2)
    return torch.cat([cls_row, grid], dim=1)
