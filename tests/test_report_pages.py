"""The retrieval report (common/report): query selection, the CIR, re-ranking, image-text and classification
pages parsed back from their HTML (ranks, outlines, escaped captions), the grid PNG, the flags and ``--report DIR``
errors, and that scripts run without ``--report`` import none of the report code."""
import argparse
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
from PIL import Image

from common.cir.evaluation import QuerySet, validate_composed
from common.errors import InputError
from common.report.args import (ReportDirError, ReportOptions, add_report_args, check_report_dir,
                                cir_report_hook, report_options)
from common.report.classify import Retrieved, classification_report, label_ranks
from common.report.cir import cir_report
from common.report.page import write_report
from common.report.rerank import rerank_report, reranked_names
from common.report.retrieval import first_positive_ranks, retrieval_report
from common.report.select import select_queries, split_count

REPO = Path(__file__).resolve().parent.parent
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]


class ReportParser(HTMLParser):
    """Entries of a report page: heading, and every tile as (row title, label, classes, image alt, text)."""

    def __init__(self):
        super().__init__()
        self.entries, self.field, self.row, self.tile = [], None, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = attrs.get("class", "").split()
        if tag == "section":
            self.entries.append({"title": "", "query": None, "tiles": []})
        elif tag == "figure":
            self.tile = {"row": self.row, "classes": classes, "alt": None, "label": "", "text": ""}
            if "query" in classes:
                self.entries[-1]["query"] = self.tile
            else:
                self.entries[-1]["tiles"].append(self.tile)
        elif tag == "img" and self.tile is not None:
            self.tile["alt"] = attrs.get("alt")
        elif tag == "h2":
            self.field = "title"
        elif "row-title" in classes:
            self.field, self.row = "row", ""
        elif "label" in classes or "text" in classes:
            self.field = classes[0]

    def handle_endtag(self, tag):
        if tag == "figure":
            self.tile = None
        if tag in ("h2", "div", "span"):
            self.field = None

    def handle_data(self, data):
        if self.field == "title":
            self.entries[-1]["title"] += data
        elif self.field == "row":
            self.row += data
        elif self.field in ("label", "text") and self.tile is not None:
            self.tile[self.field] += data


def parse(page: Path) -> list[dict]:
    parser = ReportParser()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.entries


@pytest.fixture
def images(tmp_path) -> Path:
    """One small PNG per gallery name ``img<i>`` (a flat colour each)."""
    folder = tmp_path / "images"
    folder.mkdir()
    for index, colour in enumerate(COLOURS):
        Image.new("RGB", (40, 30), colour).save(folder / f"img{index}.png")
    return folder


def options(tmp_path: Path, **changes) -> ReportOptions:
    return ReportOptions(**{"folder": tmp_path / "report", "queries": 8, "top_k": 2, **changes})


def query_set(name: str, scores_rows: list[list[float]], references: list[int], targets: list[int],
              captions: list[str], members: list[list[int]] | None = None) -> tuple[QuerySet, torch.Tensor]:
    gallery_names = [f"img{index}" for index in range(len(scores_rows[0]))]
    members_idx = torch.tensor(members) if members is not None else None
    return (QuerySet(name, torch.zeros(len(gallery_names), 4), gallery_names, torch.tensor(references), captions,
                     target_idx=torch.tensor(targets), members_idx=members_idx), torch.tensor(scores_rows))


def test_selection_shares_the_count_and_never_repeats():
    ranks = [5, 1, 9, 1, 3, 7, 2, 8]
    chosen = select_queries(ranks, 4, ("best", "worst", "random"), seed=3)
    assert split_count(4, 3) == [2, 1, 1]
    assert chosen[:3] == [(1, "best"), (3, "best"), (2, "worst")]
    assert chosen[3][1] == "random" and chosen[3][0] not in (1, 2, 3)
    assert select_queries(ranks, 4, ("best", "worst", "random"), seed=3) == chosen
    assert len({index for index, _ in select_queries(ranks, 20, ("random",), seed=0)}) == len(ranks)
    tied = select_queries([1, 1, 1, 1], 4, ("best", "worst"), seed=0)  # ties: best and worst orders overlap
    assert sorted(index for index, _ in tied) == [0, 1, 2, 3]


