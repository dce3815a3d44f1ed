"""The data doctor on tiny hand-made copies: layout fixes, missing and undecodable images, the flat CIRR layout,
unprepared Shoes, --expect, --all, the JSON report and exit statuses; the registry and its layering (common/ never
imports a paper folder)."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import doctor
from common.doctor import DATASETS, check_all, check_dataset, register_dataset
from common.errors import InputError
from common.runtime import run_main
from ratta.classnames import original_classnames
from ratta.data import DATASETS as RATTA_DATASETS
from ratta.data import read_test_set
from ratta.doctor import FOLDERS as RATTA_FOLDERS

TYPES = ("dress", "shirt", "toptee")
PAPERS = doctor.load_paper_datasets()
REPO = Path(__file__).resolve().parent.parent
PAPER_IMPORT = re.compile(r"^\s*(from|import)\s+(bi_blip4cir|mlcl|ratta|reranking_cir|tcr)\b", re.MULTILINE)


def image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (2, 2)).save(path, format="PNG")


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def make_fashioniq(root: Path) -> Path:
    """Three images and two queries per split and category; 'shared' is in two val categories."""
    folder = root / "fashionIQ_dataset"
    for split in ("train", "val", "test"):
        for dress_type in TYPES:
            names = [f"{split}{dress_type}{i}" for i in range(3)]
            if split == "val" and dress_type != "toptee":
                names.append("shared")
            write_json(folder / "image_splits" / f"split.{dress_type}.{split}.json", names)
            entries = [{"candidate": names[i], "target": names[i + 1], "captions": ["is red", "has dots"]}
                       for i in range(2)]
            write_json(folder / "captions" / f"cap.{dress_type}.{split}.json", entries)
            for name in names:
                image(folder / "images" / f"{name}.jpg")
    return folder


def make_cirr(root: Path) -> Path:
    folder = root / "cirr_dataset"
    for split, prefix in (("train", "./train/7/"), ("val", "./dev/"), ("test1", "./test1/")):
        names = [f"{split}-{i}-img0" for i in range(3)]
        write_json(folder / "cirr" / "image_splits" / f"split.rc2.{split}.json",
                   {name: f"{prefix}{name}.png" for name in names})
        entries = [{"pairid": i, "reference": names[i], "target_hard": names[i + 1], "caption": "make it blue",
                    "img_set": {"members": names}} for i in range(2)]
        write_json(folder / "cirr" / "captions" / f"cap.rc2.{split}.json", entries)
        for name in names:
            image(folder / prefix / f"{name}.png")
    return folder


def test_unknown_name_is_an_input_error_and_one_line(tmp_path, capsys):
    with pytest.raises(InputError, match="unknown dataset 'fashion'; valid names: fashioniq, cirr"):
        check_dataset("fashion", tmp_path)
    with pytest.raises(SystemExit) as stop:
        run_main(lambda argv: doctor.main(argv), ["--dataset", "fashion", "--data-root", str(tmp_path)])
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error: unknown dataset 'fashion'" in err[0]


def test_names_cover_every_paper_and_ratta_folders_match_the_readers(tmp_path):
    assert {"fashioniq", "cirr", "shoes", "coco", "flickr", "coco-c", "flickr-c"} <= set(DATASETS)
    assert set(RATTA_DATASETS) <= set(DATASETS) and set(RATTA_FOLDERS) == set(RATTA_DATASETS)
    (tmp_path / "imagenet").mkdir()
    (tmp_path / "imagenet" / "classnames.txt").write_text("n01440764 tench\n")
    for key, folder in RATTA_FOLDERS.items():
        with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path / folder}") + "[/:]"):
            read_test_set(key, tmp_path)


def test_common_doctor_imports_no_paper_folder():
    code = ("import common.doctor, sys; papers = sorted(m for m in sys.modules if m.split('.')[0] in ('ratta', 'tcr'));"
            " assert not papers, papers")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    sources = {path: path.read_text() for path in sorted((REPO / "common").rglob("*.py"))}
    offenders = [f"{path.relative_to(REPO)}: {match.group(0).strip()}" for path, text in sources.items()
                 for match in PAPER_IMPORT.finditer(text)]
    assert offenders == []


def test_paper_doctors_register_their_datasets(tmp_path):
    assert PAPERS == ("ratta", "tcr") and doctor.load_paper_datasets() == PAPERS
    common = ["fashioniq", "cirr", "shoes", "coco", "flickr"]
    assert list(DATASETS)[:5] == common and set(DATASETS) == {*common, *RATTA_DATASETS, "coco-c", "flickr-c"}
    assert DATASETS["coco-c"].published["image corruption folders"].value == 80
    assert DATASETS["dtd"].published["test images"].value == 1692 and not DATASETS["resisc45"].published
    report = check_dataset("coco-c", tmp_path)
    assert report.failed[0].expected == f"{tmp_path}/{{coco-IP,coco-TP}}/"
    with pytest.raises(ValueError, match="dataset 'dtd' is already registered \\(by ratta.doctor\\)"):
        register_dataset("dtd", DATASETS["dtd"].survey, ("dtd",))


def test_entry_points_load_the_paper_datasets(tmp_path):
    """doctor.py and reproduce.py, in fresh processes, know RA-TTA's and TCR's datasets."""
    result = subprocess.run([sys.executable, "doctor.py", "--dataset", "coco-c", "--data-root", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stdout.startswith(f"coco-c at {tmp_path}: PROBLEMS"), result.stderr
    code = ("import reproduce, sys; reports = reproduce.check_data([{'dataset': 'fgvc_aircraft'}], sys.argv[1], "
            "'listed'); assert [r['name'] for r in reports] == ['fgvc_aircraft'], reports")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


def test_listed_copy_passes_and_published_names_the_counts(tmp_path):
    make_fashioniq(tmp_path)
    report = check_dataset("FashionIQ", tmp_path, expect="listed")
    assert report.ok, report.summary()
    assert report.counts["val queries"] == 6 and report.counts["val images dress"] == 4
    assert "1 val images are listed in two categories (e.g. shared: dress and shirt)" in report.summary()
    assert report.summary().startswith(f"fashioniq at {tmp_path / 'fashionIQ_dataset'}: OK")
    published = check_dataset("fashioniq", tmp_path)
    assert not published.ok
    failed = {check.name: (check.expected, check.found) for check in published.failed}
    assert failed["val queries"] == (6016, 6) and failed["train triplets"] == (18000, 6)
    assert "FAIL counts differ from the published sizes: val queries 6 (published 6,016)," in published.summary()


def test_missing_image_and_missing_folder_with_its_fix(tmp_path):
    folder = make_fashioniq(tmp_path)
    (folder / "images" / "valshirt1.jpg").unlink()
    report = check_dataset("fashioniq", tmp_path, expect="listed")
    assert report.missing_files == [str(folder / "images" / "valshirt1.jpg")]
    assert [check.name for check in report.failed] == ["listed images present"]
    (folder / "images").rename(folder / "pictures")
    report = check_dataset("fashioniq", tmp_path, expect="listed")
    assert [check.name for check in report.failed] == ["folder images/"]
    assert f"put the FashionIQ images in {folder}/images/ as <asin>.jpg" in report.summary()


def test_decode_finds_damaged_files(tmp_path):
    folder = make_cirr(tmp_path)
    damaged = folder / "dev" / "val-1-img0.png"
    damaged.write_bytes(b"not a png")
    assert check_dataset("cirr", tmp_path, expect="listed").ok
    report = check_dataset("cirr", tmp_path, decode=True, workers=2, expect="listed")
    assert [check.name for check in report.failed] == ["listed images decode"]
    assert len(report.undecodable) == 1 and report.undecodable[0].startswith(f"{damaged}: cannot read image")


def test_flat_cirr_train_folder_is_named_with_its_fix(tmp_path):
    folder = make_cirr(tmp_path)
    for path in (folder / "train" / "7").iterdir():
        path.rename(folder / "train" / path.name)
    report = check_dataset("cirr", tmp_path, expect="listed")
    names = [check.name for check in report.failed]
    assert names == ["listed images present", "train layout"]
    assert "3 images flat in" in report.summary() and "train/<NN>/<name>.png" in report.summary()


def test_unprepared_shoes_says_run_prepare_first(tmp_path):
    annotations = tmp_path / "shoes" / "annotations"
    annotations.mkdir(parents=True)
    (tmp_path / "shoes" / "images").mkdir()
    (annotations / "train_im_names.txt").write_text("a.jpg\n")
    (annotations / "eval_im_names.txt").write_text("b.jpg\n")
    report = check_dataset("shoes", tmp_path, expect="listed")
    assert [check.name for check in report.failed] == ["prepared train files", "prepared val files"]
    assert f"run python mlcl/prepare_shoes_data.py --data-root {tmp_path / 'shoes'} first" in report.summary()


def test_corruption_folders_must_hold_every_clean_image(tmp_path):
    write_json(tmp_path / "coco" / "coco_annotations" / "coco_karpathy_test.json",
               [{"image": f"val2014/{i}.jpg", "caption": ["a"] * 5} for i in range(2)])
    (tmp_path / "coco" / "coco_image").mkdir()
    for i in range(2):
        image(tmp_path / "coco-IP" / "COCO_IP_fog_3" / "val2014" / f"{i}.jpg")
    assert check_dataset("coco-c", tmp_path, expect="listed").ok
    write_json(tmp_path / "coco-TP" / "annotation_OcrAug" / "2" / "coco_karpathy_test.json",
               [{"image": f"val2014/{i}.jpg", "caption": ["b"] * 5} for i in (1, 0)])
    failed = [(c.name, c.found) for c in check_dataset("coco-c", tmp_path, expect="listed").failed]
    assert failed == [("text set annotation_OcrAug/2 images", "2 images differing from the clean annotation")]
    published = [(c.name, c.expected, c.found) for c in check_dataset("coco-c", tmp_path).failed]
    assert ("image corruption folders", 80, 1) in published
    assert ("clean images coco-IP/coco_image/", "present", "absent") in published
    (tmp_path / "coco-IP" / "COCO_IP_fog_3" / "val2014" / "1.jpg").unlink()
    report = check_dataset("coco-c", tmp_path, expect="listed")
    assert report.missing_files == [str(tmp_path / "coco-IP" / "COCO_IP_fog_3" / "val2014" / "1.jpg")]
    shutil.rmtree(tmp_path / "coco-IP" / "COCO_IP_fog_3")
    shutil.rmtree(tmp_path / "coco-TP")
    report = check_dataset("coco-c", tmp_path, expect="listed")
    assert [check.name for check in report.failed] == ["corruption sets"]


def test_karpathy_set_needs_five_or_more_captions_per_image(tmp_path):
    entries = [{"image": f"val2014/{i}.jpg", "caption": ["a"] * (6 + i)} for i in range(2)]
    write_json(tmp_path / "coco" / "coco_annotations" / "coco_karpathy_test.json", entries)
    for i in range(2):
        image(tmp_path / "coco" / "coco_image" / "val2014" / f"{i}.jpg")
    report = check_dataset("coco", tmp_path, expect="listed")
    assert report.ok and report.counts == {"test images": 2, "fewest captions per image": 6}
    published = check_dataset("coco", tmp_path)
    assert [(c.name, c.expected, c.found) for c in published.failed] == [("test images", 5000, 2)]
    entries[1]["caption"] = ["a"] * 4
    write_json(tmp_path / "coco" / "coco_annotations" / "coco_karpathy_test.json", entries)
    failed = [(c.name, c.expected, c.found) for c in check_dataset("coco", tmp_path).failed]
    assert ("fewest captions per image", "5 or more", 4) in failed
    assert "fewest captions per image 4 vs 5 or more" in check_dataset("coco", tmp_path, expect="listed").facts[0]


def test_all_lists_absent_datasets_without_failing(tmp_path):
    make_cirr(tmp_path)
    reports = {report.name: report for report in check_all(tmp_path, expect="listed")}
    assert reports["cirr"].ok and not reports["fashioniq"].present
    named = {report.name: report for report in check_all(tmp_path, ("fashioniq",), expect="listed")}
    assert named["fashioniq"].present and [check.name for check in named["fashioniq"].failed] == ["dataset folder"]


def test_cli_exit_status_json_and_missing_list(tmp_path, capsys):
    folder = make_cirr(tmp_path)
    out = tmp_path / "out"
    args = ["--all", "--data-root", str(tmp_path), "--expect", "listed", "--json", str(out / "report.json"),
            "--missing-list", str(out / "missing.txt")]
    assert doctor.main(args) == 0
    assert "cirr at" in capsys.readouterr().out and not (out / "missing.txt").exists()
    (folder / "dev" / "val-2-img0.png").unlink()
    assert doctor.main(args) == 1
    assert (out / "missing.txt").read_text() == f"missing\t{folder / 'dev' / 'val-2-img0.png'}\n"
    reports = json.loads((out / "report.json").read_text())
    cirr = next(report for report in reports if report["name"] == "cirr")
    assert cirr["ok"] is False and cirr["counts"]["val queries"] == 2
    assert cirr["published"]["val queries"]["value"] == 4181
    assert {"name", "ok", "expected", "found", "fix"} == set(cirr["checks"][0])
    image(folder / "dev" / "val-2-img0.png")
    assert doctor.main(args) == 0 and (out / "missing.txt").read_text() == ""
    assert doctor.main(["--dataset", "fashioniq", "--data-root", str(tmp_path)]) == 1
    with pytest.raises(FileNotFoundError, match="no such folder"):
        doctor.main(["--all", "--data-root", str(tmp_path / "nowhere")])


def test_ratta_test_split_count_and_class_name_warnings(tmp_path):
    base = tmp_path / "fgvc_aircraft"
    base.mkdir()
    variants = original_classnames("fgvc_aircraft")
    (base / "variants.txt").write_text("\n".join(variants) + "\n")
    (base / "images_variant_test.txt").write_text(f"0001 {variants[3]}\n0002 {variants[7]}\n")
    for image_id in ("0001", "0002"):
        image(base / "images" / f"{image_id}.jpg")
    report = check_dataset("fgvc_aircraft", tmp_path, expect="listed")
    assert report.ok and report.counts == {"test images": 2}
    assert report.facts == ["not compared with the published sizes under --expect listed: test images 2 vs 3,333"]
    published = check_dataset("fgvc_aircraft", tmp_path)
    assert [(c.name, c.expected, c.found) for c in published.failed] == [("test images", 3333, 2)]
    (base / "variants.txt").write_text("\n".join(["Boeing 9000", *variants[1:]]) + "\n")
    (base / "images_variant_test.txt").write_text("0001 Boeing 9000\n")
    report = check_dataset("fgvc_aircraft", tmp_path, expect="listed")
    assert report.ok and "label 0: 'Boeing 9000'" in report.facts[0]
    split = tmp_path / "dtd" / "split_zhou_DescribableTextures.json"
    write_json(split, {"train": [7], "val": [], "test": []})
    report = check_dataset("dtd", tmp_path)
    assert [check.name for check in report.failed] == ["test split"] and "int" in report.failed[0].found
