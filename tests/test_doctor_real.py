"""The data doctor on the real annotation files (../shared/real_annotations, skipped where absent) with one
placeholder image per listed name: the counts come out as the published ones and the verdict is OK.

The placeholders are hard links to one tiny PNG (about 110,000 names: FashionIQ, CIRR and Shoes), made once for the
module; on two busy cores the module takes about 20 s, most of it making and removing the links."""
import itertools
import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from common.data.shoes import prepare_shoes
from common.doctor import PUBLISHED, check_dataset

REAL = Path(__file__).resolve().parents[2] / "shared" / "real_annotations"
pytestmark = [pytest.mark.skipif(not REAL.is_dir(), reason=f"{REAL} is absent"),
              pytest.mark.slow]  # the module makes and removes about 110,000 placeholder files


LINKS_PER_FILE = 50000
"""Below ext4's limit of 65,000 links to one file."""
COPIES = itertools.count()


def link_all(source: Path, paths) -> None:
    """Hard-link a copy of ``source`` at every path (folders made as needed), a fresh copy every LINKS_PER_FILE."""
    made = set()
    for index, path in enumerate(paths):
        if index % LINKS_PER_FILE == 0:
            target = source.with_name(f"{source.stem}-{next(COPIES)}{source.suffix}")
            shutil.copyfile(source, target)
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        os.link(target, path)


def make_cirr_train_captions(path: Path, split_file: Path, count: int = 28225) -> None:
    """``cap.rc2.train.json`` in the schema of ``cap.rc2.val.json`` (the real one is not in real_annotations)."""
    names = list(json.loads(split_file.read_text()))
    entries = [{"pairid": i, "reference": names[i % len(names)], "target_hard": names[(i + 1) % len(names)],
                "caption": "make it blue", "img_set": {"members": []}} for i in range(count)]
    path.write_text(json.dumps(entries))


@pytest.fixture(scope="module")
def real_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    placeholder = root / "placeholder.png"
    Image.new("RGB", (1, 1)).save(placeholder)

    fiq = root / "fashionIQ_dataset"
    fiq.mkdir()
    for sub in ("captions", "image_splits"):
        (fiq / sub).symlink_to(REAL / "fashioniq" / sub)
    names = {name for split in (REAL / "fashioniq" / "image_splits").glob("split.*.json")
             for name in json.loads(split.read_text())}
    link_all(placeholder, (fiq / "images" / f"{name}.jpg" for name in names))

    cirr = root / "cirr_dataset"
    shutil.copytree(REAL / "cirr", cirr / "cirr")
    make_cirr_train_captions(cirr / "cirr" / "captions" / "cap.rc2.train.json",
                             cirr / "cirr" / "image_splits" / "split.rc2.train.json")
    relpaths = {path for split in (cirr / "cirr" / "image_splits").glob("split.rc2.*.json")
                for path in json.loads(split.read_text()).values()}
    link_all(placeholder, (cirr / path for path in relpaths))

    shoes = root / "shoes"
    shutil.copytree(REAL / "shoes", shoes / "annotations")
    basenames = {line.strip() for source in ("train_im_names.txt", "eval_im_names.txt")
                 for line in (REAL / "shoes" / source).read_text().splitlines() if line.strip()}
    link_all(placeholder, (shoes / "images" / "womens" / name.split("_")[2] / "0" / name for name in basenames))
    prepare_shoes(shoes / "images", shoes / "annotations")
    yield root
    shutil.rmtree(root)


@pytest.fixture(scope="module")
def real_reports(real_root):
    return {name: check_dataset(name, real_root) for name in ("fashioniq", "cirr", "shoes")}


@pytest.mark.parametrize("name", ["fashioniq", "cirr", "shoes"])
def test_real_counts_equal_the_published_ones(real_reports, name):
    report = real_reports[name]
    assert report.ok, report.summary()
    assert {key: report.counts[key] for key in PUBLISHED[name]} == {
        key: published.value for key, published in PUBLISHED[name].items()}
    assert report.summary().splitlines()[0].endswith(f": OK ({len(report.checks)} checks) [--expect published]")


def test_fashioniq_shared_names_are_a_fact(real_reports):
    facts = real_reports["fashioniq"].facts
    assert any(fact.startswith("121 val images are listed in two categories") for fact in facts)
    assert "the split files list 74,381 distinct images" in facts