def test_fashioniq_page_ranks_and_target_outline(tmp_path, images):
    """FashionIQ keeps the reference in the ranking: the target of query 1 is 4th (behind the reference), shown
    after the top 2 with its rank; only the target tile is outlined."""
    qs, scores = query_set("dress", [[0.1, 0.9, 0.2, 0.3, 0.0, 0.0, 0.0, 0.0],
                                     [0.9, 0.1, 0.8, 0.2, 0.7, 0.0, 0.0, 0.0]],
                           references=[0, 0], targets=[1, 3], captions=["is red", "is blue"])
    report = cir_report("t", [qs], [scores], options(tmp_path), lambda _, name: images / f"{name}.png")
    entries = parse(write_report(report, tmp_path / "report"))
    assert [entry["title"] for entry in entries] == ["dress query 0 · best · target rank 1",
                                                     "dress query 1 · worst · target rank 4"]
    first, second = entries
    assert [tile["label"] for tile in first["tiles"]] == ["#1 target", "#2"]
    assert [tile["label"] for tile in second["tiles"]] == ["#1", "#2", "target #4"]
    for entry, target in zip(entries, ("img1.png", "img3.png")):
        hits = [tile for tile in entry["tiles"] if "hit" in tile["classes"]]
        assert [tile["alt"] for tile in hits] == [target]
    assert second["tiles"][0]["alt"] == "img0.png"  # the reference ranks first on FashionIQ
    assert second["query"]["alt"] == "img0.png" and second["query"]["text"] == "is blue"


def test_cirr_page_excludes_the_reference_and_shows_the_subset(tmp_path, images):
    """CIRR ranks without the reference (top-scored here) and adds the subset row: the non-reference members in
    score order, the target outlined with its subset rank."""
    qs, scores = query_set("cirr", [[0.9, 0.5, 0.8, 0.3, 0.55, 0.1, 0.6, 0.2]], references=[0], targets=[4],
                           captions=["adds a dog"], members=[[0, 4, 5, 6, 7, 1]])
    report = cir_report("t", [qs], [scores], options(tmp_path), lambda _, name: images / f"{name}.png")
    (entry,) = parse(write_report(report, tmp_path / "report"))
    assert entry["title"] == "cirr query 0 · best · target rank 3 · subset rank 2"
    top, subset = entry["tiles"][:3], entry["tiles"][3:]
    assert [tile["alt"] for tile in top] == ["img2.png", "img6.png", "img4.png"]
    assert [tile["label"] for tile in top] == ["#1", "#2", "target #3"]
    assert [tile["alt"] for tile in subset] == ["img6.png", "img4.png", "img1.png", "img7.png", "img5.png"]
    assert [tile["alt"] for tile in subset if "hit" in tile["classes"]] == ["img4.png"]
    assert all(tile["alt"] != "img0.png" for tile in entry["tiles"])


