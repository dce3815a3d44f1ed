"""BLIP's BERT tokenizer from local files: special tokens, plain-text markers, padding, resolution order."""
import pytest
import torch

from common.blip import build_blip_tokenizer, tokenize
from common.blip.tiny import TINY_WORDS, write_tiny_vocab


@pytest.fixture
def vocab(tmp_path):
    return write_tiny_vocab(tmp_path, extra_words=("Sleeves", "the"))


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("BLIP_TOKENIZER_DIR", raising=False)


def test_tiny_vocab_file(vocab):
    tokens = vocab.read_text().splitlines()
    assert tokens[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert {"[", "]", ".", ",", "-", "a", "z", "##a", "##z", "forward", "sleeves"} <= set(tokens)
    assert len(tokens) == len(set(tokens)) == 5 + 7 + 26 * 2 + len(TINY_WORDS) + 1


@pytest.mark.parametrize("use_dir", [False, True])
def test_special_tokens(vocab, use_dir):
    tokenizer = build_blip_tokenizer(vocab.parent if use_dir else vocab)
    size = len(vocab.read_text().splitlines())
    assert tokenizer.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [size, size + 1]
    assert tokenizer.bos_token_id == size and tokenizer.enc_token_id == size + 1 and len(tokenizer) == size + 2
    assert (tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id) == (0, 2, 3)


def test_direction_markers_are_plain_text(vocab):
    tokenizer = build_blip_tokenizer(vocab)
    assert tokenizer.tokenize("[FORWARD] make it red") == ["[", "forward", "]", "make", "it", "red"]
    assert tokenizer.tokenize("[BACKWARD] Dog") == ["[", "backward", "]", "dog"]
    ids, _ = tokenize(tokenizer, "[FORWARD] make it red")
    assert ids[0, 0] == tokenizer.cls_token_id and ids[0, -1] == tokenizer.sep_token_id and ids.shape == (1, 8)


def test_padding_and_truncation(vocab):
    tokenizer = build_blip_tokenizer(vocab)
    texts = ["a red dog", "the shirt " * 40]
    ids, mask = tokenize(tokenizer, texts, padding="max_length", truncation=True, max_length=35)
    assert ids.shape == mask.shape == (2, 35) and ids.dtype == torch.long
    assert mask.sum(dim=1).tolist() == [5, 35]
    assert ids[0, 4] == tokenizer.sep_token_id and (ids[0, 5:] == tokenizer.pad_token_id).all()
    assert ids[1, -1] == tokenizer.sep_token_id
    ids, mask = tokenize(tokenizer, texts, padding="longest")
    assert ids.shape == (2, 82) and mask.sum(dim=1).tolist() == [5, 82]
    ids, _ = tokenize(tokenizer, texts, padding="longest", truncation=True, max_length=77)
    assert ids.shape == (2, 77)
    ids, _ = tokenize(tokenizer, texts, first_token_id=tokenizer.enc_token_id)
    assert (ids[:, 0] == tokenizer.enc_token_id).all()


def test_environment_variable(vocab, monkeypatch):
    monkeypatch.setenv("BLIP_TOKENIZER_DIR", str(vocab.parent))
    assert build_blip_tokenizer().tokenize("red dog") == ["red", "dog"]
    monkeypatch.setenv("BLIP_TOKENIZER_DIR", str(vocab.parent / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"nowhere \(from \$BLIP_TOKENIZER_DIR\)"):
        build_blip_tokenizer()


@pytest.mark.filterwarnings("ignore:`resume_download` is deprecated:FutureWarning")
def test_missing_tokenizer_says_what_to_provide(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        build_blip_tokenizer(cache_dir=tmp_path / "empty_cache")
    message = str(error.value)
    assert "bert-base-uncased" in message and "vocab.txt" in message and "BLIP_TOKENIZER_DIR" in message
    with pytest.raises(FileNotFoundError, match="no vocab.txt"):
        build_blip_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        build_blip_tokenizer(tmp_path / "missing.txt")
