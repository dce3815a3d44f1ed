"""Tiny random-weight BLIP configs, vocabularies and checkpoint files for tests and the offline demo."""
from __future__ import annotations

import string
from collections.abc import Iterable
from pathlib import Path

import torch

from common.blip.config import MedConfig, ViTConfig
from common.blip.models import BlipRetrieval
from common.io import PathLike, atomic_torch_save, atomic_write_text

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PUNCTUATION = ("[", "]", ".", ",", "-", "!", "?")
TINY_WORDS = (
    "the", "is", "it", "make", "red", "blue", "green", "shirt", "dress", "with", "and", "more", "less", "dog",
    "cat", "photo", "of", "two", "on", "forward", "backward",
)


def tiny_vit_config(width: int = 32, depth: int = 2, heads: int = 2, patch_size: int = 8) -> ViTConfig:
    """A ViT small enough for CPU tests (32-px images give 16 patches + CLS)."""
    return ViTConfig(patch_size=patch_size, width=width, depth=depth, heads=heads)


def tiny_med_config(
    vocab_size: int,
    encoder_width: int,
    num_layers: int = 2,
    hidden_size: int = 32,
    heads: int = 2,
    intermediate_size: int = 64,
    max_positions: int = 64,
) -> MedConfig:
    """A MED config of BLIP's structure at test size; ``vocab_size`` = tokenizer vocabulary + 2 (``[DEC]``,
    ``[ENC]``)."""
    return MedConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_positions,
        encoder_width=encoder_width,
    )


def write_tiny_vocab(directory: PathLike, extra_words: Iterable[str] = (), words: Iterable[str] = TINY_WORDS) -> Path:
    """Write a BERT-style ``vocab.txt`` (``[PAD]`` at 0, the specials, ``[ ] . , - ! ?``, a-z, ##a-##z, then
    ``words`` and ``extra_words``, lower-cased, without duplicates) and return its path."""
    letters = tuple(string.ascii_lowercase)
    tokens = list(SPECIAL_TOKENS + PUNCTUATION + letters + tuple("##" + c for c in letters))
    for word in (*words, *extra_words):
        word = word.lower()
        if word not in tokens:
            tokens.append(word)
    path = Path(directory) / "vocab.txt"
    atomic_write_text("\n".join(tokens) + "\n", path)
    return path


def write_tiny_blip_checkpoint(
    path: PathLike,
    image_size: int = 32,
    *,
    vocab_size: int | None = None,
    vit: ViTConfig | None = None,
    med: MedConfig | None = None,
    embed_dim: int = 16,
    queue_size: int = 8,
    layout: str = "retrieval",
    seed: int = 0,
) -> Path:
    """Write ``{'model': state_dict}`` of a random ``BlipRetrieval`` (ITM, momentum copies, queues) plus a stub
    ``text_decoder.*``, i.e. the key layout of BLIP's released files.

    ``layout='retrieval'`` keeps ``idx_queue``/``ptr_queue`` (``model_*_retrieval_*.pth``); ``'pretrain'``
    stores ``queue_ptr`` instead (``model_base.pth``). Pass ``med`` or ``vocab_size`` (tokenizer size + 2).
    All weights are perturbed so that a key that fails to load changes the outputs. The global RNG is untouched.
    """
    if layout not in ("retrieval", "pretrain"):
        raise ValueError(f"layout must be 'retrieval' or 'pretrain', got {layout!r}")
    vit = vit or tiny_vit_config()
    if med is None:
        if vocab_size is None:
            raise ValueError("pass med or vocab_size")
        med = tiny_med_config(vocab_size, vit.width)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BlipRetrieval(vit, med, image_size, embed_dim=embed_dim, queue_size=queue_size)
        state_dict = {key: value.clone() for key, value in model.state_dict().items()}
        for key, value in state_dict.items():
            if value.is_floating_point() and value.ndim > 0 and "queue" not in key:
                value.add_(0.05 * torch.randn_like(value))
        hidden, vocab = model.med_config.hidden_size, model.med_config.vocab_size
        state_dict["text_decoder.bert.embeddings.word_embeddings.weight"] = 0.02 * torch.randn(vocab, hidden)
        state_dict["text_decoder.cls.predictions.bias"] = torch.zeros(vocab)
    if layout == "pretrain":
        del state_dict["idx_queue"], state_dict["ptr_queue"]
        state_dict["queue_ptr"] = torch.zeros(1, dtype=torch.long)
    atomic_torch_save({"model": state_dict}, path)
    return Path(path)