def test_captions_are_escaped(tmp_path, images):
    caption = '<script>alert("x")</script> & <b>bold</b>'
    qs, scores = query_set("shoes", [[0.1, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], [0], [1], [caption])
    report = cir_report("<i>title</i>", [qs], [scores], options(tmp_path), lambda _, n: images / f"{n}.png")
    page = write_report(report, tmp_path / "report")
    text = page.read_text(encoding="utf-8")
    assert "<script>" not in text and "<b>" not in text and "<i>" not in text
    assert parse(page)[0]["query"]["text"] == caption


def test_report_files_are_complete_and_self_contained(tmp_path, images, capsys):
    qs, scores = query_set("shoes", [[0.1, 0.9] + [0.0] * 6, [0.2, 0.1] + [0.5] * 6], [0, 0], [1, 1], ["a", "b"])
    report = cir_report("t", [qs], [scores], options(tmp_path), lambda _, n: images / f"{n}.png")
    page = write_report(report, tmp_path / "report")
    assert sorted(path.name for path in page.parent.iterdir()) == ["grid.png", "index.html"]
    assert f"report written to {page}" in capsys.readouterr().out
    text = page.read_text(encoding="utf-8")
    assert "data:image/jpeg;base64," in text and "http" not in text and "<link" not in text and "src=\"/" not in text
    with Image.open(page.parent / "grid.png") as grid:
        assert grid.width > 300 and grid.height > 2 * 128
        # the outline of the first entry's target tile (rank 1) is drawn in green
        assert (26, 156, 58) in {colour for _, colour in grid.convert("RGB").getcolors(1 << 20)}


def test_missing_image_gives_a_placeholder_not_a_crash(tmp_path, images):
    qs, scores = query_set("shoes", [[0.1, 0.9] + [0.0] * 6], [0], [1], ["a"])
    report = cir_report("t", [qs], [scores], options(tmp_path), lambda _, n: images / f"gone_{n}.png")
    page = write_report(report, tmp_path / "report")
    assert 'class="missing"' in page.read_text(encoding="utf-8")


def test_rerank_page_puts_the_largest_move_first(tmp_path, images):
    qs, _ = query_set("dress", [[0.0] * 8] * 3, [0, 0, 0], [2, 3, 4], ["a", "b", "c"])
    stage1 = [[f"img{i}" for i in (2, 1, 3, 4)], [f"img{i}" for i in (1, 2, 3, 4)], [f"img{i}" for i in (1, 2, 3, 4)]]
    stage2 = torch.tensor([[0.5, 0.4, 0.3], [0.1, 0.2, 0.9], [0.1, 0.2, 0.9]])  # query 1: img3 from #3 to #1
    assert reranked_names(stage1[1], stage2[1]) == ["img3", "img2", "img1", "img4"]
    assert reranked_names(stage1[1], torch.zeros(3)) == stage1[1]  # ties keep stage-1 order
    report = rerank_report("t", [qs], [stage1], [stage2], options(tmp_path, queries=2),
                           lambda _, n: images / f"{n}.png")
    entries = parse(write_report(report, tmp_path / "report"))
    assert [entry["title"] for entry in entries] == ["dress query 1 · target #3 → #1",
                                                     "dress query 0 · target #1 → #1"]
    before, after = entries[0]["tiles"][:3], entries[0]["tiles"][3:]
    assert [tile["label"] for tile in before] == ["#1", "#2", "target #3"]
    assert [tile["label"] for tile in after] == ["#1 target", "#2"]


def test_retrieval_page_before_and_after(tmp_path, images):
    """t2i: caption queries, image results; the rank is the first correct image's."""
    before = torch.tensor([[0.9, 0.1, 0.5, 0.0], [0.1, 0.2, 0.3, 0.4]])
    after = torch.tensor([[0.1, 0.9, 0.5, 0.0], [0.4, 0.3, 0.2, 0.1]])
    txt2img = [[1], [0, 2]]
    assert first_positive_ranks(before, txt2img) == [3, 2]
    paths = [images / f"img{i}.png" for i in range(4)]
    report = retrieval_report("t", "t2i", before, after, paths, ["a <cat>", "a dog"], [[1], [0]], txt2img,
                              options(tmp_path, select=("best",)))
    entries = parse(write_report(report, tmp_path / "report"))
    assert [entry["title"] for entry in entries] == ["t2i query 0 · best · rank #3 → #1",
                                                     "t2i query 1 · best · rank #2 → #1"]
    assert entries[0]["query"]["text"] == "a <cat>"
    before_tiles = entries[0]["tiles"][:3]
    assert [tile["label"] for tile in before_tiles] == ["#1", "#2", "first correct #3"]
    assert [tile["alt"] for tile in entries[0]["tiles"] if "hit" in tile["classes"]] == ["img1.png", "img1.png"]


def test_rank_counting_equals_the_stable_sort_with_ties():
    """The ranks are counted without sorting; they equal the position in the stable descending sort."""
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (200, 30), generator=generator).float()  # many ties
    positives = [sorted(set(torch.randint(0, 30, (3,), generator=generator).tolist())) for _ in range(200)]
    labels = torch.randint(0, 30, (200,), generator=generator)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices.tolist()
    assert first_positive_ranks(scores, positives) == [
        next(rank for rank, index in enumerate(row, 1) if index in wanted) for row, wanted in zip(order, positives)]
    assert label_ranks(scores, labels) == [row.index(int(label)) + 1 for row, label in zip(order, labels)]


