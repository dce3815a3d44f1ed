"""weights/manifest.json and weights/check.py: content of the real manifest, statuses and exit codes on fakes."""
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from common.clip import CLIP_MODELS, clip_url
from weights.check import MANIFEST, PAPERS, check_weights, failures, load_manifest, main

REPO = Path(__file__).resolve().parents[1]


def entries_by_file():
    return {entry["file"]: entry for entry in load_manifest()["files"]}


def test_manifest_lists_every_paper_checkpoint():
    files = entries_by_file()
    expected = {
        "model_base.pth", "model_large.pth", "model_base_retrieval_coco.pth", "model_base_retrieval_flickr.pth",
        "model_large_retrieval_coco.pth", "model_large_retrieval_flickr.pth", "model_base_nlvr.pth",
        "tuned_blip_best.pt", "tuned_blip_mean.pt", "combiner.pt", "combiner_mean.pt", "candidate_rerank_ckpts.zip",
        "blip.pt", "blip_mean.pt", "cirr_top_200_val.pt", "cirr_top_200_test1.pt", "fiq_top_200_val_dress.pt",
        "RN50x4.pt", "ViT-B-16.pt", "ViT-B-32.pt", "ViT-L-14.pt", "ViT-L-14-336px.pt", "finetuned_clip.pt",
        "irra_cuhk_pedes.pth", "irra_icfg_pedes.pth", "LAION2B_dtd_aux_ViT-B_16", "LAION2B_imagenet_1k_aux_ViT-B_16",
    }
    assert expected <= set(files)
    entries = load_manifest()["files"]
    assert len({entry["path"] for entry in entries}) == len(entries)
    for entry in entries:
        assert set(entry["papers"]) <= set(PAPERS) and set(entry["required_by"]) <= set(entry["papers"])
        assert entry["source"] and entry["used_by"] is not None and entry["note"]
        assert entry["sha256"] is None or re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])
        assert entry["sha1"] is None or re.fullmatch(r"[0-9a-f]{40}", entry["sha1"])
    assert sum(entry["in_archive"] == "reranking_cir/candidate_rerank_ckpts.zip" for entry in entries) == 9


def test_manifest_hashes_and_requirements_match_the_specs():
    files = entries_by_file()
    assert files["model_base.pth"]["sha1"] == "5f1d8cdfae91e22a35e98a4bbb4c43be7bd0ac50"
    assert files["tuned_blip_best.pt"]["sha1"] == "80f0db536f588253fca416af83cb50fab709edda"
    assert files["tuned_blip_mean.pt"]["sha1"] == "67dca8a1905802cfd4cd02f640abb0579f1f88fd"
    assert files["combiner.pt"]["sha1"] == "4a1ba45bf52033c245c420b30873f68bc8e60732"
    assert files["combiner_mean.pt"]["sha1"] == "327703361117400de83936674d5c3032af37bd7a"
    assert files["candidate_rerank_ckpts.zip"]["sha1"] == "a5e29b35ceae4fcb3782b8fd9228121090ddef64"
    for name in ("RN50x4", "ViT-B/16", "ViT-B/32", "ViT-L/14", "ViT-L/14@336px"):
        file, sha256 = CLIP_MODELS[name]
        assert files[file]["sha256"] == sha256 and files[file]["url"] == clip_url(name) and files[file]["path"] == file
    required = {paper: {e["file"] for e in load_manifest()["files"] if paper in e["required_by"]} for paper in PAPERS}
    assert required == {
        "mlcl": {"RN50x4.pt"}, "ratta": {"ViT-B-16.pt"}, "bi_blip4cir": {"model_base.pth"},
        "reranking_cir": {"model_base.pth"},
        "tcr": {"model_base_retrieval_coco.pth", "model_base_retrieval_flickr.pth"},
    }


