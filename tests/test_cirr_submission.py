"""common.cirr_submission: file schema, writer checks, validator errors, CLI."""
import json
import os

import numpy as np
import pytest
import torch

from common.cirr_submission import (SubmissionError, main, submission_folder, validate_cirr_submission,
                                    write_cirr_submission)
from common.metrics.cir import cirr_rankings


def rankings(pairids, length, offset=0):
    return {pairid: [f"test1-{offset + i}-{j}-img0" for j in range(length)] for i, pairid in enumerate(pairids)}


def write_full(tmp_path, name="demo"):
    pairids = [12063, 39059, 200]
    return write_cirr_submission(tmp_path / "submission" / "CIRR", name, rankings(pairids, 50),
                                 rankings(pairids, 3, offset=1))


def test_writer_schema(tmp_path):
    recall_path, subset_path = write_full(tmp_path)
    assert recall_path == tmp_path / "submission/CIRR/recall_submission_demo.json"
    assert subset_path == tmp_path / "submission/CIRR/recall_subset_submission_demo.json"
    text = recall_path.read_text()
    assert "\n" not in text and text.startswith('{"12063": ["test1-0-0-img0", ')
    data = json.loads(text)
    assert list(data) == ["12063", "200", "39059", "metric", "version"]  # sorted string keys, as upstream
    assert data["version"] == "rc2" and data["metric"] == "recall" and len(data["200"]) == 50
    subset = json.loads(subset_path.read_text())
    assert subset["metric"] == "recall_subset" and subset["39059"] == ["test1-2-0-img0", "test1-2-1-img0",
                                                                        "test1-2-2-img0"]
    assert validate_cirr_submission(recall_path, expected_pairids=["200", 12063, 39059]) == {
        "metric": "recall", "num_queries": 3}
    assert validate_cirr_submission(subset_path)["metric"] == "recall_subset"


def test_writer_accepts_numpy_and_string_pairids_and_short_lists(tmp_path):
    recall_path, _ = write_cirr_submission(tmp_path, "small", {np.int64(7): ["a", "b"], "8": ["c", "d"]},
                                           {7: ["b"], 8.0: ["d"]})
    assert list(json.loads(recall_path.read_text())) == ["7", "8", "metric", "version"]
    with pytest.raises(SubmissionError, match="entry 7 has 2 names, expected exactly 50"):
        validate_cirr_submission(recall_path)
    assert validate_cirr_submission(recall_path, list_length=2)["num_queries"] == 2


def test_writer_rejects_bad_input(tmp_path):
    with pytest.raises(SubmissionError, match="entry 1 has 51 names, expected 1 to 50"):
        write_cirr_submission(tmp_path, "x", rankings([1], 51), rankings([1], 3))
    with pytest.raises(SubmissionError, match="entry 1 repeats an image name"):
        write_cirr_submission(tmp_path, "x", rankings([1], 5), {1: ["a", "b", "a"]})
    with pytest.raises(SubmissionError, match="pairid 'q1' is not an integer"):
        write_cirr_submission(tmp_path, "x", {"q1": ["a"]}, {"q1": ["a"]})
    with pytest.raises(SubmissionError, match="pairid 1 given twice"):
        write_cirr_submission(tmp_path, "x", {1: ["a"], "1": ["b"]}, {1: ["a"]})
    with pytest.raises(SubmissionError, match="cover different pairids"):
        write_cirr_submission(tmp_path, "x", rankings([1, 2], 5), rankings([1], 3))
    with pytest.raises(SubmissionError, match="plain file-name part"):
        write_cirr_submission(tmp_path, "../escape", rankings([1], 5), rankings([1], 3))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(metric="recall_subset"), "metric is 'recall_subset' but the file name says 'recall'"),
    (lambda d: d.update(metric="precision"), "metric is 'precision', expected one of recall, recall_subset"),
    (lambda d: d.update(version="rc1"), "version is 'rc1', expected 'rc2'"),
    (lambda d: d.update({"200": d["200"][:49]}), "entry 200 has 49 names, expected exactly 50"),
    (lambda d: d.update({"200": d["200"][:49] + d["200"][:1]}), "entry 200 repeats an image name"),
    (lambda d: d.update({"0200": d.pop("200")}), "key '0200' is not a pairid"),
    (lambda d: d.update({"abc": d.pop("200")}), "key 'abc' is not a pairid"),
    (lambda d: d.update({"200": "test1-0-0-img0"}), "entry 200 is not a list of image names"),
])
def test_validator_rejects(tmp_path, edit, message):
    recall_path, _ = write_full(tmp_path)
    data = json.loads(recall_path.read_text())
    edit(data)
    recall_path.write_text(json.dumps(data, sort_keys=True))
    with pytest.raises(SubmissionError, match=message):
        validate_cirr_submission(recall_path)


