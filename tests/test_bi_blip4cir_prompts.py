"""Direction-marker insertion and how the BERT tokenizer splits the markers."""
import pickle

import pytest

from bi_blip4cir.prompts import BACKWARD_MARKER, FORWARD_MARKER, insert_marker, marker_hook
from common.blip.tokenizer import build_blip_tokenizer


@pytest.mark.parametrize("text, forward, expected", [
    ("is red and has sleeves", True, " [FORWARD] is red and [FORWARD]  has sleeves"),
    ("is red and has sleeves", False, " [BACKWARD] is red and [BACKWARD]  has sleeves"),
    ("And more", True, " [FORWARD] And more"),
    ("standing dog", True, " [FORWARD] stand [FORWARD] ing dog"),
    ("sandals and a hand bag", False,
     " [BACKWARD] sand [BACKWARD] als and [BACKWARD]  a hand [BACKWARD]  bag"),
    ("and", True, " [FORWARD] and [FORWARD] "),
    ("", True, " [FORWARD] "),
])
def test_upstream_mode_splits_at_every_and(text, forward, expected):
    assert insert_marker(text, forward) == expected


def test_upstream_mode_marks_each_and_piece():
    marked = insert_marker("a brand and a band", True)
    assert marked.count("[FORWARD]") == 4
    assert marked.replace(FORWARD_MARKER, "") == "a brand and a band"


def test_prefix_mode_marks_once():
    assert insert_marker("standing and red", True, mode="prefix") == " [FORWARD] standing and red"
    assert insert_marker("standing and red", False, mode="prefix") == BACKWARD_MARKER + "standing and red"


def test_hook_is_picklable_and_checks_mode():
    hook = pickle.loads(pickle.dumps(marker_hook("upstream")))
    assert hook("hand", False) == " [BACKWARD] hand [BACKWARD] "
    assert marker_hook("prefix")("hand", True) == " [FORWARD] hand"
    with pytest.raises(ValueError, match="unknown prompt mode 'clean'"):
        marker_hook("clean")
    with pytest.raises(ValueError, match="valid modes: upstream, prefix"):
        insert_marker("x", True, mode="clean")


def test_markers_are_plain_word_pieces(tmp_path):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[", "]", "forward", "backward", "and", "make", "it",
             "red", "stand", "##ing"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = build_blip_tokenizer(tmp_path)
    assert tokenizer.tokenize(insert_marker("make it red", True)) == ["[", "forward", "]", "make", "it", "red"]
    assert tokenizer.tokenize(insert_marker("standing", False)) == ["[", "backward", "]", "stand", "[", "backward",
                                                                    "]", "[UNK]"]
    assert len(tokenizer) == len(words) + 2
