"""COCO-C / Flickr-C generation: image corruptions (imagecorruptions + shims), text corruptions, writers, CLI."""
import json
import random
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from common.synthetic import write_karpathy
from tcr.configs.tree import CHAR_CORRUPTIONS, IMAGE_CORRUPTIONS
from tcr.image_corruptions import corrupt_image, corruption_seed
from tcr.make_corruptions import main as make_corruptions_main
from tcr.make_corruptions import write_image_corruptions, write_text_corruptions
from tcr.text_corruptions import (CaptionCorrupter, WordNetSynonyms, augment_words, eda, insert_punctuation,
                                  only_chars, random_deletion, random_swap)

CAPTION = "A man riding a wave on top of a surfboard, near two other surfers."
SYNONYMS = {"man": ["adult male", "homo"], "wave": ["undulation"], "surfboard": ["board"], "riding": ["ride"]}


def fake_synonyms(word):
    return SYNONYMS.get(word, [])


@pytest.fixture(scope="module")
def tiny_image():
    rng = np.random.default_rng(0)
    return (rng.random((32, 40, 3)) * 255).astype(np.uint8)


def test_every_image_corruption_keeps_size_and_dtype(tiny_image):
    assert len(IMAGE_CORRUPTIONS) == 16
    for corruption in IMAGE_CORRUPTIONS:
        for severity in (1, 5):
            output = corrupt_image(tiny_image, corruption, severity, seed=3)
            assert output.shape == tiny_image.shape and output.dtype == np.uint8, (corruption, severity)
            assert not np.array_equal(output, tiny_image), (corruption, severity)
    assert not hasattr(np, "float_")  # the NumPy 2 shim stays inside imagecorruptions


@pytest.mark.parametrize("corruption", ["gaussian_noise", "impulse_noise", "glass_blur", "fog", "frost"])
def test_random_corruptions_are_seeded(tiny_image, corruption):
    first = corrupt_image(tiny_image, corruption, 3, seed=1)
    assert np.array_equal(first, corrupt_image(tiny_image, corruption, 3, seed=1))
    assert not np.array_equal(first, corrupt_image(tiny_image, corruption, 3, seed=2))
    assert corruption_seed(0, corruption, 3, 7) != corruption_seed(0, corruption, 3, 8)


def test_bad_image_corruption_names_list_valid_ones(tiny_image):
    with pytest.raises(ValueError, match=r"unknown image corruption 'fogg'; valid corruptions: gaussian_noise, .*fog"):
        corrupt_image(tiny_image, "fogg", 1, seed=0)
    with pytest.raises(ValueError, match=r"severity must be one of 1, 2, 3, 4, 5, got 6"):
        corrupt_image(tiny_image, "fog", 6, seed=0)
    with pytest.raises(ValueError, match="at least 32×32"):
        corrupt_image(tiny_image[:20], "fog", 1, seed=0)


def test_char_corruptions_are_deterministic_for_a_seed():
    for name in CHAR_CORRUPTIONS:
        for level in (1, 7):
            outputs = [[CaptionCorrupter(name, level, seed)(CAPTION) for _ in range(3)] for seed in (0, 0, 1)]
            assert all(isinstance(text, str) for text in outputs[0])
            assert outputs[0] == outputs[1], (name, level)
            assert outputs[0] != outputs[2], (name, level)
        assert CaptionCorrupter(name, 7, 0)(CAPTION) != CAPTION


def test_eda_cleaning_and_operations():
    assert only_chars("A man's 2 surf-boards, ok!") == "a mans surf boards ok "
    words = only_chars(CAPTION).split()
    rng = random.Random(0)
    swapped = random_swap(words, 3, rng)
    assert Counter(swapped) == Counter(words) and swapped != words
    assert random_deletion(words, 0.0, rng) == words
    assert len(random_deletion(words, 1.0, rng)) == 1
    assert random_deletion(["alone"], 1.0, rng) == ["alone"]
    kept = random_deletion(words, 0.3, random.Random(5))
    assert kept == [word for word in words if word in kept] and len(kept) < len(words)  # order preserved


