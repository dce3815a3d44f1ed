"""Character- and word-level caption corruptions of COCO-C / Flickr-C (``MM_Robustness: text_perturbation/``).

Level ``L`` (1-7) sets the rate ``0.05·L``.

- Character level, with ``nlpaug``: ``KeyboardAug``, ``OcrAug`` and
  ``RandomCharAug_{insert,substitute,swap,delete}`` with ``aug_word_p = 0.05·L`` and the library's other defaults;
  the first element of the returned list is kept.
- Word level, the EDA operations (Wei & Zou 2019) re-implemented here: ``sr`` replaces and ``ri`` inserts WordNet
  synonyms of ``max(1, ⌊α·n⌋)`` words, ``rs`` swaps ``max(1, ⌊α·n⌋)`` word pairs, ``rd`` deletes each word with
  probability α (keeping one random word if all go); EDA first reduces the caption to lowercase letters and single
  spaces, so these captions lose case, digits and punctuation. ``ip`` inserts 1…⌊α·n+1⌋ marks from ``. , ! ? ; :``
  before randomly chosen words and keeps the caption as is.
- Sentence level (``formal``, ``casual``, ``passive``, ``active``, ``back_trans``): Styleformer / WMT19 models
  from a local folder the user supplies (:mod:`tcr.sentence_corruptions`, :data:`SENTENCE_LEVEL_HELP`).

WordNet comes from the WordNet 3.0 ``dict`` files (Debian's ``wordnet-base`` puts them in ``/usr/share/wordnet``;
an ``nltk_data/corpora/wordnet`` folder works too), read by :class:`tcr.wordnet.WordNetSynonyms` with nltk's
lemmatisation rules, so neither nltk nor a download is needed.

Differences from upstream: randomness comes from one ``random.Random`` per (type, level) instead of a global
generator seeded once; synonyms and candidate words are sorted before they are drawn from (upstream iterates
Python sets, whose order changes with the hash seed, so its output is not reproducible); upstream's retry until a
SentenceTransformer cosine ≥ 0.9 is optional (``accept``) and off by default.
"""
from __future__ import annotations

import random
import re
from collections.abc import Callable

import numpy as np

from common.io import PathLike
from tcr.configs.tree import CHAR_CORRUPTIONS, SENTENCE_CORRUPTIONS, WORD_CORRUPTIONS
from tcr.sentence_corruptions import SENTENCE_MODELS, SentenceCorrupter
from tcr.wordnet import find_wordnet

PUNCTUATIONS = (".", ",", "!", "?", ";", ":")
STOP_WORDS = frozenset((
    "i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers "
    "herself it its itself they them their theirs themselves what which who whom this that these those am is are "
    "was were be been being have has had having do does did doing a an the and but if or because as until while of "
    "at by for with about against between into through during before after above below to from up down in out on "
    "off over under again further then once here there when where why how all any both each few more most other "
    "some such no nor not only own same so than too very s t can will just don should now").split() + [""])
"""EDA's stop words: never picked for synonym replacement."""
MAX_ATTEMPTS = 100
SENTENCE_LEVEL_HELP = (
    "sentence-level corruptions ({names}) need models that this tool does not ship or download: download the "
    "Hugging Face repositories " + ", ".join(sorted({repo for repos in SENTENCE_MODELS.values() for repo in repos}))
    + " into DIR/<repository id> and pass --sentence_models DIR (or use the authors' coco-TP / flickr-TP download "
    "for annotation_<type>/1/)."
)

Synonyms = Callable[[str], list[str]]
Accept = Callable[[str, str], bool]


def check_text_corruption(name: str, sentence_models: PathLike | None = None) -> None:
    """Raise ValueError for an unknown type (listing valid names), or a sentence-level one without
    ``sentence_models`` (the folder of its models)."""
    if name in SENTENCE_CORRUPTIONS:
        if sentence_models is None:
            raise ValueError(SENTENCE_LEVEL_HELP.format(names=", ".join(SENTENCE_CORRUPTIONS)))
        return
    if name not in CHAR_CORRUPTIONS + WORD_CORRUPTIONS:
        valid = ", ".join(CHAR_CORRUPTIONS + WORD_CORRUPTIONS)
        raise ValueError(f"unknown text corruption {name!r}; valid types: {valid}, and with --sentence_models "
                         f"{', '.join(SENTENCE_CORRUPTIONS)}")


