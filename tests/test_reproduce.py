"""reproduce.py and the paper-numbers registry, on tiny weights with a registry of their own (the tiny model's
numbers stand for the paper's)."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import reproduce
from bi_blip4cir import validate
from common import paper_numbers, run_record
from common.errors import InputError
from common.blip.config import ViTConfig
from common.blip.tiny import write_tiny_blip_checkpoint, write_tiny_blip_files
from common.synthetic.scenes import vocabulary
from common.synthetic.writers import write_cirr, write_fashioniq
from weights.check import load_manifest

REPO = Path(__file__).resolve().parent.parent
VIT = ViTConfig(patch_size=8, width=32, depth=1, heads=2)
CIRR_SOURCE = "https://github.com/Cuberick-Orion/Bi-Blip4CIR (README: OneDrive links)"


def run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLR_NO_PROGRESS": "1", **(env or {})}
    return subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """Tiny FashionIQ, a tiny BLIP as ``model_base.pth`` in a weights folder, its metrics from validate.py, and a
    registry whose FashionIQ result is that checkpoint (one metric off by 5 points)."""
    root = tmp_path_factory.mktemp("reproduce")
    data, weights = root / "data", root / "weights"
    write_fashioniq(data, {"train": 4, "val": 8, "test": 2}, {"train": 2, "val": 6, "test": 2}, seed=0)
    write_cirr(data, {"train": 1, "val": 1, "test1": 9}, 1, seed=0)
    blip = write_tiny_blip_files(weights, VIT, extra_words=vocabulary())
    flags = [*blip.flags()[2:], "--num-workers", "0", "--device", "cpu"]
    assert blip.flags()[:2] == ["--blip-pretrained-path", str(blip.checkpoint)]
    env = {"VLR_CACHE_DIR": str(root / "cache")}
    metrics = validate.main(["--dataset", "FashionIQ", "--combining-function", "sum", "--data-root", str(data),
                             "--blip-pretrained-path", str(blip.checkpoint), *flags, "--metrics-json",
                             str(root / "direct.json")])
    sha256 = hashlib.sha256(blip.checkpoint.read_bytes()).hexdigest()
    fiq = {"name": "tiny FashionIQ val", "dataset": "fashioniq", "split": "val", "source": "the tiny model",
           "checkpoints": [{"path": "model_base.pth", "sha256": sha256}], "tolerance": 0.5,
           "metrics": {"average_recall_at10": metrics["average_recall_at10"],
                       "dress_recall_at50": metrics["dress_recall_at50"] + 5.0},
           "run": {"steps": [{"script": "bi_blip4cir/validate.py", "args": [
               "--dataset", "FashionIQ", "--combining-function", "sum", "--data-root", "{data_root}",
               "--blip-pretrained-path", "{weights}/model_base.pth", *flags, "--metrics-json", "{out}/m.json"]}],
               "metrics_file": "{out}/m.json"}}
    cirr = {**fiq, "name": "released CIRR files", "dataset": "cirr",
            "checkpoints": [{"path": "bi_blip4cir/CIRR/tuned_blip_mean.pt", "sha1": "0" * 40}],
            "metrics": {"recall_at10": 83.88}}
    test1 = {**fiq, "name": "tiny CIRR test1", "dataset": "cirr", "split": "test1", "metrics": {"recall_at10": 80.0},
             "run": {"steps": [{"script": "bi_blip4cir/cirr_test_submission.py", "args": [
                 "--submission-name", "tiny", "--combining-function", "sum", "--data-root", "{data_root}",
                 "--blip-pretrained-path", "{weights}/model_base.pth", *flags, "--output-root", "{out}"]}],
                 "submission": True}}
    registry = root / "registry.json"
    registry.write_text(json.dumps({"format_version": 1,
                                    "papers": {"bi_blip4cir": {"results": [fiq, cirr, test1]}}}))
    return {"root": root, "data": data, "weights": weights, "med": blip.med, "flags": flags,
            "env": env, "metrics": metrics, "registry": registry}


@pytest.fixture(scope="module")
def reproduced(tiny) -> tuple[subprocess.CompletedProcess, Path]:
    out = tiny["root"] / "out"
    result = run(["reproduce.py", "--paper", "bi_blip4cir", "--weights", str(tiny["weights"]), "--data-root",
                  str(tiny["data"]), "--out", str(out), "--registry", str(tiny["registry"])], tiny["env"])
    return result, out


@pytest.mark.slow
def test_reproduce_prints_one_table_and_writes_its_copies(tiny, reproduced):
    result, out = reproduced
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]  # one metric 5 points off
    table = json.loads((out / "reproduce_bi_blip4cir.json").read_text())
    rows = {(row["result"], row["metric"]): row for row in table["rows"]}
    average = rows["tiny FashionIQ val", "average_recall_at10"]
    assert average["ours"] == pytest.approx(tiny["metrics"]["average_recall_at10"])
    assert average["within_tolerance"] == "yes" and average["delta"] == pytest.approx(0)
    dress = rows["tiny FashionIQ val", "dress_recall_at50"]
    assert dress["within_tolerance"] == "NO" and dress["delta"] == pytest.approx(-5)
    assert "|---|" in (out / "reproduce_bi_blip4cir.md").read_text()
    assert (out / "reproduce_bi_blip4cir.csv").read_text().splitlines()[0].startswith("result,metric,paper,ours")
    lines = [line for line in result.stdout.splitlines() if line.startswith("tiny FashionIQ val")]
    assert len(lines) == 2 and " NO (±0.5)" in lines[1]
    assert "=== bi_blip4cir: weights" in result.stdout and "=== bi_blip4cir: data" in result.stdout
    assert table["papers"][0]["data"][0]["name"] == "fashioniq"


@pytest.mark.slow
def test_missing_released_files_are_listed_with_their_source(reproduced):
    result, out = reproduced
    assert "Traceback" not in result.stderr
    assert f"bi_blip4cir/CIRR/tuned_blip_mean.pt (get it from {CIRR_SOURCE})" in result.stdout
    rows = [row for row in json.loads((out / "reproduce_bi_blip4cir.json").read_text())["rows"]
            if row["result"] == "released CIRR files"]
    assert [row["ours"] for row in rows] == [None] and rows[0]["note"].startswith("skipped: 1 released file")
    assert CIRR_SOURCE == next(entry["source"] for entry in load_manifest()["files"]
                               if entry["path"] == "bi_blip4cir/CIRR/tuned_blip_mean.pt")


@pytest.mark.slow
def test_cirr_test_writes_the_submission_and_says_where_to_upload_it(reproduced):
    result, out = reproduced
    files = [out / "tiny_cirr_test1" / "submission" / "CIRR" / f"{kind}_submission_tiny.json"
             for kind in ("recall", "recall_subset")]
    assert all(path.is_file() for path in files)
    row = next(row for row in json.loads((out / "reproduce_bi_blip4cir.json").read_text())["rows"]
               if row["result"] == "tiny CIRR test1")
    assert row["ours"] is None and row["within_tolerance"] == "n/a"
    assert row["note"] == f"test split: upload {files[0]}, {files[1]} to https://cirr.cecs.anu.edu.au/"
    assert (out / "tiny_cirr_test1" / "submission" / "CIRR" / "run_info.json").is_file()


@pytest.mark.slow
def test_validate_prints_the_paper_numbers_for_a_registered_checkpoint_once(tiny, reproduced):
    _, out = reproduced
    log = (out / "tiny_fashioniq_val" / "step0_validate.log").read_text()
    assert log.count("paper numbers (released checkpoint; source: the tiny model)") == 1
    assert "average_recall_at10" in log and paper_numbers.NOT_RELEASED not in log
    assert json.loads((out / "tiny_fashioniq_val" / "run_info.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_validate_says_once_that_another_checkpoint_has_no_comparison(tiny, tmp_path):
    other = write_tiny_blip_checkpoint(tmp_path / "other.pth", image_size=32, vit=VIT,
                                       med=tiny["med"], layout="pretrain", seed=1)
    result = run(["bi_blip4cir/validate.py", "--dataset", "FashionIQ", "--combining-function", "sum", "--data-root",
                  str(tiny["data"]), "--blip-pretrained-path", str(other), *tiny["flags"], "--metrics-json",
                  str(tmp_path / "m.json")], {**tiny["env"], paper_numbers.REGISTRY_ENV: str(tiny["registry"])})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stdout.count(paper_numbers.NOT_RELEASED) == 1 and "paper numbers (released" not in result.stdout


def test_registry_entries_belong_to_manifest_files_with_their_published_hashes():
    manifest = {entry["path"]: entry for entry in load_manifest()["files"]}
    registry = paper_numbers.load_registry(paper_numbers.REGISTRY)
    assert set(registry["papers"]) == {"bi_blip4cir", "reranking_cir", "ratta"}
    for paper in registry["papers"].values():
        for result in paper["results"]:
            for entry in result["checkpoints"]:
                published = manifest[entry["path"]]
                for algo in ("sha256", "sha1"):
                    assert entry.get(algo) in (None, published[algo]), (result["name"], entry["path"])
            assert all(path in manifest for path in result.get("also_needs", []))
    fiq = paper_numbers.paper_results(registry, "bi_blip4cir")[0]["metrics"]
    assert (fiq["average_recall_at10"], fiq["average_recall_at50"]) == (43.49, 67.31)


@pytest.mark.parametrize("registered, published", [(True, 40.0), (False, 40.0), (True, None)])
def test_paper_numbers_are_reported_once_per_process(tmp_path, monkeypatch, capsys, registered, published):
    checkpoint = tmp_path / "c.pt"
    checkpoint.write_bytes(b"weights")
    sha1 = hashlib.sha1(b"weights" if registered else b"other").hexdigest()
    registry = {"papers": {"p": {"results": [{"name": "r", "dataset": "cirr", "split": "val", "source": "table 2",
                                              "checkpoints": [{"path": "c.pt", "sha1": sha1}], "tolerance": 0.5,
                                              "metrics": {"recall_at1": published}, "run": {}}]}}}
    (tmp_path / "registry.json").write_text(json.dumps(registry))
    monkeypatch.setenv(paper_numbers.REGISTRY_ENV, str(tmp_path / "registry.json"))
    monkeypatch.setenv("VLR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(paper_numbers, "_reported", False)
    with run_record.recording([]):
        run_record.note_checkpoint(checkpoint)
        rows = paper_numbers.report_paper_numbers("CIRR", "val", {"recall_at1": 40.2})
        assert paper_numbers.report_paper_numbers("CIRR", "val", {"recall_at1": 40.2}) == []
    out = capsys.readouterr().out
    if published is None:
        assert out == "paper numbers: released checkpoint, but no CIRR val numbers are published\n" and rows == []
    elif registered:
        assert out.count("paper numbers (released checkpoint; source: table 2)") == 1
        assert [(row.paper, row.verdict) for row in rows] == [(40.0, "yes")] and "+0.20" in out
    else:
        assert out.count(paper_numbers.NOT_RELEASED) == 1 and rows == []


def test_exit_status_needs_every_number_in_tolerance_and_both_checks_passed():
    good = paper_numbers.Row("r", "m", 40.0, 40.3, 0.5)
    account = [{"weights": [{"status": "present", "required": True}], "data": [{"ok": True}],
                "runs": [{"problem": ""}]}]
    assert reproduce.passed([good], account)
    assert not reproduce.passed([good, paper_numbers.Row("r", "n", 40.0, 41.0, 0.5)], account)
    assert reproduce.passed([good, paper_numbers.Row("r", "n", None, 41.0, 0.5)], account)
    for key, bad in (("weights", [{"status": "corrupt", "required": False}]), ("data", [{"ok": False}]),
                     ("runs", [{"problem": "missing: x"}])):
        assert not reproduce.passed([good], [{**account[0], key: bad}]), key


def test_matching_needs_every_published_hash_of_a_result():
    registry = {"papers": {"p": {"results": [{"name": "r", "dataset": "cirr", "split": "val", "metrics": {},
                                              "checkpoints": [{"path": "a", "sha1": "aa"}, {"path": "b", "sha1": "bb"},
                                                              {"path": "c", "sha1": None}]}]}}}
    both = [{"sha1": "aa", "sha256": "x"}, {"sha1": "bb"}]
    assert paper_numbers.matching_results(registry, both, "cirr", "val") != []
    assert paper_numbers.matching_results(registry, both[:1], "cirr", "val") == []
    assert paper_numbers.matching_results(registry, both, "fashioniq", "val") == []


def test_an_unknown_paper_or_a_broken_registry_is_an_input_error(tiny, tmp_path):
    """Input errors: ``run_main`` prints them as one line, before any work."""
    with pytest.raises(InputError, match="no paper 'mlcl' in the registry; it lists bi_blip4cir"):
        reproduce.main(["--paper", "mlcl", "--data-root", str(tmp_path), "--registry", str(tiny["registry"]),
                        "--out", str(tmp_path / "out")])
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"papers": {"x": {"results": [{"name": "r"}]}}}))
    with pytest.raises(InputError, match=r"broken.json: papers.x.results\[0\] lacks \['dataset'"):
        reproduce.main(["--all", "--data-root", str(tmp_path), "--registry", str(broken)])
    assert not (tmp_path / "out").exists()


def test_shipped_registry_is_the_default_without_the_variable(monkeypatch):
    monkeypatch.delenv(paper_numbers.REGISTRY_ENV, raising=False)
    assert paper_numbers.registry_path() == paper_numbers.REGISTRY
    assert run_record.current() is None


def test_trust_args_are_added_only_when_asked(tmp_path):
    step = {"script": "ratta/ratta_after_extract.py", "args": ["--db_root", "{weights}/db"],
            "trust_args": ["--trust_pickle"]}
    places = {"weights": tmp_path}
    assert reproduce.step_argv(step, places, ["--device", "cpu"], trust=False)[1:] == [
        "ratta/ratta_after_extract.py", "--db_root", f"{tmp_path}/db", "--device", "cpu"]
    assert reproduce.step_argv(step, places, [], trust=True)[-1] == "--trust_pickle"
    ratta = paper_numbers.paper_results(paper_numbers.load_registry(paper_numbers.REGISTRY), "ratta")
    assert all(result["run"]["steps"][-1]["trust_args"] == ["--trust_pickle"] for result in ratta)