def test_word_corruptions_with_a_fixed_synonym_table():
    replaced = eda(CAPTION, "sr", 0.3, fake_synonyms, random.Random(0))
    assert replaced == replaced.lower() and "," not in replaced
    changed = [word for word in replaced.split() if word not in only_chars(CAPTION).split()]
    assert changed and set(changed) <= {"adult", "male", "homo", "undulation", "board", "ride"}
    inserted = eda(CAPTION, "ri", 0.3, fake_synonyms, random.Random(0)).split()
    assert len(inserted) > len(only_chars(CAPTION).split())
    assert eda(CAPTION, "ri", 0.3, fake_synonyms, random.Random(4)) == eda(CAPTION, "ri", 0.3, fake_synonyms,
                                                                           random.Random(4))
    with pytest.raises(ValueError, match="needs a synonym source"):
        eda(CAPTION, "sr", 0.3, None, random.Random(0))


def test_insert_punctuation_adds_only_marks():
    words = CAPTION.split(" ")
    for seed in range(20):
        output = insert_punctuation(CAPTION, 0.35, random.Random(seed)).split(" ")
        added = len(output) - len(words)
        assert 1 <= added <= int(0.35 * len(words) + 1)
        assert [token for token in output if token not in ".,!?;:"] == words


def test_word_corrupter_is_deterministic_and_retries_until_accepted():
    corrupter = CaptionCorrupter("rs", 6, seed=2)
    first = [corrupter(CAPTION) for _ in range(3)]
    again = CaptionCorrupter("rs", 6, seed=2)
    assert [again(CAPTION) for _ in range(3)] == first and first[0] != first[1]
    calls = []

    def accept_third(original, candidate):
        calls.append(candidate)
        return len(calls) == 3

    result = augment_words(CAPTION, "ip", 6, random.Random(0), accept=accept_third)
    assert len(calls) == 3 and result == calls[-1]
    calls.clear()
    result = augment_words(CAPTION, "rd", 7, random.Random(0), accept=lambda o, c: calls.append(c) and False)
    assert len(calls) == 100 and result == calls[-1]


def test_bad_text_corruption_names():
    with pytest.raises(ValueError, match=r"sentence-level corruptions .* need models"):
        CaptionCorrupter("back_trans", 1)
    with pytest.raises(ValueError, match=r"unknown text corruption 'Typo'; valid types here: KeyboardAug, .*, ip"):
        CaptionCorrupter("Typo", 1)
    with pytest.raises(ValueError, match="level must be 1..7, got 8"):
        CaptionCorrupter("OcrAug", 8)


def _wordnet_line(offset, words):
    return f"{offset:08d} 05 n {len(words):02x} " + " ".join(f"{word} 0" for word in words) + " 000 | gloss  \n"


def test_wordnet_reader_on_tiny_dict_files(tmp_path):
    header = "  1 This is a tiny WordNet for tests\n"
    synsets = [["dog", "domestic_dog", "Canis_familiaris"], ["goose"], ["frump", "dog"], ["fast(a)", "quick"]]
    data, offsets = header, []
    for words in synsets:
        offsets.append(len(data.encode()))
        data += _wordnet_line(len(data.encode()), words)
    (tmp_path / "data.noun").write_text(data)
    (tmp_path / "index.noun").write_text(header + f"dog n 2 0 2 0 {offsets[0]:08d} {offsets[2]:08d}  \n"
                                         f"fast n 1 0 1 0 {offsets[3]:08d}  \ngoose n 1 0 1 0 {offsets[1]:08d}  \n")
    (tmp_path / "noun.exc").write_text("geese goose\n")
    for pos in ("verb", "adj", "adv"):
        (tmp_path / f"index.{pos}").write_text(header)
        (tmp_path / f"data.{pos}").write_text(header)
    wordnet = WordNetSynonyms(tmp_path)
    assert wordnet("Dog") == ["canis familiaris", "domestic dog", "frump"]
    assert wordnet("dogs") == ["canis familiaris", "dog", "domestic dog", "frump"]  # morphy strips the plural s
    assert wordnet("geese") == ["goose"] and wordnet("goose") == []  # exception list
    assert wordnet("fast") == ["quick"]  # the adjective marker is dropped
    assert wordnet("cat") == []
    with pytest.raises(FileNotFoundError, match="missing index.noun"):
        WordNetSynonyms(tmp_path / "nowhere")


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    root = tmp_path_factory.mktemp("tcr_split")
    write_karpathy(root, "coco", n_images=4, seed=2)  # image 3 has a sixth caption
    return root