def rate(level: int) -> float:
    """``0.05·level`` for a level in 1..7."""
    if level not in range(1, 8):
        raise ValueError(f"text corruption level must be 1..7, got {level!r}")
    return 0.05 * level


# ------------------------------------------------------------------------------------------- character level

def char_augmenter(name: str, level: int):
    """The nlpaug character augmenter of ``name`` at ``aug_word_p = 0.05·level``."""
    import nlpaug.augmenter.char as nac

    if name not in CHAR_CORRUPTIONS:
        raise ValueError(f"unknown character-level corruption {name!r}; valid: {', '.join(CHAR_CORRUPTIONS)}")
    if name == "KeyboardAug":
        return nac.KeyboardAug(aug_word_p=rate(level))
    if name == "OcrAug":
        return nac.OcrAug(aug_word_p=rate(level))
    return nac.RandomCharAug(action=name.split("_", 1)[1], aug_word_p=rate(level))


def augment_chars(augmenter, text: str, rng: random.Random) -> str:
    """One nlpaug augmentation of ``text``; nlpaug's global ``random``/NumPy generators are seeded from ``rng``."""
    random.seed(rng.getrandbits(64))
    np.random.seed(rng.getrandbits(32))
    output = augmenter.augment(text)
    if isinstance(output, list):
        output = output[0] if output else None
    return output if output else text


# ------------------------------------------------------------------------------------------------ word level

def only_chars(line: str) -> str:
    """EDA's cleaning: drop apostrophes, hyphens and whitespace become spaces, lowercase, every non-letter becomes a
    space, runs of spaces collapse, a leading space goes."""
    line = line.replace("’", "").replace("'", "").replace("-", " ").replace("\t", " ").replace("\n", " ").lower()
    line = "".join(c if c in "qwertyuiopasdfghjklzxcvbnm " else " " for c in line)
    return re.sub(" +", " ", line).removeprefix(" ")


def synonym_replacement(words: list[str], n: int, synonyms: Synonyms, rng: random.Random) -> list[str]:
    """Replace every occurrence of up to ``n`` distinct non-stop words (in random order) by a random synonym."""
    new_words = list(words)
    candidates = sorted({word for word in words if word not in STOP_WORDS})
    rng.shuffle(candidates)
    replaced = 0
    for candidate in candidates:
        options = synonyms(candidate)
        if options:
            choice = rng.choice(options)
            new_words = [choice if word == candidate else word for word in new_words]
            replaced += 1
        if replaced >= n:
            break
    return " ".join(new_words).split(" ")


def random_insertion(words: list[str], n: int, synonyms: Synonyms, rng: random.Random) -> list[str]:
    """``n`` times: insert the first synonym of a random word at a random position. A word with synonyms is looked
    for up to 10 times; as in EDA, an insertion whose synonyms turn up only at the 10th look is dropped."""
    new_words = list(words)
    for _ in range(n):
        for attempt in range(10):
            options = synonyms(new_words[rng.randint(0, len(new_words) - 1)])
            if options:
                break
        if options and attempt < 9:
            new_words.insert(rng.randint(0, len(new_words) - 1), options[0])
    return new_words


def random_swap(words: list[str], n: int, rng: random.Random) -> list[str]:
    """``n`` times: swap two random positions. As in EDA, a swap is dropped once 4 draws of the second position
    were needed (the first 3 hit the first position)."""
    new_words = list(words)
    for _ in range(n):
        first = rng.randint(0, len(new_words) - 1)
        second, draws = first, 0
        while second == first and draws < 4:
            second = rng.randint(0, len(new_words) - 1)
            draws += 1
        if second != first and draws <= 3:
            new_words[first], new_words[second] = new_words[second], new_words[first]
    return new_words


def random_deletion(words: list[str], p: float, rng: random.Random) -> list[str]:
    """Delete each word with probability ``p``; a one-word caption stays, an all-deleted one keeps a random word."""
    if len(words) == 1:
        return words
    kept = [word for word in words if rng.uniform(0, 1) > p]
    return kept or [words[rng.randint(0, len(words) - 1)]]


