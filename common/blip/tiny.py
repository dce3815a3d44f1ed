"""Tiny random-weight BLIP configs, vocabularies and checkpoint files for tests and the offline demo."""
from __future__ import annotations

import dataclasses
import string
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from common.blip.config import MedConfig, ViTConfig
from common.blip.models import BlipRetrieval
from common.io import PathLike, atomic_torch_save, atomic_write_json, atomic_write_text

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


@dataclass(frozen=True)
class TinyBlipFiles:
    """A tiny BLIP written as a user's files: ``model_base.pth``, ``med_config.json``, ``vit_config.json`` and
    ``tokenizer/vocab.txt``, with the MED config and tokenizer size it was built from."""

    checkpoint: Path
    med_config: Path
    vit_config: Path
    tokenizer: Path
    image_size: int
    med: MedConfig

    def flags(self) -> list[str]:
        """The flags that point a BLIP CIR script (Bi-BLIP4CIR, Re-ranking) at these files."""
        return ["--blip-pretrained-path", str(self.checkpoint), "--med-config-path", str(self.med_config),
                "--vit-config", str(self.vit_config), "--tokenizer", str(self.tokenizer),
                "--input-dim", str(self.image_size)]


def write_tiny_blip_files(folder: PathLike, vit: ViTConfig, image_size: int = 32, *, num_layers: int = 2,
                          extra_words: Iterable[str] = (), max_positions: int = 128, seed: int = 0) -> TinyBlipFiles:
    """Write a tiny random BLIP in the pre-training layout (``model_base.pth``) with its config files and a
    vocabulary of ``TINY_WORDS`` plus ``extra_words`` under ``folder``."""
    folder = Path(folder)
    vocab = write_tiny_vocab(folder / "tokenizer", extra_words=extra_words)
    vocab_size = len(vocab.read_text().splitlines()) + 2
    med = tiny_med_config(vocab_size, vit.width, num_layers=num_layers, max_positions=max_positions)
    atomic_write_json(dataclasses.asdict(med), folder / "med_config.json")
    atomic_write_json(dataclasses.asdict(vit), folder / "vit_config.json")
    checkpoint = write_tiny_blip_checkpoint(folder / "model_base.pth", image_size=image_size, vit=vit, med=med,
                                            layout="pretrain", seed=seed)
    return TinyBlipFiles(checkpoint, folder / "med_config.json", folder / "vit_config.json", folder / "tokenizer",
                         image_size, med)
