"""OpenAI CLIP through the ``clip`` module of ``clip-anytorch``: offline loading, tiny presets, a retrieval wrapper.

Models are built by ``clip.model.build_model``, which infers every size from the state dict.
Official names resolve to local files checked against the published SHA-256 and are downloaded only when allowed.
"""
from __future__ import annotations

import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from common.io import CheckpointError, PathLike, atomic_torch_save, load_torch_file, resolve_weights
from common.run_record import note_checkpoint
from common.transforms import clip_preprocess

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    import clip
from clip.model import CLIP, build_model, convert_weights

CLIP_URL_BASE = "https://openaipublic.azureedge.net/clip/models"
CLIP_MODELS: dict[str, tuple[str, str]] = {
    "RN50": ("RN50.pt", "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762"),
    "RN101": ("RN101.pt", "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599"),
    "RN50x4": ("RN50x4.pt", "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd"),
    "RN50x16": ("RN50x16.pt", "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa"),
    "RN50x64": ("RN50x64.pt", "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c"),
    "ViT-B/32": ("ViT-B-32.pt", "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"),
    "ViT-B/16": ("ViT-B-16.pt", "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"),
    "ViT-L/14": ("ViT-L-14.pt", "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"),
    "ViT-L/14@336px": ("ViT-L-14-336px.pt", "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02"),
}
"""Official name → (file name, published SHA-256); the download URL is ``<base>/<sha256>/<file>``."""

DEFAULT_DOWNLOAD_ROOT = "~/.cache/clip"
CONTEXT_LENGTH = 77
SOT_TOKEN, EOT_TOKEN = 49406, 49407
JIT_ONLY_KEYS = ("input_resolution", "context_length", "vocab_size")

_TINY_TEXT = {"context_length": CONTEXT_LENGTH, "vocab_size": 49408, "transformer_width": 64,
              "transformer_heads": 1, "transformer_layers": 2}
TINY_CLIP: dict[str, dict[str, Any]] = {
    "vit": {"embed_dim": 16, "image_resolution": 32, "vision_layers": 2, "vision_width": 64,
            "vision_patch_size": 8, **_TINY_TEXT},
    "rn": {"embed_dim": 16, "image_resolution": 64, "vision_layers": (1, 1, 1, 1), "vision_width": 8,
           "vision_patch_size": None, **_TINY_TEXT},
}
"""Tiny presets for ``clip.model.CLIP``; vocab 49408 so the real BPE tokenizer works."""


def clip_url(name: str) -> str:
    """Download URL of an official CLIP model name."""
    file, sha256 = CLIP_MODELS[name]
    return f"{CLIP_URL_BASE}/{sha256}/{file}"


def resolve_clip_file(name_or_path: PathLike, *, allow_download: bool = False,
                      download_root: PathLike | None = None) -> Path:
    """Local file for an official name (SHA-256 checked, fetched only if ``allow_download``) or an existing path."""
    name = str(name_or_path)
    if name in CLIP_MODELS:
        root = Path(download_root or DEFAULT_DOWNLOAD_ROOT).expanduser()
        return resolve_weights(clip_url(name), cache_dir=root, allow_download=allow_download,
                               sha256=CLIP_MODELS[name][1])
    path = Path(name).expanduser()
    if path.is_file():
        return path
    raise ValueError(f"{name!r} is neither an existing file nor a known CLIP model name; "
                     f"known names: {', '.join(CLIP_MODELS)}")


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(member.endswith("constants.pkl") for member in archive.namelist())


def read_clip_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """The CLIP state dict in a TorchScript file (official downloads), a plain state dict, or ``{'CLIP': sd, ...}``
    (CLIP4Cir/MLCL fine-tuned files). The TorchScript-only keys are dropped."""
    path = Path(path)
    if _is_torchscript(path):
        note_checkpoint(path, "CLIP weights")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            state_dict = torch.jit.load(str(path), map_location="cpu").state_dict()
    else:
        loaded = load_torch_file(path)
        state_dict = loaded.get("CLIP", loaded) if isinstance(loaded, dict) else loaded
    if not isinstance(state_dict, dict) or not {"text_projection", "visual.conv1.weight"} <= set(state_dict):
        keys = list(state_dict)[:8] if isinstance(state_dict, dict) else type(state_dict).__name__
        raise CheckpointError(f"{path}: not a CLIP state dict (no 'text_projection' / 'visual.conv1.weight'; "
                              f"found {keys}). Expected an OpenAI CLIP file, a state dict or {{'CLIP': state_dict}}.")
    return {key: value for key, value in state_dict.items() if key not in JIT_ONLY_KEYS}


def clip_info(model: CLIP) -> dict[str, Any]:
    """Sizes of a built CLIP: input_resolution, embed_dim, context_length, vocab_size, vision ('vit'/'resnet'),
    dtype."""
    return {
        "input_resolution": int(model.visual.input_resolution),
        "embed_dim": int(model.text_projection.shape[1]),
        "context_length": int(model.context_length),
        "vocab_size": int(model.vocab_size),
        "vision": "vit" if hasattr(model.visual, "proj") else "resnet",
        "dtype": str(model.dtype).removeprefix("torch."),
    }


