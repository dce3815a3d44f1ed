"""RA-TTA's class names are the original's hard-coded lists (RA-TTA:src/dataloader/*.py): stored counts and facts,
the check of the dataset's own names against them, and a FGVC tree whose ``variants.txt`` says 'Tornado' running
through both stages with descriptions keyed as the authors' file."""
import json
import warnings

import numpy as np
import pytest
from PIL import Image

from common.clip import write_tiny_clip
from ratta import after_extract, pre_extract, ratta_build_db
from ratta.classnames import check_classnames, classname_differences, original_classnames
from ratta.data import DATASETS

AS = 3


def test_each_stored_list_has_the_dataset_class_count():
    for key, spec in DATASETS.items():
        names = original_classnames(key)
        assert len(names) == spec.num_classes, key
        assert all(isinstance(name, str) and name and "_" not in name for name in names), key


def test_stored_lists_hold_the_original_hand_edits():
    fgvc, cub, caltech = (original_classnames(key) for key in ("fgvc_aircraft", "cub200", "caltech256"))
    assert fgvc[96] == "Panavia Tornado" and fgvc[:2] == ["707-320", "727-200"] and fgvc[-1] == "Yak-42"
    assert cub[0] == "Black-footed Albatross" and cub[16] == "Cardinal bird" and cub[-1] == "Common Yellowthroat"
    assert (caltech[128], caltech[144], caltech[250], caltech[255]) == ("leopard", "motorbike", "airplane", "clutter")
    assert original_classnames("ucf101")[0] == "Apply Eye Makeup"  # '_' becomes a space, as the scripts do
    assert original_classnames("flowers102")[:2] == ["pink primrose", "hard-leaved pocket orchid"]
    imagenet = original_classnames("imagenet_1k")
    assert imagenet[:2] == ["tench", "goldfish"] and imagenet[-1] == "toilet paper"
    assert imagenet[657] == imagenet[744] == "missile" and imagenet[836] == imagenet[837] == "sunglasses"
    assert original_classnames("imagenet_adversarial")[:3] == ["stingray", "goldfinch", "junco"]
    assert original_classnames("imagenet_rendition")[:3] == ["goldfish", "great white shark", "hammerhead shark"]
    assert original_classnames("imagenet_v2")[:4] == [imagenet[0], imagenet[1], imagenet[10], imagenet[100]]
    assert original_classnames("imagenet_sketch") == imagenet


def test_file_spellings_and_hand_edits_pass_silently():
    real_fgvc = ["Tornado" if name == "Panavia Tornado" else name for name in original_classnames("fgvc_aircraft")]
    cub_files = [name.replace("-", "_").replace("'s", "") for name in original_classnames("cub200")]
    cub_files[16], cub_files[109], cub_files[140] = "Cardinal", "Geococcyx", "Artic Tern"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_classnames("fgvc_aircraft", real_fgvc, "variants.txt")
        check_classnames("cub200", cub_files, "classes.txt")
        check_classnames("caltech256", ["leopards" if n == "leopard" else n for n in original_classnames("caltech256")],
                         "split_Caltech256.json")


def test_a_difference_beyond_the_hand_edits_warns_with_both_spellings():
    names = original_classnames("fgvc_aircraft")
    names[3], names[96] = "737-301", "Tornado"
    assert classname_differences("fgvc_aircraft", names) == [(3, "737-301", "737-300")]
    with pytest.warns(UserWarning, match=r"variants.txt: 1 of 100 fgvc_aircraft class names differ .*"
                                         r"label 3: '737-301' vs '737-300'"):
        check_classnames("fgvc_aircraft", names, "variants.txt")


def write_fgvc(root, variants, test):
    base = root / "fgvc_aircraft"
    (base / "images").mkdir(parents=True)
    (base / "variants.txt").write_text("".join(f"{name}\n" for name in variants))
    (base / "images_variant_test.txt").write_text("".join(f"{i:07d} {variant}\n" for i, variant in enumerate(test)))
    rng = np.random.default_rng(0)
    for i in range(len(test)):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(base / "images" / f"{i:07d}.jpg")


def test_real_fgvc_spelling_runs_with_the_authors_descriptions(tmp_path, recwarn):
    """The real variants.txt says 'Tornado'; the authors' CuPL JSON has the key 'Panavia Tornado'."""
    original = original_classnames("fgvc_aircraft")
    variants = ["Tornado" if name == "Panavia Tornado" else name for name in original]
    write_fgvc(tmp_path / "data", variants, ["Tornado", "707-320", "A380", "Tornado", "Yak-42"])
    descriptions = tmp_path / "descriptions"
    descriptions.mkdir()
    (descriptions / "CuPL_prompts_fgvc_aircraft.json").write_text(json.dumps(
        {name: [f"The {name} is an aircraft.", f"A {name} has wings."] for name in original}))
    weights = write_tiny_clip(tmp_path / "clip.pt", kind="vit")
    model = ["--net_name", "test/tiny", "--weights", str(weights), "--device", "cpu"]
    np.save(tmp_path / "rows.npy", np.random.default_rng(1).normal(size=(40, 16)).astype(np.float32))
    ratta_build_db.main(["--from_embeddings", str(tmp_path / "rows.npy"), "--dataset", "fgvc_aircraft",
                         "--net_name", "test/tiny", "--db_root", str(tmp_path / "db")])
    pre_extract.main(False, ["--root", str(tmp_path / "data"), "--dataset", "fgvc_aircraft", "--seed", "0",
                             "--augmentation_size", str(AS), "--save_dir", str(tmp_path / "emb"),
                             "--num_workers", "0", *model])
    stored = tmp_path / "emb" / "test_tiny" / "0" / "fgvc_aircraft.classnames.json"
    assert json.loads(stored.read_text()) == original
    after = ["--db_root", str(tmp_path / "db"), "--tst_embedding_root", str(tmp_path / "emb"), "--dataset",
             "fgvc_aircraft", "--seed", "0", "--augmentation_size", str(AS), "--output_dir", str(tmp_path / "logs"),
             "--descriptions_dir", str(descriptions), "--top_k_s", "5", "--results_json",
             str(tmp_path / "results.json"), *model]
    after_extract.main(False, after)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["num_samples"] == 5 and sorted(results["predictions"]["labels"]) == [0, 33, 96, 96, 99]
    assert not [w for w in recwarn if "class names differ" in str(w.message)]
    stored.write_text(json.dumps(variants))  # as an earlier stage 1 wrote it: the dataset's spelling, same order
    after_extract.main(False, after)
    assert not [w for w in recwarn if "class names differ" in str(w.message)]
    stored.write_text(json.dumps(variants[1:] + variants[:1]))  # another class order: the labels do not fit
    with pytest.warns(UserWarning, match=r"fgvc_aircraft.classnames.json: 100 of 100 .*label 0: '727-200' vs "
                                         r"'707-320'"):
        after_extract.main(False, after)
