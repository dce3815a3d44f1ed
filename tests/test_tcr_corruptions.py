"""COCO-C / Flickr-C generation: image corruptions (imagecorruptions + shims), text corruptions, writers, CLI."""
import json
import math
import os
import random
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from common.synthetic import write_karpathy
from tcr.configs.tree import CHAR_CORRUPTIONS, IMAGE_CORRUPTIONS, SEVERITIES
from tcr.image_corruptions import corrupt_image, corruption_seed
from tcr import wordnet
from tcr.make_corruptions import main as make_corruptions_main
from tcr.make_corruptions import runnable_text_types, write_image_corruptions, write_text_corruptions
from tcr.sentence_corruptions import ADEQUACY_MODEL, STYLE_MODELS, TRANSLATION_MODELS
from tcr.text_corruptions import (CaptionCorrupter, augment_words, eda, insert_punctuation, only_chars,
                                  random_deletion, random_swap)
from tcr.wordnet import WordNetSynonyms

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


REFERENCE = """
import sys
import warnings
import numpy as np
warnings.filterwarnings("ignore")
from imagecorruptions import corrupt
image = np.load(sys.argv[1])
outputs = {}
for name in sys.argv[3].split(","):
    for severity in (2, 5):
        np.random.seed(int(sys.argv[2]))
        outputs[f"{name}_{severity}"] = corrupt(image, severity=severity, corruption_name=name)
np.savez(sys.argv[4], **outputs)
"""