@pytest.fixture()
def fake_weights(tmp_path):
    """A folder with good, corrupt and unhashed files, and a manifest that also lists missing ones."""
    folder = tmp_path / "weights"
    (folder / "sub").mkdir(parents=True)
    contents = {"good.pt": b"good bytes", "sub/bad.pt": b"tampered", "unhashed.pt": b"anything"}
    for path, data in contents.items():
        (folder / path).write_bytes(data)

    def entry(path, papers, required_by=(), sha256=None, sha1=None):
        return {"path": path, "file": Path(path).name, "papers": list(papers), "required_by": list(required_by),
                "sha256": sha256, "sha1": sha1, "source": f"https://example.org/{path}"}

    manifest = {"files": [
        entry("good.pt", ["tcr"], ["tcr"], sha256=hashlib.sha256(b"good bytes").hexdigest(),
              sha1=hashlib.sha1(b"good bytes").hexdigest()),
        entry("sub/bad.pt", ["mlcl"], sha1=hashlib.sha1(b"original").hexdigest()),
        entry("unhashed.pt", ["tcr", "ratta"]),
        entry("needed.pt", ["ratta"], ["ratta"], sha256="0" * 64),
        entry("optional.pt", ["tcr"]),
    ]}
    manifest_path = tmp_path / "manifest.json"
    manifest_path.write_text(json.dumps(manifest))
    return folder, manifest_path


def test_check_reports_each_status(fake_weights):
    folder, manifest = fake_weights
    rows = {row["path"]: row for row in check_weights(folder, manifest=manifest)}
    assert {path: row["status"] for path, row in rows.items()} == {
        "good.pt": "present", "sub/bad.pt": "corrupt", "unhashed.pt": "unverified", "needed.pt": "missing",
        "optional.pt": "missing"}
    assert rows["sub/bad.pt"]["detail"].startswith("sha1 " + hashlib.sha1(b"tampered").hexdigest())
    assert rows["needed.pt"]["required"] and not rows["optional.pt"]["required"]
    assert [row["path"] for row in failures(list(rows.values()))] == ["sub/bad.pt", "needed.pt"]


def test_check_filters_by_paper(fake_weights):
    folder, manifest = fake_weights
    tcr = check_weights(folder, "tcr", manifest)
    assert [row["path"] for row in tcr] == ["good.pt", "unhashed.pt", "optional.pt"]
    assert [row["required"] for row in tcr] == [True, False, False] and failures(tcr) == []
    ratta = check_weights(folder, "ratta", manifest)
    assert [row["path"] for row in failures(ratta)] == ["needed.pt"]
    with pytest.raises(ValueError, match="unknown paper 'clip'"):
        check_weights(folder, "clip", manifest)


def test_cli_exit_codes_and_json(fake_weights, tmp_path, capsys):
    folder, manifest = fake_weights
    out = tmp_path / "rows.json"
    assert main(["--dir", str(folder), "--manifest", str(manifest), "--json", str(out)]) == 1
    printed = capsys.readouterr()
    assert "corrupt" in printed.out and "5 files: 1 present, 2 missing, 1 corrupt, 1 unverified" in printed.out
    assert "FAIL corrupt: sub/bad.pt" in printed.err
    assert [row["status"] for row in json.loads(out.read_text())] == [
        "present", "corrupt", "unverified", "missing", "missing"]
    assert main(["--dir", str(folder), "--manifest", str(manifest), "--paper", "tcr"]) == 0
    (folder / "sub" / "bad.pt").write_bytes(b"original")
    assert main(["--dir", str(folder), "--manifest", str(manifest), "--paper", "mlcl"]) == 0
    assert main(["--dir", str(folder), "--manifest", str(manifest), "--paper", "ratta"]) == 1


def test_cli_help_and_bad_paper(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert all(flag in text for flag in ("--dir", "--paper", "--json", "--manifest", "unverified"))
    with pytest.raises(SystemExit) as done:
        main(["--paper", "clip"])
    assert done.value.code == 2


def test_script_runs_from_the_repository_root(tmp_path):
    result = subprocess.run([sys.executable, "weights/check.py", "--dir", str(tmp_path), "--paper", "mlcl"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1
    assert "missing    yes  RN50x4.pt" in result.stdout
    assert MANIFEST == REPO / "weights" / "manifest.json"
