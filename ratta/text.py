"""The text side of RA-TTA: the description JSONs, the CuPL+template classifier and the description bank."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from common.io import MalformedFileError, read_json
from ratta.core import TextBanks

EncodeFn = Callable[[list[str]], torch.Tensor]


def description_file(descriptions_dir: str | Path, dataset: str) -> Path:
    """``<descriptions_dir>/CuPL_prompts_<dataset>.json``, as upstream's hard-coded path."""
    return Path(descriptions_dir) / f"CuPL_prompts_{dataset}.json"


def load_descriptions(path: str | Path, classnames: Sequence[str]) -> dict[str, list[str]]:
    """``{class name: [description, ...]}`` for every class, keyed exactly (case-sensitive) as upstream."""
    table = read_json(path, "a JSON object {class name: [description, ...]} (CuPL prompts)")
    if not isinstance(table, dict):
        raise MalformedFileError(f"{path}: expected a JSON object {{class name: [description, ...]}}")
    missing = [name for name in classnames if name not in table]
    if missing:
        raise MalformedFileError(f"{path}: no descriptions for {len(missing)} classes: {missing[:10]}"
                                 f"{' ...' if len(missing) > 10 else ''} (keys must equal the class names exactly)")
    bad = [name for name in classnames if not isinstance(table[name], list)
           or not all(isinstance(text, str) for text in table[name])]
    if bad:
        raise MalformedFileError(f"{path}: the entries of {bad[:5]} are not lists of strings")
    return {name: table[name] for name in classnames}


def encode_in_batches(encode: EncodeFn, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    """Unit text embeddings [len(texts), D] in float32, ``batch_size`` strings at a time."""
    parts = [encode(texts[i:i + batch_size]).float() for i in range(0, len(texts), batch_size)]
    return F.normalize(torch.cat(parts), dim=-1)


def build_text_banks(encode: EncodeFn, classnames: Sequence[str], descriptions: dict[str, list[str]],
                     templates: Sequence[str], pre_template: str, batch_size: int = 256) -> TextBanks:
    """W [D, C]: per class, normalise(mean of the unit embeddings of its templates and raw descriptions).
    E [F, D]: per class, ``pre_template + d`` for each description d plus the stripped pre-template alone."""
    classifier_texts, bank_texts, owners, bank_owner = [], [], [], []
    for c, name in enumerate(classnames):
        texts = [template.format(name) for template in templates] + list(descriptions[name])
        classifier_texts += texts
        owners += [c] * len(texts)
        prefix = pre_template.format(name)
        rows = [prefix + text for text in descriptions[name]] + [prefix.rstrip()]
        bank_texts += rows
        bank_owner += [c] * len(rows)
    features = encode_in_batches(encode, classifier_texts, batch_size)
    owner = torch.tensor(owners, device=features.device)
    W = features.new_zeros(len(classnames), features.shape[1]).index_add_(0, owner, features)
    W = F.normalize(W / torch.bincount(owner, minlength=len(classnames))[:, None], dim=-1).T.contiguous()
    E = encode_in_batches(encode, bank_texts, batch_size)
    return TextBanks(W=W, E=E, name=torch.tensor(bank_owner))
