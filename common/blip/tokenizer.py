"""The BERT tokenizer of BLIP (`init_tokenizer`), resolved from local files unless downloads are allowed."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import BertTokenizer

from common.io import PathLike

TOKENIZER_ENV = "BLIP_TOKENIZER_DIR"
HUB_NAME = "bert-base-uncased"
MAX_POSITIONS = 512


def build_blip_tokenizer(
    path_or_name: PathLike | None = None,
    *,
    allow_download: bool = False,
    cache_dir: PathLike | None = None,
) -> BertTokenizer:
    """An uncased ``BertTokenizer`` plus BLIP's ``[DEC]`` (bos) and ``[ENC]`` tokens; ``enc_token_id`` is set.

    Resolution: ``path_or_name`` (a folder with ``vocab.txt``, the ``vocab.txt`` file itself, or a hub name), then
    ``$BLIP_TOKENIZER_DIR``, then ``bert-base-uncased`` from the Hugging Face cache (``cache_dir`` or the default).
    The hub is contacted only with ``allow_download``. ``[DEC]`` gets id V and ``[ENC]`` V + 1 (V = vocab size).
    """
    source = "argument"
    if path_or_name is None and os.environ.get(TOKENIZER_ENV):
        path_or_name, source = os.environ[TOKENIZER_ENV], f"${TOKENIZER_ENV}"
    if path_or_name is None:
        tokenizer = _from_hub(HUB_NAME, allow_download, cache_dir)
    else:
        path = Path(path_or_name).expanduser()
        if path.is_file():
            tokenizer = BertTokenizer(vocab_file=str(path), do_lower_case=True, model_max_length=MAX_POSITIONS)
        elif path.is_dir():
            if not (path / "vocab.txt").is_file():
                raise FileNotFoundError(f"{path} (from {source}): no vocab.txt in this folder. {_HOW_TO_PROVIDE}")
            tokenizer = BertTokenizer.from_pretrained(str(path), local_files_only=True)
        elif source == "argument" and _looks_like_hub_name(str(path_or_name)):
            tokenizer = _from_hub(str(path_or_name), allow_download, cache_dir)
        else:
            raise FileNotFoundError(f"{path} (from {source}): no such file or folder. {_HOW_TO_PROVIDE}")
    tokenizer.model_max_length = min(tokenizer.model_max_length, MAX_POSITIONS)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    tokenizer.enc_token_id = tokenizer.additional_special_tokens_ids[0]
    return tokenizer


_HOW_TO_PROVIDE = (
    "Provide the BERT tokenizer of BLIP ('bert-base-uncased') in one of these ways: pass a folder holding its "
    f"vocab.txt (or the vocab.txt file) as the tokenizer path (scripts: --tokenizer); set {TOKENIZER_ENV} to that "
    "folder; or put 'bert-base-uncased' in the Hugging Face cache (on a machine with network: python -c \"from "
    "transformers import BertTokenizer; BertTokenizer.from_pretrained('bert-base-uncased')\"), or allow downloads."
)


def _looks_like_hub_name(value: str) -> bool:
    return not value.startswith((".", "/", "~")) and not value.endswith(".txt") and value.count("/") <= 1


def _from_hub(name: str, allow_download: bool, cache_dir: PathLike | None) -> BertTokenizer:
    try:
        return BertTokenizer.from_pretrained(name, local_files_only=not allow_download, cache_dir=cache_dir)
    except OSError as error:
        where = "the Hugging Face hub" if allow_download else "the local Hugging Face cache"
        raise FileNotFoundError(f"No tokenizer '{name}' found in {where}. {_HOW_TO_PROVIDE}") from error


def tokenize(
    tokenizer: BertTokenizer,
    texts: str | Sequence[str],
    *,
    padding: str = "longest",
    max_length: int | None = None,
    truncation: bool = False,
    first_token_id: int | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize to ``(input_ids, attention_mask)`` on ``device``.

    Upstream settings: BLIP retrieval/TCR ``padding='max_length', max_length=35, truncation=True``; Bi-BLIP4CIR
    ``padding='longest', max_length=77, truncation=True``; CR ``padding='longest'`` without truncation.
    ``first_token_id`` overwrites position 0 (``tokenizer.enc_token_id`` for multimodal use).
    """
    batch = tokenizer(
        [texts] if isinstance(texts, str) else list(texts),
        padding=padding,
        truncation=truncation,
        max_length=max_length,
        return_tensors="pt",
    )
    input_ids = batch.input_ids
    if first_token_id is not None:
        input_ids[:, 0] = first_token_id
    return input_ids.to(device), batch.attention_mask.to(device)
