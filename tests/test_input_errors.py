"""Bad data files and unusable flag values are input errors (``common.errors.InputError``): ``run_main`` ends the
script with one line naming the file or the flag and exit status 1, not a traceback."""
import json

import pytest
import torch
from torch.utils.data import TensorDataset

from common.data.cir import check_choice, read_json_entries, read_name_list
from common.data.paths import dataset_dir
from common.dist import DistInfo
from common.errors import InputError
from common.runtime import run_main
from common.training.loop import train_loader

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def test_malformed_annotation_files_are_input_errors_naming_the_file(tmp_path):
    captions = tmp_path / "cap.dress.val.json"
    captions.write_text(json.dumps({"candidate": "a"}))
    with pytest.raises(InputError, match=f"{captions}: expected triplets, found a JSON dict"):
        read_json_entries(captions, ["candidate"], "triplets")
    captions.write_text(json.dumps([{"candidate": "a"}, {"target": "b"}]))
    with pytest.raises(InputError, match="entry 1 lacks candidate"):
        read_json_entries(captions, ["candidate"], "triplets")
    split = tmp_path / "split.dress.val.json"
    split.write_text(json.dumps([1, 2]))
    with pytest.raises(InputError, match=f"{split}: expected image names"):
        read_name_list(split, "image names")


def test_unusable_flag_values_are_input_errors():
    with pytest.raises(InputError, match="unknown dataset 'nope'"):
        dataset_dir("nope", "/data")
    with pytest.raises(InputError, match="unknown transform 'crop'"):
        check_choice("crop", ["targetpad", "squarepad"], "transform")
    with pytest.raises(InputError, match="fewer than --batch-size 8"):
        train_loader(TensorDataset(torch.arange(4)), batch_size=8, num_workers=0, dist=CPU, seed=0)


def test_run_main_ends_a_malformed_file_with_one_line_and_status_1(tmp_path, capsys):
    bad = tmp_path / "cap.json"
    bad.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(SystemExit) as stop:
        run_main(lambda argv: read_json_entries(bad, ["candidate"], "triplets"), [])
    assert stop.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"error: {bad}: expected triplets" in lines[0]
