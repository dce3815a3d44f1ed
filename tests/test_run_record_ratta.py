"""The run record of RA-TTA's two stages (scripts without ``setup_runtime``): flags, the CLIP file, the test-set
count and run_info.json beside the results."""
import json

from common import run_record
from ratta import after_extract, pre_extract
from tests.test_ratta_scripts import after_args, extracted, pre_args, setup  # noqa: F401 - fixtures


def test_after_extract_records_its_flags_weights_and_test_set(setup, extracted, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("VLR_CACHE_DIR", str(tmp_path / "cache"))
    results = tmp_path / "results" / "dtd.json"
    with run_record.recording(["--dataset", "dtd"]):
        after_extract.run(after_args(setup, "--results_json", str(results)), imagenet=False)
    info = json.loads((results.parent / "run_info.json").read_text())
    assert info["status"] == "completed" and info["flags"]["dataset"] == "dtd" and info["device"] == "cpu"
    assert info["datasets"] == [{"name": "dtd", "split": "test", "images": 47}]
    clip = setup["model"][setup["model"].index("--weights") + 1]
    embeddings = str(setup["root"] / "emb" / "test_tiny" / "0" / "dtd.pth")
    assert {(entry["path"], entry["what"]) for entry in info["checkpoints"]} == {
        (embeddings, "test-embedding file"), (clip, "checkpoint")}


def test_pre_extract_records_beside_its_embeddings(setup, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("VLR_CACHE_DIR", str(tmp_path / "cache"))
    with run_record.recording([]):
        out = pre_extract.run(pre_args(setup, save_dir=str(tmp_path / "emb")), imagenet=False)
    info = json.loads((out.parent / "run_info.json").read_text())
    assert info["flags"]["augmentation_size"] == pre_args(setup).augmentation_size and info["checkpoints"]
