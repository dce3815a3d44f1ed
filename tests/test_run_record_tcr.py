"""The run record of tcr/main.py (a script without ``setup_runtime``): its flags, the BLIP file, the test-set
counts and run_info.json beside result.json."""
import json

import pytest

import tcr.main as tcr_main
from common import run_record
from tests.test_tcr_main import setup  # noqa: F401 - fixture

pytestmark = pytest.mark.usefixtures("one_thread")


def test_plain_evaluation_records_flags_weights_and_counts(setup, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("VLR_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    with run_record.recording(["--config", str(setup["i2t"])]):
        tcr_main.main(["--config", str(setup["i2t"]), "--output_dir", str(out), *setup["flags"]])
    info = json.loads((out / "run_info.json").read_text())
    assert info["flags"]["config"] == str(setup["i2t"]) and info["device"] == "cpu" and info["world_size"] == 1
    assert info["datasets"] == [{"name": "coco", "split": "test", "images": 40, "texts": 200}]
    assert [entry["path"].rsplit("/", 1)[-1] for entry in info["checkpoints"]] == ["model_base.pth"]
