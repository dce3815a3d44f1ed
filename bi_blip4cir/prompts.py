"""Direction markers of Bi-BLIP4CIR: ``[FORWARD]`` / ``[BACKWARD]`` written into the caption text.

The markers are plain text, not tokenizer tokens: BERT splits them into ``[``, ``forward``/``backward``, ``]`` and they
become "learnable" only because the whole text encoder is fine-tuned. The original code splits the caption at every
occurrence of the substring ``and`` (inside words too: ``standing`` -> ``stand [FORWARD] ing``) and puts the marker
before each piece; that is the default ``upstream`` mode. ``prefix`` puts one marker at the start instead.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

FORWARD_MARKER = " [FORWARD] "
BACKWARD_MARKER = " [BACKWARD] "
PROMPT_MODES = ("upstream", "prefix")


def insert_marker(text: str, forward: bool, mode: str = "upstream") -> str:
    """Write the direction marker into ``text``.

    ``upstream``: ``"and".join(marker + piece for piece in text.split("and"))`` (case-sensitive, so ``And`` is not
    split); ``"is red and has sleeves"`` -> ``" [FORWARD] is red and [FORWARD]  has sleeves"``.
    ``prefix``: ``marker + text``.
    """
    marker = FORWARD_MARKER if forward else BACKWARD_MARKER
    if mode == "upstream":
        return "and".join(marker + piece for piece in text.split("and"))
    if mode == "prefix":
        return marker + text
    raise ValueError(f"unknown prompt mode {mode!r}; valid modes: {', '.join(PROMPT_MODES)}")


def marker_hook(mode: str = "upstream") -> Callable[[str, bool], str]:
    """The ``caption_hook(text, forward)`` that the CIR datasets apply to every relative caption (picklable)."""
    if mode not in PROMPT_MODES:
        raise ValueError(f"unknown prompt mode {mode!r}; valid modes: {', '.join(PROMPT_MODES)}")
    return partial(insert_marker, mode=mode)
