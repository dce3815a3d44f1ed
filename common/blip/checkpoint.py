"""Loading BLIP-format checkpoints (released BLIP files and the CIR authors' fine-tuned files) into our modules.

Unlike upstream ``load_checkpoint``, nothing is dropped or left missing silently: shape mismatches and unexpected
missing keys raise a ``CheckpointError`` naming the file, and every load returns a ``LoadReport``.
"""
from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from common.blip.vit import VisionTransformer, interpolate_pos_embed
from common.io import CheckpointError, PathLike, is_url, key_problems, load_torch_file, resolve_weights

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]
Remap = Callable[[StateDict], tuple[StateDict, dict[str, str]]]

BLIP_URL_BASE = "https://storage.googleapis.com/sfr-vision-language-research/BLIP/models/"
BLIP_URLS: dict[str, str] = {
    name: BLIP_URL_BASE + name
    for name in (
        "model_base.pth",
        "model_large.pth",
        "model_base_retrieval_coco.pth",
        "model_large_retrieval_coco.pth",
        "model_base_retrieval_flickr.pth",
        "model_large_retrieval_flickr.pth",
        "model_base_nlvr.pth",
    )
}
BLIP_SHA1: dict[str, str] = {"model_base.pth": "5f1d8cdfae91e22a35e98a4bbb4c43be7bd0ac50"}

DEFAULT_IGNORES: tuple[str, ...] = (
    "*.position_ids",
    "*_m.*",
    "image_queue",
    "text_queue",
    "idx_queue",
    "ptr_queue",
    "queue_ptr",
    "text_decoder.*",
)


@dataclass(frozen=True)
class LoadReport:
    """What a load did. Keys are sorted. ``ignored``: checkpoint keys the model lacks that match ``ignore``;
    ``unexpected``: other checkpoint keys the model lacks; ``remapped``: new key -> source key."""

    source: str
    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    ignored: tuple[str, ...]
    dropped_mismatch: tuple[str, ...]
    remapped: dict[str, str] = field(default_factory=dict)


def select_prefix(state_dict: Mapping[str, torch.Tensor], prefixes: str | Iterable[str]) -> StateDict:
    """The entries whose key starts with one of ``prefixes`` (keys unchanged), as Bi-BLIP4CIR's loaders select."""
    prefixes = (prefixes,) if isinstance(prefixes, str) else tuple(prefixes)
    return {key: value for key, value in state_dict.items() if key.startswith(prefixes)}


_select_prefix = select_prefix  # load_blip_checkpoint's argument of the same name shadows the function


_LAYER = r"^(?P<layer>text_encoder\.encoder\.layer\.\d+\.(?:attention|crossattention)\.)"
_TWIN_PATTERNS: tuple[tuple[re.Pattern, tuple[str, str]], ...] = (
    (re.compile(_LAYER + r"self\.(?P<rest>(?:query|key|value)\.(?:weight|bias))$"), ("self0.", "self1.")),
    (re.compile(_LAYER + r"output\.dense\.(?P<rest>weight|bias)$"), ("output.dense0.", "output.dense1.")),
    (re.compile(_LAYER + r"output\.LayerNorm\.(?P<rest>weight|bias)$"), ("output.LayerNormA.", "output.LayerNormB.")),
)


def remap_twin(state_dict: Mapping[str, torch.Tensor]) -> tuple[StateDict, dict[str, str]]:
    """Map a single-stream MED checkpoint to CR's twin encoder (CR ``blip_stage2.py`` loader).

    In every ``text_encoder.encoder.layer.{i}.{attention,crossattention}``: ``self.*`` -> ``self0.*`` and
    ``self1.*``; ``output.dense.*`` -> ``output.dense0/dense1.*``; ``output.LayerNorm.*`` ->
    ``output.LayerNormA/LayerNormB.*`` (both twins share the source tensor). The source keys are removed;
    embeddings and FFN keys are kept.
    Returns ``(new_state_dict, {new_key: source_key})``.
    """
    result: StateDict = {}
    remapped: dict[str, str] = {}
    for key, value in state_dict.items():
        for pattern, targets in _TWIN_PATTERNS:
            match = pattern.match(key)
            if match:
                for target in targets:
                    new_key = match["layer"] + target + match["rest"]
                    result[new_key] = value
                    remapped[new_key] = key
                break
        else:
            result[key] = value
    return result, remapped


