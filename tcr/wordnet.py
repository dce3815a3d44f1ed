"""WordNet 3.0 synonyms for the EDA corruptions ``sr`` and ``ri``, read from the ``dict`` files with nltk's
lemmatisation rules (no nltk, no download): Debian's ``wordnet-base`` puts them in ``/usr/share/wordnet``; an
``nltk_data/corpora/wordnet`` folder works too."""
from __future__ import annotations

import re
from pathlib import Path

from common.io import PathLike

WORDNET_DIRS = ("/usr/share/wordnet", "~/nltk_data/corpora/wordnet", "/usr/share/nltk_data/corpora/wordnet")


class WordNetSynonyms:
    """Synonyms from WordNet 3.0 ``dict`` files (``index.<pos>``, ``data.<pos>``, ``<pos>.exc``).

    ``synonyms(word)`` gathers the lemma names of every synset of every part of speech that the word (after nltk's
    ``morphy`` lemmatisation) belongs to, lowercased, with ``_``/``-`` turned into spaces and other non-letters
    dropped, minus the word itself; sorted.
    """

    POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
    SUBSTITUTIONS = {
        "n": (("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
              ("men", "man"), ("ies", "y")),
        "v": (("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")),
        "a": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
        "r": (),
    }

    def __init__(self, dict_dir: PathLike):
        self.dict_dir = Path(dict_dir).expanduser()
        missing = [f"{kind}.{pos}" for pos in self.POS_FILES.values() for kind in ("index", "data")
                   if not (self.dict_dir / f"{kind}.{pos}").is_file()]
        if missing:
            raise FileNotFoundError(f"{self.dict_dir}: not a WordNet 3.0 dict folder (missing {', '.join(missing)})")
        self._offsets: dict[str, dict[str, list[int]]] | None = None
        self._exceptions: dict[str, dict[str, list[str]]] = {}
        self._data: dict[str, bytes] = {}
        self._cache: dict[str, list[str]] = {}

    def _load(self) -> dict[str, dict[str, list[int]]]:
        if self._offsets is None:
            self._offsets = {}
            for pos, name in self.POS_FILES.items():
                for line in (self.dict_dir / f"index.{name}").read_text(encoding="utf-8").splitlines():
                    if not line or line.startswith(" "):
                        continue
                    fields = line.split()
                    n_synsets = int(fields[2])
                    self._offsets.setdefault(fields[0], {})[pos] = [int(f) for f in fields[-n_synsets:]]
                exc_file = self.dict_dir / f"{name}.exc"
                lines = exc_file.read_text(encoding="utf-8").splitlines() if exc_file.is_file() else []
                self._exceptions[pos] = {parts[0]: parts[1:] for parts in map(str.split, lines) if parts}
                self._data[pos] = (self.dict_dir / f"data.{name}").read_bytes()
        return self._offsets

    def morphy(self, form: str, pos: str) -> list[str]:
        """Base forms of ``form`` in part of speech ``pos`` (nltk's ``_morphy``: exceptions, then suffix rules)."""
        offsets = self._load()

        def known(forms: list[str]) -> list[str]:
            return list(dict.fromkeys(f for f in forms if pos in offsets.get(f, {})))

        def apply_rules(forms: list[str]) -> list[str]:
            return [f[: len(f) - len(old)] + new for f in forms for old, new in self.SUBSTITUTIONS[pos]
                    if f.endswith(old)]

        if form in self._exceptions[pos]:
            return known([form, *self._exceptions[pos][form]])
        forms = apply_rules([form])
        results = known([form, *forms])
        while not results and forms:
            forms = apply_rules(forms)
            results = known(forms)
        return results

    def _lemmas(self, pos: str, offset: int) -> list[str]:
        data = self._data[pos]
        fields = data[offset:data.index(b"\n", offset)].decode("utf-8").split()
        n_words = int(fields[3], 16)
        return [re.sub(r"\(.*\)$", "", fields[4 + 2 * i]) for i in range(n_words)]

    def __call__(self, word: str) -> list[str]:
        word = word.lower()
        if word not in self._cache:
            offsets = self._load()
            synonyms = set()
            for pos in self.POS_FILES:
                for form in self.morphy(word, pos):
                    for offset in offsets[form][pos]:
                        for lemma in self._lemmas(pos, offset):
                            synonym = lemma.replace("_", " ").replace("-", " ").lower()
                            synonyms.add("".join(c for c in synonym if c in " abcdefghijklmnopqrstuvwxyz"))
            synonyms.discard(word)
            self._cache[word] = sorted(synonyms)
        return self._cache[word]


def find_wordnet(dict_dir: PathLike | None = None) -> WordNetSynonyms:
    """WordNet from ``dict_dir``, else the first of :data:`WORDNET_DIRS` that holds the dict files."""
    if dict_dir is not None:
        return WordNetSynonyms(dict_dir)
    for candidate in WORDNET_DIRS:
        if (Path(candidate).expanduser() / "index.noun").is_file():
            return WordNetSynonyms(candidate)
    raise FileNotFoundError(
        f"sr and ri need WordNet 3.0 dict files and none were found in {', '.join(WORDNET_DIRS)}; install them "
        "(Debian: apt-get install wordnet-base) or pass --wordnet_dir")
