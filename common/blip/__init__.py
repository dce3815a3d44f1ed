"""BLIP backbone: our own ViT and MED modules with the upstream parameter names, checkpoint loading, tokenizer."""
from common.blip.checkpoint import (
    BLIP_URLS,
    DEFAULT_IGNORES,
    LoadReport,
    load_blip_checkpoint,
    remap_twin,
    select_prefix,
)
from common.blip.config import MedConfig, ViTConfig
from common.blip.med import MedModel
from common.blip.med_twin import TwinMedModel
from common.blip.models import (
    BlipImageEncoder,
    BlipItc,
    BlipRetrieval,
    BlipTextEncoder,
    CirStage1,
    CirStage2,
    with_first_token,
)
from common.blip.tokenizer import build_blip_tokenizer, tokenize
from common.blip.vit import VisionTransformer, create_vit, interpolate_pos_embed

__all__ = [
    "BLIP_URLS",
    "DEFAULT_IGNORES",
    "BlipImageEncoder",
    "BlipItc",
    "BlipRetrieval",
    "BlipTextEncoder",
    "CirStage1",
    "CirStage2",
    "LoadReport",
    "MedConfig",
    "MedModel",
    "TwinMedModel",
    "ViTConfig",
    "VisionTransformer",
    "build_blip_tokenizer",
    "create_vit",
    "interpolate_pos_embed",
    "load_blip_checkpoint",
    "remap_twin",
    "select_prefix",
    "tokenize",
    "with_first_token",
]
