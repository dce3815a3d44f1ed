"""Backbones TCR adapts: BLIP ITC, OpenAI CLIP and the IRRA-style ReID CLIP, behind one interface.

Each backbone encodes images and texts into L2-normalised features and names its query-side encoder per direction:
``i2t`` queries are images (the visual encoder adapts, texts are the gallery), ``t2i`` queries are texts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from common.args import vit_config_from_arg
from common.blip import BlipItc, MedConfig, build_blip_tokenizer, load_blip_checkpoint, tokenize
from common.blip.checkpoint import BLIP_SHA1, DEFAULT_IGNORES
from common.clip import CLIP, ClipRetrievalWrapper, convert_weights, load_clip
from common.io import CheckpointError, PathLike, key_problems, load_torch_file, resolve_weights
from common.transforms import blip_eval_transform, reid_transform
from common.tta import layernorm_parameters
from tcr.config import resolve_med_config

DIRECTIONS = ("i2t", "t2i")
BACKBONES = ("blip", "clip", "clip_reid")
BLIP_IGNORES = (*DEFAULT_IGNORES, "itm_head.*", "temp")
"""Checkpoint keys TCR's ITC model has no use for: ITM head, temperature, momentum encoders, queues, decoder."""
BLIP_SIZE_FLAGS = {
    "visual_encoder.*": "the config's vit and image_size (or --vit_config)",
    "text_encoder.*": "--med_config",
    "text_proj.*": "--med_config (text width) and the file's projection width",
    "vision_proj.*": "the config's vit (or --vit_config) and the file's projection width",
}
"""Which setting decides the size of a BLIP key, named in a shape-mismatch error."""
BLIP_EMBED_KEYS = ("vision_proj.weight", "vision_proj.bias", "text_proj.weight", "text_proj.bias")
BLIP_TEXT_LENGTH = 35
REID_SIZE = (384, 128)
REID_SIZE_KEYS = ("visual.conv1.weight", "text_projection", "positional_embedding", "token_embedding.weight",
                  "ln_final.weight")
"""IRRA keys (under ``base_model.``) that the ReID CLIP's sizes are read from."""


def check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown retrieval direction {direction!r}; valid: {', '.join(DIRECTIONS)}")
    return direction