def eda(sentence: str, operation: str, alpha: float, synonyms: Synonyms | None, rng: random.Random) -> str:
    """One EDA augmentation (``sr``, ``ri``, ``rs`` or ``rd``) of ``sentence`` at rate ``alpha``."""
    words = [word for word in only_chars(sentence).split(" ") if word]
    if not words:
        return only_chars(sentence)
    n = max(1, int(alpha * len(words)))
    if operation in ("sr", "ri") and synonyms is None:
        raise ValueError(f"{operation} needs a synonym source (WordNet)")
    if operation == "sr":
        words = synonym_replacement(words, n, synonyms, rng)
    elif operation == "ri":
        words = random_insertion(words, n, synonyms, rng)
    elif operation == "rs":
        words = random_swap(words, n, rng)
    elif operation == "rd":
        words = random_deletion(words, alpha, rng)
    else:
        raise ValueError(f"unknown EDA operation {operation!r}; valid: sr, ri, rs, rd")
    return only_chars(" ".join(words))


def insert_punctuation(sentence: str, ratio: float, rng: random.Random) -> str:
    """Insert 1…⌊ratio·n+1⌋ random marks from ``. , ! ? ; :``, each before a distinct random word (split on ' ')."""
    words = sentence.split(" ")
    count = min(rng.randint(1, int(ratio * len(words) + 1)), len(words))
    chosen = set(rng.sample(range(len(words)), count))
    output = []
    for index, word in enumerate(words):
        if index in chosen:
            output.append(PUNCTUATIONS[rng.randint(0, len(PUNCTUATIONS) - 1)])
        output.append(word)
    return " ".join(output)


def augment_words(text: str, name: str, level: int, rng: random.Random, synonyms: Synonyms | None = None,
                  accept: Accept | None = None) -> str:
    """One word-level corruption; with ``accept`` retried (≤ 100 times) until ``accept(text, candidate)``, else
    the last attempt is kept."""
    candidate = text
    for _ in range(MAX_ATTEMPTS if accept is not None else 1):
        if name == "ip":
            candidate = insert_punctuation(text, rate(level), rng)
        else:
            candidate = eda(text, name, rate(level), synonyms, rng)
        if accept is None or accept(text, candidate):
            break
    return candidate


class SentenceSimilarity:
    """Upstream's acceptance test: cosine of SentenceTransformer embeddings ≥ ``threshold`` (needs the optional
    ``sentence-transformers`` package and a local or cached model)."""

    def __init__(self, model_name: str, threshold: float = 0.9):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as error:
            raise ImportError("--similarity_model needs the sentence-transformers package "
                              "(pip install sentence-transformers)") from error
        self.model = SentenceTransformer(model_name)
        self.threshold = threshold

    def __call__(self, original: str, candidate: str) -> bool:
        first, second = self.model.encode([original, candidate], normalize_embeddings=True)
        return float(np.dot(first, second)) >= self.threshold


class CaptionCorrupter:
    """Corrupt captions with one text corruption type at one level; all randomness comes from ``seed``.

    Sentence-level types read their models from ``sentence_models`` (:mod:`tcr.sentence_corruptions`); the
    four styles retry until ``accept`` as the word-level types do (back-translation is not filtered upstream).
    """

    def __init__(self, name: str, level: int, seed: int = 0, synonyms: Synonyms | None = None,
                 accept: Accept | None = None, sentence_models: PathLike | None = None, device: str = "cpu"):
        check_text_corruption(name, sentence_models)
        rate(level)
        self.name, self.level, self.accept = name, level, accept
        self.rng = random.Random(f"{seed}:{name}:{level}")
        self.synonyms = synonyms
        self.augmenter = char_augmenter(name, level) if name in CHAR_CORRUPTIONS else None
        self.sentence = SentenceCorrupter(name, sentence_models, seed, device) if name in SENTENCE_CORRUPTIONS else None
        if name in ("sr", "ri") and synonyms is None:
            self.synonyms = find_wordnet()

    def __call__(self, text: str) -> str:
        if self.augmenter is not None:
            return augment_chars(self.augmenter, text, self.rng)
        if self.sentence is not None:
            attempts = MAX_ATTEMPTS if self.accept is not None and self.name != "back_trans" else 1
            for _ in range(attempts):
                candidate = self.sentence(text)
                if self.accept is None or self.accept(text, candidate):
                    break
            return candidate
        return augment_words(text, self.name, self.level, self.rng, self.synonyms, self.accept)