def load_blip_checkpoint(
    model: nn.Module,
    src: PathLike | Mapping,
    *,
    state_key: str = "model",
    select_prefix: str | Sequence[str] | None = None,
    remap: Remap | None = None,
    interpolate: bool = True,
    on_shape_mismatch: str = "error",
    allow_download: bool = False,
    trusted: bool = False,
    cache_dir: PathLike | None = None,
    ignore: Sequence[str] = DEFAULT_IGNORES,
    expected_missing: Sequence[str] = (),
    source_name: PathLike | None = None,
    flag_hints: Mapping[str, str] | None = None,
) -> LoadReport:
    """Load a BLIP-format checkpoint into ``model`` and return a ``LoadReport``.

    ``src``: a local path, an http(s) URL (fetched only with ``allow_download``; looked up in the weights cache
    first), or an already loaded object. The state dict is ``obj[state_key]`` when present, the object itself when
    it is a raw state dict, else its only entry that is a dict of tensors (e.g. ``{'BLIP_NLVR': sd, 'epoch': ...,
    'optimizer_state_dict': ...}``). Then: keep ``select_prefix`` keys, apply ``remap`` (e.g. ``remap_twin``),
    interpolate the ViT position embeddings to the model's grid. Shape mismatches raise unless
    ``on_shape_mismatch='drop'``. Model keys absent from the file raise unless they match ``expected_missing`` or
    ``ignore`` (fnmatch patterns). One error lists every shape mismatch (with the flag that sets the size when
    ``flag_hints`` maps a matching pattern to one), the missing and the unexpected keys, and names the file:
    ``source_name`` when ``src`` is an already loaded object.
    """
    if on_shape_mismatch not in ("error", "drop"):
        raise ValueError(f"on_shape_mismatch must be 'error' or 'drop', got {on_shape_mismatch!r}")
    source, obj = _load_source(src, allow_download=allow_download, trusted=trusted, cache_dir=cache_dir)
    source = str(source_name) if source_name is not None else source
    state_dict = _extract_state_dict(obj, state_key, source)
    if select_prefix is not None:
        state_dict = _select_prefix(state_dict, select_prefix)
    remapped: dict[str, str] = {}
    if remap is not None:
        state_dict, remapped = remap(state_dict)
    model_state = model.state_dict()
    if interpolate:
        _interpolate_pos_embeds(model, state_dict)

    loadable: StateDict = {}
    unexpected, ignored, dropped = [], [], []
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    for key, value in state_dict.items():
        if key not in model_state:
            (ignored if _matches(key, ignore) else unexpected).append(key)
        elif value.shape != model_state[key].shape:
            shapes[key] = (tuple(value.shape), tuple(model_state[key].shape))
            if on_shape_mismatch == "drop":
                logger.warning("%s: dropping %s (checkpoint %s, model %s)", source, key, *shapes[key])
                dropped.append(key)
        else:
            loadable[key] = value
    missing = sorted(key for key in model_state if key not in loadable and key not in shapes)
    not_allowed = [key for key in missing if not _matches(key, tuple(expected_missing) + tuple(ignore))]
    if not_allowed or (shapes and on_shape_mismatch == "error"):
        raise CheckpointError(key_problems(source, type(model).__name__, not_allowed, unexpected,
                                           shapes if on_shape_mismatch == "error" else {}, flag_hints))
    if missing:
        logger.info("%s: %d model keys not in the file (allowed): %s", source, len(missing), missing[:5])
    if unexpected:
        logger.warning("%s: %d unexpected keys not loaded, e.g. %s", source, len(unexpected), unexpected[:5])
    model.load_state_dict(loadable, strict=False)
    return LoadReport(
        source=source,
        loaded=tuple(sorted(loadable)),
        missing=tuple(missing),
        unexpected=tuple(sorted(unexpected)),
        ignored=tuple(sorted(ignored)),
        dropped_mismatch=tuple(sorted(dropped)),
        remapped=remapped,
    )


def _load_source(src: PathLike | Mapping, *, allow_download: bool, trusted: bool,
                 cache_dir: PathLike | None) -> tuple[str, object]:
    if isinstance(src, Mapping):
        return "<state dict>", src
    sha1 = BLIP_SHA1.get(str(src).rsplit("/", 1)[-1]) if is_url(src) else None
    path = resolve_weights(src, cache_dir=cache_dir, allow_download=allow_download, sha1=sha1)
    return str(path), load_torch_file(path, trusted=trusted)


def _is_state_dict(value: object) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def _extract_state_dict(obj: object, state_key: str, source: str) -> StateDict:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: expected a dict, got {type(obj).__name__}")
    if _is_state_dict(obj.get(state_key)):
        return dict(obj[state_key])
    if _is_state_dict(obj):
        return dict(obj)
    candidates = [key for key, value in obj.items() if _is_state_dict(value)]
    if len(candidates) == 1:
        return dict(obj[candidates[0]])
    raise CheckpointError(
        f"{source}: cannot tell which entry holds the weights (no '{state_key}'; state dicts under "
        f"{candidates or 'no key'}; top-level keys {list(obj)[:10]}). Pass state_key=..."
    )


def _interpolate_pos_embeds(model: nn.Module, state_dict: StateDict) -> None:
    for name, module in model.named_modules():
        key = f"{name}.pos_embed" if name else "pos_embed"
        if isinstance(module, VisionTransformer) and key in state_dict:
            old = state_dict[key]
            state_dict[key] = interpolate_pos_embed(old, module.num_patches)
            if old.shape != state_dict[key].shape:
                logger.info("interpolated %s from %d to %d tokens", key, old.shape[1], state_dict[key].shape[1])


def _matches(key: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)


def read_blip_file(source: PathLike, *, allow_download: bool = False, trusted: bool = False) -> tuple[Path, dict]:
    """A released BLIP file (``--blip-pretrained-path``: a local path, or a URL fetched only with
    ``allow_download`` and checked against its published SHA-1) read once: (local path, file dict). Raises naming
    the file when it holds no ``vision_proj.weight``, i.e. is no BLIP checkpoint ``{'model': state_dict}``."""
    sha1 = BLIP_SHA1.get(str(source).rsplit("/", 1)[-1]) if is_url(source) else None
    path = resolve_weights(source, allow_download=allow_download, sha1=sha1)
    payload = load_torch_file(path, trusted=trusted)
    state = payload.get("model", payload) if isinstance(payload, dict) else {}
    if "vision_proj.weight" not in state:
        raise CheckpointError(f"{path}: no 'vision_proj.weight'; expected a BLIP checkpoint {{'model': state_dict}}")
    return Path(path), payload
