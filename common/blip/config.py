"""Size configurations of the BLIP vision transformer and the MED text encoder.

Values of the presets come from salesforce/BLIP (`models/blip.py:create_vit`, `configs/med_config.json`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from common.io import MalformedFileError, PathLike, read_json

MED_CONFIG_PATH = Path(__file__).parent / "configs" / "med_config.json"


@dataclass(frozen=True)
class ViTConfig:
    """BLIP ViT sizes. ``drop_path_rate`` is the preset's default stochastic-depth rate (the last block's rate)."""

    patch_size: int = 16
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    ln_eps: float = 1e-6
    drop_path_rate: float = 0.0

    @classmethod
    def base(cls) -> ViTConfig:
        """ViT-B/16: the caller's drop-path rate, default 0."""
        return cls()

    @classmethod
    def large(cls) -> ViTConfig:
        """ViT-L/16. Upstream ``create_vit`` computes ``0.1 or rate``, so ViT-L always runs with drop-path 0.1."""
        return cls(width=1024, depth=24, heads=16, drop_path_rate=0.1)

    @classmethod
    def tiny(cls) -> ViTConfig:
        """Random-weight test size: patch 8, width 32, depth 2, heads 2."""
        return cls(patch_size=8, width=32, depth=2, heads=2)

    @classmethod
    def preset(cls, name: str) -> ViTConfig:
        """``'base'``, ``'large'`` or ``'tiny'``."""
        presets = {"base": cls.base, "large": cls.large, "tiny": cls.tiny}
        if name not in presets:
            raise ValueError(f"unknown ViT preset {name!r}; expected one of {sorted(presets)}")
        return presets[name]()


@dataclass(frozen=True)
class MedConfig:
    """The MED (BERT) text encoder config, i.e. the fields of BLIP's ``med_config.json`` that the model reads.

    ``encoder_width`` is the width of the cross-attended image tokens; models set it to their ViT width.
    """

    vocab_size: int = 30524
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    encoder_width: int = 768
    add_cross_attention: bool = True

    def __post_init__(self) -> None:
        if self.hidden_act != "gelu":
            raise ValueError(f"MED supports hidden_act='gelu' (exact GELU) only, got {self.hidden_act!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of {self.num_attention_heads} heads")

    @classmethod
    def from_json(cls, path: PathLike) -> MedConfig:
        """Read a BLIP ``med_config.json``; keys the model does not use (``architectures``, ...) are skipped."""
        values = read_json(path, "a BLIP med_config.json")
        if values.get("position_embedding_type", "absolute") != "absolute":
            raise MalformedFileError(f"{path}: only absolute position embeddings are supported")
        if values.get("is_decoder", False):
            raise MalformedFileError(f"{path}: decoder configs (is_decoder=true) are not supported")
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in names})

    @classmethod
    def base(cls) -> MedConfig:
        """BLIP's ``configs/med_config.json`` (BERT-base with cross-attention, vocabulary 30524)."""
        return cls.from_json(MED_CONFIG_PATH)

    def replace(self, **changes) -> MedConfig:
        """A copy with some fields changed, e.g. ``cfg.replace(encoder_width=vit.width)``."""
        return dataclasses.replace(self, **changes)


def med_config_from_arg(path: PathLike, original_default: str) -> MedConfig:
    """``--med-config-path``: a BLIP ``med_config.json``. The original repository's default path
    (``original_default``), when it does not exist here, falls back to BLIP's config shipped with ``common.blip``."""
    if Path(path).is_file():
        return MedConfig.from_json(path)
    if str(path) == original_default:
        return MedConfig.base()
    raise FileNotFoundError(f"{path}: --med-config-path not found (a BLIP med_config.json)")