def test_validator_expected_pairids_and_cli(tmp_path, capsys):
    recall_path, subset_path = write_full(tmp_path)
    with pytest.raises(SubmissionError, match=r"1 expected pairids missing \(e.g. \['5'\]\), 1 unexpected "
                                              r"\(e.g. \['200'\]\)"):
        validate_cirr_submission(recall_path, expected_pairids=[12063, 39059, 5])
    assert main([str(recall_path), str(subset_path)]) == 0
    assert "OK" in capsys.readouterr().out
    broken = tmp_path / "recall_submission_broken.json"
    broken.write_text('{"1": [\n')
    assert main([str(recall_path), str(broken)]) == 1
    assert "recall_submission_broken.json: malformed JSON at line 2" in capsys.readouterr().err


def test_each_pairid_keeps_its_own_ranking(tmp_path):
    """Rankings from a hand-built score matrix reach the file under their own pairid (the file sorts the keys, the
    queries are not in that order): reference absent, subset from the query's own members, score order."""
    names = [f"img{i}" for i in range(8)]
    scores = torch.tensor([[0.9, 0.1, 0.8, 0.7, 0.2, 0.3, 0.6, 0.5],
                           [0.1, 0.9, 0.2, 0.3, 0.8, 0.7, 0.4, 0.5],
                           [0.5, 0.4, 0.3, 0.2, 0.1, 0.9, 0.8, 0.7]])
    references, members = [0, 4, 5], [[0, 1, 2, 3], [4, 5, 6, 7], [5, 0, 1, 2]]
    pairids = [907, 12, 300]
    recall, subset = cirr_rankings(scores, references, members, names, top_k=4)
    recall_path, subset_path = write_cirr_submission(tmp_path, "hand", dict(zip(pairids, recall)),
                                                     dict(zip(pairids, subset)))
    written, written_subset = json.loads(recall_path.read_text()), json.loads(subset_path.read_text())
    assert list(written)[:3] == ["12", "300", "907"]
    assert written["907"] == ["img2", "img3", "img6", "img7"] and written_subset["907"] == ["img2", "img3", "img1"]
    assert written["12"] == ["img1", "img5", "img7", "img6"] and written_subset["12"] == ["img5", "img7", "img6"]
    assert written["300"] == ["img6", "img7", "img0", "img1"] and written_subset["300"] == ["img0", "img1", "img2"]


def test_submission_folder_is_checked_before_the_work(tmp_path, monkeypatch):
    assert submission_folder(tmp_path, "s1") == tmp_path / "submission" / "CIRR"
    assert submission_folder(tmp_path, "mlcl", folder_per_name=True) == tmp_path / "submission" / "CIRR" / "mlcl"
    assert not (tmp_path / "submission").exists()  # nothing is created
    with pytest.raises(SubmissionError, match="plain file-name part"):
        submission_folder(tmp_path, "../s1")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    access = os.access  # root is not stopped by the mode bits: refuse writing in ``locked`` for everyone
    monkeypatch.setattr(os, "access", lambda path, mode: access(path, mode) and not (
        str(path) == str(locked) and mode & os.W_OK))
    with pytest.raises(PermissionError, match=f"--output-root {locked}/submission/CIRR: cannot create files in "
                                              f"{locked} "):
        submission_folder(locked, "s1")