def load_clip(name_or_path: PathLike, *, device: str | torch.device, dtype: torch.dtype = torch.float32,
              allow_download: bool = False,
              download_root: PathLike | None = None) -> tuple[CLIP, Callable, dict[str, Any]]:
    """Build a CLIP model offline. Returns ``(model, preprocess, info)``; the model is in eval mode.

    ``name_or_path``: an official name (``RN50x4``, ``ViT-B/16``, ... see ``CLIP_MODELS``), looked up as
    ``<download_root or ~/.cache/clip>/<file>.pt`` and checked against its published SHA-256; or a local
    TorchScript file, state dict, or ``{'CLIP': state_dict}`` checkpoint.
    ``dtype``: float32 gives an fp32 model whose weights equal the file's exactly (fine-tuned fp32 weights are not
    rounded through fp16, unlike ``clip.load`` followed by ``load_state_dict``). float16 keeps CLIP's GPU layout
    (``convert_weights``: conv/linear/attention weights and projections fp16, LayerNorm and embeddings fp32) and is
    honoured on CUDA only: on CPU the model is fp32, as ``clip.load`` does, with a warning.
    ``preprocess`` is CLIP's own (resize, centre crop, normalise) at the model's input resolution.
    ``info``: see :func:`clip_info`, plus ``source`` (the file read).
    """
    device = torch.device(device)
    if dtype not in (torch.float32, torch.float16):
        raise ValueError(f"dtype must be torch.float32 or torch.float16, got {dtype}")
    if dtype == torch.float16 and device.type == "cpu":
        warnings.warn("load_clip: float16 requested on CPU; building an fp32 model as clip.load does", stacklevel=2)
        dtype = torch.float32
    path = resolve_clip_file(name_or_path, allow_download=allow_download, download_root=download_root)
    state_dict = read_clip_state_dict(path)
    try:
        model = build_model(dict(state_dict))
        if dtype == torch.float32:
            model.float()
            model.load_state_dict(state_dict)
    except (RuntimeError, KeyError, AssertionError) as error:
        raise CheckpointError(f"{path}: the CLIP state dict does not build a consistent model ({error})") from error
    model = model.to(device).eval()
    info = {**clip_info(model), "source": str(path)}
    return model, clip_preprocess(info["input_resolution"]), info


def tokenize(texts: str | Sequence[str], context_length: int | None = None, truncate: bool = True) -> torch.Tensor:
    """CLIP BPE token ids [N, context_length] (default 77): SOT, tokens, EOT, zero padding.

    With ``truncate`` the last kept token becomes EOT; without it an over-long text raises RuntimeError.
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    return clip.tokenize(texts, context_length=context_length or CONTEXT_LENGTH, truncate=truncate)


class ClipRetrievalWrapper(nn.Module):
    """Encode images and texts into L2-normalised features of the wrapped CLIP (dimension and dtype from it)."""

    def __init__(self, model: CLIP):
        super().__init__()
        self.model = model

    @property
    def dim(self) -> int:
        return int(self.model.text_projection.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def device(self) -> torch.device:
        return self.model.text_projection.device

    @property
    def context_length(self) -> int:
        return int(self.model.context_length)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] preprocessed images → [B, dim] unit vectors in the model dtype."""
        features = self.model.encode_image(images.to(self.device, self.dtype))
        return F.normalize(features, dim=-1)

    def encode_text(self, texts: torch.Tensor | str | Sequence[str], truncate: bool = True) -> torch.Tensor:
        """Token ids [B, L] or strings (tokenised at the model's context length) → [B, dim] unit vectors.

        Features are pooled at the EOT token (the largest id in each row), as CLIP does.
        """
        if not isinstance(texts, torch.Tensor):
            texts = tokenize(texts, self.context_length, truncate)
        features = self.model.encode_text(texts.to(self.device))
        return F.normalize(features, dim=-1)


def tiny_clip_state_dict(kind: str = "vit", seed: int = 0,
                         image_resolution: int | None = None) -> dict[str, torch.Tensor]:
    """A random fp32 state dict of the tiny ``kind`` preset ('vit' or 'rn') that ``build_model`` accepts.

    ``image_resolution`` overrides the preset's (a multiple of 8 for 'vit', of 32 for 'rn').
    """
    if kind not in TINY_CLIP:
        raise ValueError(f"unknown tiny CLIP kind {kind!r}; choose from {', '.join(TINY_CLIP)}")
    config = dict(TINY_CLIP[kind])
    if image_resolution is not None:
        config["image_resolution"] = image_resolution
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(**config)
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def write_tiny_clip(path: PathLike, kind: str = "vit", *, seed: int = 0, fmt: str = "state_dict",
                    half: bool = False, image_resolution: int | None = None) -> Path:
    """Save a tiny CLIP as ``fmt``: 'state_dict', 'checkpoint' (``{'epoch': 0, 'CLIP': sd}``, as CLIP4Cir/MLCL
    save) or 'torchscript' (a traced module with the official files' extra keys). ``half`` stores the weights
    ``convert_weights`` halves in fp16, as the official files do."""
    state_dict = tiny_clip_state_dict(kind, seed, image_resolution)
    model = build_model(dict(state_dict)).float()
    model.load_state_dict(state_dict)
    if half:
        convert_weights(model)
    path = Path(path)
    if fmt == "state_dict":
        return atomic_torch_save(model.state_dict(), path)
    if fmt == "checkpoint":
        return atomic_torch_save({"epoch": 0, "CLIP": model.state_dict()}, path)
    if fmt != "torchscript":
        raise ValueError(f"unknown format {fmt!r}; choose from state_dict, checkpoint, torchscript")
    info = clip_info(model)
    for key in JIT_ONLY_KEYS:
        if hasattr(model, key):
            delattr(model, key)
        model.register_buffer(key, torch.tensor(info[key]))
    size = info["input_resolution"]
    images, tokens = torch.zeros(1, 3, size, size), tokenize(["a photo"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace_module(model, {"encode_image": images, "encode_text": tokens,
                                                "forward": (images, tokens)}, check_trace=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(path))
    return path