def test_corruptions_equal_the_unpatched_library_under_the_same_seed(tmp_path):
    """Our wrapper (with its NumPy 2 / scikit-image shims) against ``imagecorruptions.corrupt`` imported fresh,
    without the shims, in another process, seeded the same way."""
    rng = np.random.default_rng(4)
    image = (rng.random((48, 56, 3)) * 255).astype(np.uint8)
    np.save(tmp_path / "image.npy", image)
    names = ["gaussian_noise", "shot_noise", "defocus_blur", "motion_blur", "contrast", "pixelate"]
    (tmp_path / "reference.py").write_text(REFERENCE)
    run = subprocess.run([sys.executable, str(tmp_path / "reference.py"), str(tmp_path / "image.npy"), "11",
                          ",".join(names), str(tmp_path / "reference.npz")], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    reference = np.load(tmp_path / "reference.npz")
    for name in names:
        for severity in (2, 5):
            expected = np.uint8(reference[f"{name}_{severity}"])
            assert np.array_equal(corrupt_image(image, name, severity, seed=11), expected), (name, severity)


@pytest.mark.parametrize("corruption", ["gaussian_noise", "impulse_noise", "zoom_blur", "motion_blur", "fog",
                                        "contrast", "brightness"])
def test_distortion_grows_with_severity(corruption):
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:64, 0:64]
    image = np.stack([x * 4, y * 4, (x + y) * 2], -1) + rng.normal(0, 10, (64, 64, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    distortion = [np.abs(corrupt_image(image, corruption, severity, seed=0).astype(float) - image).mean()
                  for severity in SEVERITIES]
    assert all(low < high for low, high in zip(distortion, distortion[1:])), distortion


LONG_CAPTION = ("several people standing around a large wooden table covered with plates glasses bottles while "
                "children play outside near the garden fence under bright morning sunlight")


@pytest.mark.parametrize("name", CHAR_CORRUPTIONS)
def test_char_augmenters_change_five_percent_of_the_words_per_level(name):
    """nlpaug picks ⌈0.05·L·n⌉ words (at least 1, at most 10); a pick can leave a word as it was (a swap of
    equal letters, a word without OCR look-alikes), never more words change."""
    words = LONG_CAPTION.split()
    assert len(words) == 25
    for level in (1, 3, 7):
        expected = math.ceil(0.05 * level * len(words))  # 2, 4, 9
        corrupter = CaptionCorrupter(name, level, seed=0)
        changed = []
        for _ in range(12):
            output = corrupter(LONG_CAPTION).split()
            if len(output) == len(words):
                changed.append(sum(old != new for old, new in zip(words, output)))
        assert len(changed) >= 8 and max(changed) == expected, (level, changed)


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
    with pytest.raises(ValueError, match=r"unknown text corruption 'Typo'; valid types: KeyboardAug, .*, ip, "
                                         r"and with --sentence_models formal"):
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


def _tiny_wordnet(folder):
    """WordNet dict files with one noun synset {man, adult_male} (every other part of speech empty)."""
    folder.mkdir(parents=True, exist_ok=True)
    header = "  1 This is a tiny WordNet for tests\n"
    offset = len(header.encode())
    (folder / "data.noun").write_text(header + _wordnet_line(offset, ["man", "adult_male"]))
    (folder / "index.noun").write_text(header + f"man n 1 0 1 0 {offset:08d}  \n")
    for pos in ("verb", "adj", "adv"):
        (folder / f"index.{pos}").write_text(header)
        (folder / f"data.{pos}").write_text(header)
    return folder


def test_readme_command_runs_without_wordnet_and_says_how_to_add_it(split, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(wordnet, "WORDNET_DIRS", (str(tmp_path / "no_wordnet"),))
    out = tmp_path / "dataset"
    make_corruptions_main(["--dataset", "coco", "--ann_root", str(split / "coco/coco_annotations"),
                           "--image_root", str(split / "coco/coco_image"), "--out", str(out),
                           "--corruptions", "fog", "--severities", "1", "--limit", "1"])
    err = capsys.readouterr().err
    assert "skipping sr, ri" in err and "apt-get install wordnet-base" in err and "--wordnet_dir" in err
    assert "skipping formal, casual, passive, active, back_trans: they need --sentence_models DIR" in err
    written = sorted(path.parent.relative_to(out / "coco-TP").as_posix()
                     for path in (out / "coco-TP").rglob("coco_karpathy_test.json"))
    expected = [f"annotation_{name}/{level}" for name in CHAR_CORRUPTIONS for level in range(1, 8)]
    expected += [f"annotation_{name}/{level}" for name in ("rs", "rd", "ip") for level in (6, 7)]
    assert written == sorted(expected + ["coco_annotations"])
    assert len(list((out / "coco-IP/COCO_IP_fog_1").rglob("*.jpg"))) == 1


def test_default_text_types_add_sr_and_ri_when_wordnet_is_there(split, tmp_path):
    wordnet = _tiny_wordnet(tmp_path / "wordnet")
    types, notes = runnable_text_types(wordnet)
    assert types == (*CHAR_CORRUPTIONS, "sr", "ri", "rs", "rd", "ip")
    assert notes == ["skipping formal, casual, passive, active, back_trans: they need --sentence_models DIR"]
    out = tmp_path / "dataset"
    make_corruptions_main(["--dataset", "coco", "--ann_root", str(split / "coco/coco_annotations"), "--out", str(out),
                           "--what", "texts", "--levels", "7", "--wordnet_dir", str(wordnet)])
    replaced = json.loads((out / "coco-TP/annotation_sr/7/coco_karpathy_test.json").read_text())
    clean = json.loads((split / "coco/coco_annotations/coco_karpathy_test.json").read_text())
    for entry, noisy in zip(clean, replaced):  # only "man" has a synonym in the tiny WordNet
        for caption, corrupted in zip(entry["caption"][:5], noisy["caption"][:5]):
            assert corrupted == only_chars(caption).replace("man", "adult male") or "man" not in caption.split()


# ------------------------------------------------------------------------------------------- sentence level

SENTENCE_WORDS = ("<pad> </s> <unk> transfer Active to Passive Casual Formal : a man rides horse the is ridden by "
                  "ein Mann reitet Pferd").split()


def _tiny_tokenizer(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(SENTENCE_WORDS)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(folder)


def _tiny_seq2seq(folder, seed):
    from transformers import T5Config, T5ForConditionalGeneration

    _tiny_tokenizer(folder)
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(SENTENCE_WORDS), d_model=16, d_ff=32, d_kv=8, num_layers=1, num_heads=2,
                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    T5ForConditionalGeneration(config).save_pretrained(folder)


@pytest.fixture(scope="module")
def sentence_models(tmp_path_factory):
    """Tiny random models in the layout ``--sentence_models`` reads: ``<root>/<Hugging Face id>``."""
    from transformers import BertConfig, BertForSequenceClassification

    root = tmp_path_factory.mktemp("sentence_models")
    for seed, repo in enumerate([*STYLE_MODELS.values(), *TRANSLATION_MODELS]):
        _tiny_seq2seq(root / repo, seed)
    _tiny_tokenizer(root / ADEQUACY_MODEL)
    torch.manual_seed(9)
    config = BertConfig(vocab_size=len(SENTENCE_WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=3)
    BertForSequenceClassification(config).save_pretrained(root / ADEQUACY_MODEL)
    return root


def test_sentence_types_name_the_missing_model_folder(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        CaptionCorrupter("passive", 1, sentence_models=tmp_path)
    folder = tmp_path / "prithivida/active_to_passive_styletransfer"
    assert str(error.value).startswith(f"{folder}: no local copy of the Hugging Face model "
                                       "prithivida/active_to_passive_styletransfer")
    download = f"huggingface-cli download prithivida/active_to_passive_styletransfer --local-dir {folder}"
    assert download in str(error.value)


def test_style_transfer_samples_the_prefixed_caption_with_a_seeded_generator(sentence_models):
    corrupter = CaptionCorrupter("passive", 1, seed=0, sentence_models=sentence_models)
    tokenizer, model = corrupter.sentence.models[0]
    calls = []
    generate = model.generate

    def spy(input_ids, **kwargs):
        calls.append((input_ids, kwargs))
        return generate(input_ids, **kwargs)

    model.generate = spy
    state = torch.random.get_rng_state()
    outputs = [corrupter("a man rides a horse") for _ in range(3)]
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is left alone
    assert calls[0][0].tolist() == [tokenizer.encode("transfer Active to Passive: a man rides a horse")]
    assert {key: calls[0][1][key] for key in ("do_sample", "max_length", "top_k", "top_p", "num_return_sequences")} \
        == {"do_sample": True, "max_length": 32, "top_k": 50, "top_p": 0.95, "num_return_sequences": 1}
    again = CaptionCorrupter("passive", 1, seed=0, sentence_models=sentence_models)
    assert [again("a man rides a horse") for _ in range(3)] == outputs and all(isinstance(o, str) for o in outputs)


def test_formal_keeps_the_most_adequate_candidate_or_the_clean_caption(sentence_models):
    corrupter = CaptionCorrupter("formal", 1, seed=0, sentence_models=sentence_models)
    tokenizer, model = corrupter.sentence.models[0]
    candidates = ["a horse is ridden by a man", "the man rides", "a horse is ridden by a man", "a man", "horse"]
    requested = []

    def fixed(input_ids, **kwargs):
        requested.append(kwargs["num_return_sequences"])
        assert tokenizer.decode(input_ids[0]).startswith("transfer Casual to Formal :")
        ids = [tokenizer.encode(text) + [1] for text in candidates]
        return torch.tensor([row + [0] * (8 - len(row)) for row in ids])

    model.generate = fixed
    scores = {"a horse is ridden by a man": 0.97, "the man rides": 0.99, "a man": 0.5, "horse": 0.96}
    corrupter.sentence.adequacy_score = lambda source, candidate: scores[candidate]
    assert corrupter("a man rides a horse") == "the man rides" and requested == [5]
    scores.update({"the man rides": 0.9, "a horse is ridden by a man": 0.94, "horse": 0.1})
    assert corrupter("a man rides a horse") == "a man rides a horse"  # nothing reaches 0.95


def test_adequacy_is_the_entailment_share_of_contradiction_and_entailment(sentence_models):
    corrupter = CaptionCorrupter("casual", 1, seed=0, sentence_models=sentence_models)
    tokenizer, model = corrupter.sentence.adequacy
    with torch.no_grad():
        logits = model(tokenizer.encode("a man rides", "the man is ridden", return_tensors="pt")).logits[0]
    contradiction, entailment = logits[0].item(), logits[2].item()
    expected = math.exp(entailment) / (math.exp(entailment) + math.exp(contradiction))
    assert corrupter.sentence.adequacy_score("a man rides", "the man is ridden") == pytest.approx(expected)


@pytest.mark.slow
def test_back_translation_chains_english_german_english(sentence_models):
    corrupter = CaptionCorrupter("back_trans", 1, sentence_models=sentence_models)
    calls = []
    for tokenizer, model in corrupter.sentence.models:
        def spy(generate=model.generate, tokenizer=tokenizer, **kwargs):
            ids = generate(**kwargs)
            calls.append((tokenizer.decode(kwargs["input_ids"][0]), kwargs["max_length"],
                          tokenizer.batch_decode(ids, skip_special_tokens=True)[0].strip()))
            return ids

        model.generate = spy
    output = corrupter("a man rides a horse")
    assert [call[:2] for call in calls] == [("a man rides a horse", 300), (calls[0][2], 300)]
    assert output == (calls[1][2] or "a man rides a horse") and calls[0][2]


def test_cli_writes_sentence_types_from_local_models(split, sentence_models, tmp_path):
    types, notes = runnable_text_types(tmp_path / "no_wordnet", sentence_models)
    assert types[-5:] == ("formal", "casual", "passive", "active", "back_trans") and len(notes) == 1
    out = tmp_path / "dataset"
    make_corruptions_main(["--dataset", "coco", "--ann_root", str(split / "coco/coco_annotations"), "--out", str(out),
                           "--what", "texts", "--text_types", "passive", "--sentence_models", str(sentence_models)])
    clean = json.loads((split / "coco/coco_annotations/coco_karpathy_test.json").read_text())
    for name in ("passive",):
        corrupted = json.loads((out / f"coco-TP/annotation_{name}/1/coco_karpathy_test.json").read_text())
        assert [len(entry["caption"]) for entry in corrupted] == [len(entry["caption"]) for entry in clean]
        assert all(isinstance(caption, str) for entry in corrupted for caption in entry["caption"])
        assert corrupted != clean