def test_classification_page(tmp_path, images):
    zero_shot = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    adapted = torch.tensor([[0.2, 0.7, 0.1], [0.1, 0.2, 0.7]])
    labels = torch.tensor([1, 0])
    assert label_ranks(adapted, labels) == [1, 3]
    db = [images / f"img{i}.png" for i in range(8)]
    retrieved = [Retrieved([1, 0], [[5, 6], [7, 4]], [0.8, 0.2]), Retrieved([], [], [])]
    report = classification_report("t", labels, zero_shot, adapted, ["cat", "dog", "<fox>"],
                                   options(tmp_path), [images / "img0.png", images / "img1.png"], retrieved, db)
    entries = parse(write_report(report, tmp_path / "report"))
    assert [entry["title"] for entry in entries] == ["sample 0 · best · true class rank #2 → #1",
                                                     "sample 1 · worst · true class rank #2 → #3"]
    hits = [tile for tile in entries[0]["tiles"] if "hit" in tile["classes"]]
    assert [tile["text"] or tile["alt"] for tile in hits] == ["dog", "dog", "img5.png", "img6.png"]
    assert "<fox>" in [tile["text"] for tile in entries[1]["tiles"]]


def test_flags_and_their_errors(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=7)
    add_report_args(parser)
    args = parser.parse_args([])
    assert args.report is None and report_options(args) is None and cir_report_hook(None, "t", "cirr", tmp_path) is None
    args = parser.parse_args(["--report", str(tmp_path / "r"), "--report-queries", "3", "--report-select", "worst"])
    assert report_options(args) == ReportOptions(tmp_path / "r", 3, ("worst",), 5, 7)
    for bad in (["--report-queries", "0"], ["--report-select", "best,middle"], ["--report-select", ","]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
        assert "--report" in capsys.readouterr().err


def test_report_dir_that_is_a_file_is_an_input_error(tmp_path):
    file = tmp_path / "taken"
    file.write_text("x")
    for folder in (file, file / "below"):
        with pytest.raises(ReportDirError, match=f"--report {folder}: {file} is a file, expected a folder"):
            check_report_dir(folder)
    assert issubclass(ReportDirError, InputError)
    assert check_report_dir(tmp_path / "new" / "dir") == tmp_path / "new" / "dir"


def test_validate_composed_reports_from_its_own_scores(tmp_path):
    """The hook receives the query sets and the very scores the metrics used; no hook, no report."""
    qs, _ = query_set("shoes", [[0.0] * 8] * 2, [0, 1], [2, 3], ["a", "b"])
    qs.gallery = torch.eye(8)
    seen = []
    metrics = validate_composed("shoes", [qs], lambda captions: torch.eye(8)[[2, 5]], lambda ref, text: text,
                                tmp_path / "m.json", True, lambda sets, scores: seen.append((sets, scores)))
    (sets, scores), = seen
    assert sets == [qs] and scores[0].argmax(1).tolist() == [2, 5] and metrics["recall_at1"] == 50.0
    assert validate_composed("shoes", [qs], lambda c: torch.eye(8)[[2, 5]], lambda r, t: t, tmp_path / "n.json",
                             True) == metrics


def test_scripts_without_report_import_no_report_code():
    code = ("import sys; import bi_blip4cir.validate, mlcl.validate, reranking_cir.validate, "
            "reranking_cir.validate_stage2, tcr.main, ratta.after_extract; "
            "print(sorted(m for m in sys.modules if m.startswith('common.report')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['common.report', 'common.report.args']"


def test_cir_image_paths_find_every_val_image(tmp_path):
    """The dataset readers map each reference and target name of the val queries to an existing file (FashionIQ
    per category, CIRR through its split file)."""
    from common.cir.data import relative_dataset
    from common.cir.evaluation import dataset_items
    from common.report.cir import cir_image_paths
    from common.synthetic.writers import write_cirr, write_fashioniq

    write_fashioniq(tmp_path, {"train": 2, "val": 6, "test": 2}, {"train": 2, "val": 3, "test": 1}, seed=0)
    write_cirr(tmp_path, {"train": 1, "val": 2, "test1": 9}, 2, seed=0)
    for dataset, set_names in (("fashioniq", ("dress", "toptee", "shirt")), ("cirr", ("cirr",))):
        root = tmp_path / {"fashioniq": "fashionIQ_dataset", "cirr": "cirr_dataset"}[dataset]
        image_path = cir_image_paths(dataset, root, "val")
        for set_name in set_names:
            types = [set_name] if dataset == "fashioniq" else ["dress"]
            items = dataset_items(relative_dataset(dataset, root, "val", None, dress_types=types))
            names = {name for item in items for name in (item[0], item[1])}
            assert names and all(image_path(set_name, name).is_file() for name in names)
