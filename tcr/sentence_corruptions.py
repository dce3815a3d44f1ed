"""Sentence-level caption corruptions of COCO-C / Flickr-C from local copies of the original's models
(``MM_Robustness: text_perturbation/``: Styleformer for the four styles, nlpaug's ``BackTranslationAug`` with
WMT19 for ``back_trans``).

The models are read from a folder the user downloaded them to (``--sentence_models DIR``), one subfolder per
Hugging Face repository id, e.g. ``DIR/prithivida/informal_to_formal_styletransfer``; nothing is downloaded.

- ``formal`` / ``casual`` (Styleformer styles 0 and 1): the T5 style model samples 5 candidates for
  ``"transfer Casual to Formal: " + caption`` (``top_k=50, top_p=0.95, max_length=32``); each is scored by the
  adequacy model (entailment probability over the contradiction and entailment logits) and the best one scoring
  ≥ 0.95 is kept. When none passes, Styleformer returns None; we keep the clean caption.
- ``passive`` / ``active`` (styles 2 and 3): one sample of the style model (an empty one keeps the clean
  caption).
- ``back_trans``: English → German → English with the two FSMT models and their own generation settings
  (``max_length=300``), as ``BackTranslationAug``; an empty translation keeps the clean caption.

Sampling draws from a torch generator seeded per caption from the corrupter's seed (Styleformer used the global,
unseeded one), so a run is reproducible.
"""
from __future__ import annotations

import random
from pathlib import Path

import torch

from common.io import PathLike

STYLE_MODELS = {
    "formal": "prithivida/informal_to_formal_styletransfer",
    "casual": "prithivida/formal_to_informal_styletransfer",
    "passive": "prithivida/active_to_passive_styletransfer",
    "active": "prithivida/passive_to_active_styletransfer",
}
STYLE_PREFIXES = {
    "formal": "transfer Casual to Formal: ",
    "casual": "transfer Formal to Casual: ",
    "passive": "transfer Active to Passive: ",
    "active": "transfer Passive to Active: ",
}
ADEQUACY_MODEL = "prithivida/parrot_adequacy_on_BART"
TRANSLATION_MODELS = ("facebook/wmt19-en-de", "facebook/wmt19-de-en")
SENTENCE_MODELS = {**{name: (repo, ADEQUACY_MODEL) if name in ("formal", "casual") else (repo,)
                      for name, repo in STYLE_MODELS.items()}, "back_trans": TRANSLATION_MODELS}
"""The Hugging Face repositories each sentence-level type reads (as subfolders of ``--sentence_models``)."""
QUALITY_FILTER = 0.95
MAX_CANDIDATES = 5


def model_folder(root: PathLike, repo: str) -> Path:
    """``root/<repo id>``; raises FileNotFoundError naming the folder and the repository when it is missing."""
    folder = Path(root) / repo
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no local copy of the Hugging Face model {repo} (expected its config.json "
                                f"and weights; e.g. huggingface-cli download {repo} --local-dir {folder})")
    return folder


def _load_seq2seq(folder: Path, device: str):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForSeq2SeqLM.from_pretrained(folder, local_files_only=True).to(device).eval()
    return tokenizer, model


class SentenceCorrupter:
    """One sentence-level corruption (``formal``, ``casual``, ``passive``, ``active`` or ``back_trans``) with the
    models under ``models_root``; ``seed`` fixes every sampled caption."""

    def __init__(self, name: str, models_root: PathLike, seed: int = 0, device: str = "cpu"):
        if name not in SENTENCE_MODELS:
            raise ValueError(f"unknown sentence-level corruption {name!r}; valid: {', '.join(SENTENCE_MODELS)}")
        folders = [model_folder(models_root, repo) for repo in SENTENCE_MODELS[name]]
        self.name, self.device = name, device
        self.rng = random.Random(f"{seed}:{name}")
        self.models = [_load_seq2seq(folder, device) for folder in (folders if name == "back_trans" else folders[:1])]
        self.adequacy = None
        if name in ("formal", "casual"):
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            self.adequacy = (AutoTokenizer.from_pretrained(folders[1], local_files_only=True),
                             AutoModelForSequenceClassification.from_pretrained(
                                 folders[1], local_files_only=True).to(device).eval())

    @torch.no_grad()
    def __call__(self, text: str) -> str:
        if self.name == "back_trans":
            translated = text
            for tokenizer, model in self.models:
                batch = tokenizer([translated], padding=True, truncation=True, return_tensors="pt").to(self.device)
                ids = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                     max_length=300)
                translated = tokenizer.batch_decode(ids, skip_special_tokens=True)[0].strip()
                if not translated:
                    return text
            return translated
        tokenizer, model = self.models[0]
        input_ids = tokenizer.encode(STYLE_PREFIXES[self.name] + text, return_tensors="pt").to(self.device)
        count = MAX_CANDIDATES if self.adequacy is not None else 1
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.rng.getrandbits(63))
            outputs = model.generate(input_ids, do_sample=True, max_length=32, top_k=50, top_p=0.95,
                                     early_stopping=True, num_return_sequences=count)
        candidates = [candidate for candidate in dict.fromkeys(
            tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in outputs) if candidate]
        if self.adequacy is None:
            return candidates[0] if candidates else text
        scored = [(self.adequacy_score(text, candidate), candidate) for candidate in candidates]
        passing = [(score, candidate) for score, candidate in scored if score >= QUALITY_FILTER]
        return max(passing, key=lambda pair: pair[0])[1] if passing else text

    @torch.no_grad()
    def adequacy_score(self, source: str, candidate: str) -> float:
        """Styleformer's adequacy: softmax over the (contradiction, entailment) logits, entailment's share."""
        tokenizer, model = self.adequacy
        ids = tokenizer.encode(source, candidate, return_tensors="pt", truncation="only_first").to(self.device)
        logits = model(ids).logits[:, [0, 2]]
        return float(logits.softmax(dim=1)[0, 1])