class Backbone(nn.Module):
    """Image and text encoders with unit-norm outputs. ``transform`` turns a PIL image into the model input;
    ``missing_keys``/``unexpected_keys``/``source`` describe the checkpoint load (None where nothing was loaded
    from a file)."""

    transform: Callable
    missing_keys: list[str] | None = None
    unexpected_keys: list[str] | None = None
    source: str | None = None

    @property
    def feature_dtype(self) -> torch.dtype:
        return torch.float32

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_text(self, texts: Sequence[str] | torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def query_encoder(self, direction: str) -> nn.Module:
        raise NotImplementedError

    def encode_query(self, inputs: Any, direction: str) -> torch.Tensor:
        return self.encode_image(inputs) if check_direction(direction) == "i2t" else self.encode_text(inputs)

    def encode_gallery(self, inputs: Any, direction: str) -> torch.Tensor:
        return self.encode_text(inputs) if check_direction(direction) == "i2t" else self.encode_image(inputs)

    def query_norm_params(self, direction: str) -> tuple[list[nn.Parameter], list[str]]:
        """Weight and bias of every LayerNorm in the query encoder (upstream ``collect_params``)."""
        return layernorm_parameters(self.query_encoder(check_direction(direction)))


class BlipBackbone(Backbone):
    """BLIP ITC: ``normalize(vision_proj(ViT CLS))`` and ``normalize(text_proj(MED CLS))``, captions padded to 35."""

    def __init__(self, model: BlipItc, tokenizer, image_size: int):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.transform = blip_eval_transform(image_size)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        ids, mask = tokenize(self.tokenizer, texts, padding="max_length", max_length=BLIP_TEXT_LENGTH,
                             truncation=True, device=self.model.text_proj.weight.device)
        return self.model.encode_text(ids, mask)

    def query_encoder(self, direction: str) -> nn.Module:
        return self.model.visual_encoder if direction == "i2t" else self.model.text_encoder


class ClipBackbone(Backbone):
    """OpenAI CLIP; strings are BPE-tokenised to 77 (truncated). Features keep the model dtype (fp16 on CUDA)."""

    def __init__(self, model: CLIP, transform: Callable):
        super().__init__()
        self.clip = ClipRetrievalWrapper(model)
        self.transform = transform

    @property
    def feature_dtype(self) -> torch.dtype:
        return self.clip.dtype

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(images)

    def encode_text(self, texts: Sequence[str] | torch.Tensor) -> torch.Tensor:
        return self.clip.encode_text(texts)

    def query_encoder(self, direction: str) -> nn.Module:
        """``visual`` for i2t; the text ``transformer`` for t2i (so ``ln_final`` stays frozen, as upstream)."""
        return self.clip.model.visual if direction == "i2t" else self.clip.model.transformer


class ReidClipBackbone(ClipBackbone):
    """IRRA's person-search CLIP: projected CLS (image) and EOT (text) features, cast to fp32 before normalising.
    Texts come pre-tokenised by the PEDES datasets."""

    @property
    def feature_dtype(self) -> torch.dtype:
        return torch.float32

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        model = self.clip.model
        return F.normalize(model.encode_image(images.to(self.clip.device, model.dtype)).float(), dim=-1)

    def encode_text(self, texts: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.model.encode_text(texts.to(self.clip.device)).float(), dim=-1)


@dataclass
class BackboneOptions:
    """Where the backbone's files come from, beyond the config (our flags; upstream used fixed relative paths)."""

    vit_config: str | None = None
    med_config: PathLike | None = None
    tokenizer: PathLike | None = None
    clip_weights: str = "ViT-B/16"
    clip_download_root: PathLike | None = None
    allow_download: bool = False
    trusted: bool = False


def build_backbone(config: dict[str, Any], device: torch.device, options: BackboneOptions | None = None) -> Backbone:
    """The backbone a TCR config names, on ``device`` in eval mode.

    ``blip``: ``BlipItc`` (``vit``, ``image_size``, ``vit_grad_ckpt``, ``vit_ckpt_layer``; projection width from
    the file, 256 in BLIP's) loaded from ``pretrained`` (a path or one of BLIP's URLs). ``clip``: OpenAI ViT-B/16
    (``options.clip_weights``), or for ``fashion_gen_detail`` the fine-tuned file in ``pretrained``; fp16 on CUDA,
    fp32 on CPU. ``clip_reid``: the IRRA checkpoint in ``pretrained`` at 384×128.
    """
    options = options or BackboneOptions()
    kind = config["backbone"]
    if kind == "blip":
        vit = vit_config_from_arg(options.vit_config or config["vit"])
        med = MedConfig.from_json(resolve_med_config(options.med_config))
        path = resolve_weights(config["pretrained"], allow_download=options.allow_download,
                               sha1=BLIP_SHA1.get(str(config["pretrained"]).rsplit("/", 1)[-1]))
        checkpoint = load_torch_file(path, trusted=options.trusted)
        model = BlipItc(vit, med, int(config["image_size"]), embed_dim=blip_embed_dim(checkpoint),
                        vit_grad_ckpt=bool(config.get("vit_grad_ckpt")),
                        vit_ckpt_layer=int(config.get("vit_ckpt_layer", 0)))
        report = load_blip_checkpoint(model, checkpoint, ignore=BLIP_IGNORES, source_name=path,
                                      flag_hints=BLIP_SIZE_FLAGS)
        tokenizer = build_blip_tokenizer(options.tokenizer, allow_download=options.allow_download)
        backbone: Backbone = BlipBackbone(model, tokenizer, int(config["image_size"]))
        backbone.missing_keys, backbone.source = list(report.missing), str(path)
        backbone.unexpected_keys = list(report.unexpected)
    elif kind == "clip":
        fashion = config["dataset"] == "fashion_gen_detail"
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        model, _, info = load_clip(config["pretrained"] if fashion else options.clip_weights, device=device,
                                   dtype=dtype, allow_download=options.allow_download,
                                   download_root=options.clip_download_root)
        backbone = ClipBackbone(model, blip_eval_transform(info["input_resolution"]))
        if fashion:
            backbone.missing_keys, backbone.source = [], info["source"]
    elif kind == "clip_reid":
        model, missing, unexpected = load_reid_clip(config["pretrained"], REID_SIZE, trusted=options.trusted)
        if device.type == "cuda":
            convert_weights(model)
        backbone = ReidClipBackbone(model, reid_transform(*REID_SIZE))
        backbone.missing_keys, backbone.source = missing, str(config["pretrained"])
        backbone.unexpected_keys = unexpected
    else:
        raise ValueError(f"unknown backbone {kind!r}; valid backbones: {', '.join(BACKBONES)}")
    return backbone.to(device).eval()


def blip_embed_dim(checkpoint: dict[str, Any], default: int = 256) -> int:
    """Width of the ITC projections in a BLIP checkpoint (256 in BLIP's files): row count of the first of
    :data:`BLIP_EMBED_KEYS` the file holds, so a file that lacks one of them reports that key as missing."""
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else {}
    for key in BLIP_EMBED_KEYS:
        if isinstance(state.get(key), torch.Tensor):
            return int(state[key].shape[0])
    return default


def load_reid_clip(path: PathLike | dict, image_size: tuple[int, int] = REID_SIZE, *, trusted: bool = False,
                   source_name: PathLike | None = None) -> tuple[CLIP, list[str], list[str]]:
    """Build IRRA's CLIP from its checkpoint (``{'model': sd}``, keys ``base_model.*``) for ``image_size`` input.

    The sizes come from the state dict; the ViT's position embedding has ``1 + (H/p)(W/p)`` rows (24×8 patches at
    384×128, stride = patch 16). Returns the fp32 model, the CLIP keys missing from the file and the file's keys
    the model has no place for (the original loads with ``strict=False``); errors name ``source_name`` (default:
    ``path``).
    """
    source = str(source_name if source_name is not None else ("<IRRA state dict>" if isinstance(path, dict)
                                                                else path))
    obj = path if isinstance(path, dict) else load_torch_file(path, trusted=trusted)
    raw = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{source}: expected a dict with the IRRA state dict under 'model', got "
                              f"{type(obj).__name__}")
    state = {key[len("base_model."):]: value for key, value in raw.items() if key.startswith("base_model.")}
    missing = [f"base_model.{key}" for key in REID_SIZE_KEYS if key not in state]
    if missing:
        others = [key for key in raw if not key.startswith("base_model.")]
        raise CheckpointError(key_problems(source, "IRRA's CLIP (keys base_model.* under 'model')", missing, others))
    width, _, patch, _ = state["visual.conv1.weight"].shape
    height_px, width_px = image_size
    if height_px % patch or width_px % patch:
        raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch}")
    model = CLIP(
        embed_dim=state["text_projection"].shape[1],
        image_resolution=height_px,
        vision_layers=_count_blocks(state, "visual.transformer.resblocks."),
        vision_width=width,
        vision_patch_size=patch,
        context_length=state["positional_embedding"].shape[0],
        vocab_size=state["token_embedding.weight"].shape[0],
        transformer_width=state["ln_final.weight"].shape[0],
        transformer_heads=state["ln_final.weight"].shape[0] // 64,
        transformer_layers=_count_blocks(state, "transformer.resblocks."),
    )
    tokens = 1 + (height_px // patch) * (width_px // patch)
    model.visual.positional_embedding = nn.Parameter(torch.zeros(tokens, width))
    model.visual.input_resolution = image_size
    expected = model.state_dict()
    for key, value in state.items():
        if key in expected and value.shape != expected[key].shape:
            raise CheckpointError(f"{source}: {key} has shape {tuple(value.shape)}, the {height_px}×{width_px} "
                                  f"model expects {tuple(expected[key].shape)}")
    result = model.load_state_dict({k: v.float() for k, v in state.items() if k in expected}, strict=False)
    unexpected = sorted(key for key in raw
                        if not key.startswith("base_model.") or key[len("base_model."):] not in expected)
    return model.float().eval(), sorted(result.missing_keys), unexpected


def _count_blocks(state: dict[str, torch.Tensor], prefix: str) -> int:
    return len({key[len(prefix):].split(".")[0] for key in state if key.startswith(prefix)})