def test_image_writer_mirrors_annotation_paths(split, tmp_path):
    ann_root, image_root = split / "coco/coco_annotations", split / "coco/coco_image"
    annotation = json.loads((ann_root / "coco_karpathy_test.json").read_text())
    count = write_image_corruptions("coco", ann_root, image_root, tmp_path, ("fog", "gaussian_noise"), (1, 5),
                                    limit=2)
    assert count == 8
    for entry in annotation[:2]:
        clean = Image.open(image_root / entry["image"])
        for folder in ("COCO_IP_fog_1", "COCO_IP_fog_5", "COCO_IP_gaussian_noise_1", "COCO_IP_gaussian_noise_5"):
            corrupted = Image.open(tmp_path / "coco-IP" / folder / entry["image"])
            assert corrupted.size == clean.size and corrupted.mode == "RGB"
    assert not (tmp_path / "coco-IP/COCO_IP_fog_1" / annotation[2]["image"]).exists()
    assert (tmp_path / "coco-IP/coco_image").resolve() == image_root.resolve()
    assert write_image_corruptions("coco", ann_root, image_root, tmp_path, ("fog",), (1,), limit=2) == 0
    with pytest.raises(FileNotFoundError, match="missing_images: clean image folder not found"):
        write_image_corruptions("coco", ann_root, split / "missing_images", tmp_path, ("fog",), (1,))


def test_text_writer_corrupts_captions_zero_to_four(split, tmp_path):
    ann_root = split / "coco/coco_annotations"
    annotation = json.loads((ann_root / "coco_karpathy_test.json").read_text())
    written = write_text_corruptions("coco", ann_root, tmp_path, ("OcrAug", "rs"), seed=0)
    relative = sorted(str(path.relative_to(tmp_path)) for path in written)
    assert relative == sorted(["coco-TP/coco_annotations/coco_karpathy_test.json"]
                              + [f"coco-TP/annotation_OcrAug/{level}/coco_karpathy_test.json" for level in range(1, 8)]
                              + [f"coco-TP/annotation_rs/{level}/coco_karpathy_test.json" for level in (6, 7)])
    swapped = json.loads((tmp_path / "coco-TP/annotation_rs/7/coco_karpathy_test.json").read_text())
    assert [entry["image"] for entry in swapped] == [entry["image"] for entry in annotation]
    assert len(annotation[3]["caption"]) == 6 and swapped[3]["caption"][5] == annotation[3]["caption"][5]
    for clean, noisy in zip(annotation, swapped):
        for k in range(5):
            assert sorted(noisy["caption"][k].split()) == sorted(only_chars(clean["caption"][k]).split())
    assert sum(n != only_chars(c) for e, s in zip(annotation, swapped)
               for c, n in zip(e["caption"][:5], s["caption"][:5])) > 0
    clean_copy = json.loads((tmp_path / "coco-TP/coco_annotations/coco_karpathy_test.json").read_text())
    assert clean_copy == annotation
    again = write_text_corruptions("coco", ann_root, tmp_path / "again", ("rs",), levels=(7,), seed=0)
    assert json.loads(again[1].read_text()) == swapped


def test_cli_stops_on_sentence_level_types(split, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        make_corruptions_main(["--dataset", "coco", "--ann_root", str(split / "coco/coco_annotations"),
                               "--out", str(tmp_path), "--what", "texts", "--text_types", "rs,formal"])
    assert stop.value.code == 2
    assert "need models that this tool does not ship" in capsys.readouterr().err
    assert not (tmp_path / "coco-TP").exists()
    with pytest.raises(SystemExit) as stop:
        make_corruptions_main(["--dataset", "coco", "--ann_root", str(split / "coco/coco_annotations"),
                               "--out", str(tmp_path)])
    assert stop.value.code == 2 and "--image_root is required" in capsys.readouterr().err
