"""Checkpoints in the released layout, resume, CSV logs, schedules, plots and the feature cache."""
import csv
import logging

import pytest
import torch
from torch import nn

from common.features import extract_features
from common.io import CheckpointError
from common.training.checkpoint import load_model, load_resume_state, save_model, save_resume_state
from common.training.experiment import CSVLogger, ExperimentTracker, make_run_dir, write_hyperparameters
from common.training.lr import cosine_lr_schedule
from common.training.plots import plot_training_curves


class Combiner(nn.Module):
    def __init__(self):
        super().__init__()
        self.text_projection_layer = nn.Linear(4, 3)


def test_save_model_writes_released_layout_and_loads_strictly(tmp_path):
    model = Combiner()
    optimizer = torch.optim.AdamW(model.parameters())
    path = save_model("combiner", 3, model, tmp_path, optimizer)
    assert path == tmp_path / "saved_models" / "combiner.pt"
    payload = torch.load(path)
    assert sorted(payload) == ["Combiner", "epoch", "optimizer_state_dict"]
    assert sorted(payload["Combiner"]) == ["text_projection_layer.bias", "text_projection_layer.weight"]
    fresh = Combiner()
    assert load_model(path, fresh)["epoch"] == 3
    assert torch.equal(fresh.text_projection_layer.weight, model.text_projection_layer.weight)


def test_load_model_names_mismatched_keys(tmp_path):
    torch.save({"epoch": 0, "Combiner": {"other.weight": torch.ones(1)}}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match=r"c.pt: checkpoint does not fit Combiner: missing keys \(2\): "
                       r"text_projection_layer.bias, text_projection_layer.weight; unexpected keys \(1\): "
                       r"other.weight"):
        load_model(tmp_path / "c.pt", Combiner())
    with pytest.raises(CheckpointError, match="no entry 'CLIP'"):
        load_model(tmp_path / "c.pt", Combiner(), key="CLIP")


def test_resume_restores_modules_rng_and_extra(tmp_path):
    model = Combiner()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    save_resume_state(tmp_path, 4, {"model": model, "optimizer": optimizer}, {"best": 12.5})
    expected_next = torch.rand(3)
    other = Combiner()
    other_opt = torch.optim.SGD(other.parameters(), lr=0.5)
    next_epoch, extra = load_resume_state(tmp_path, {"model": other, "optimizer": other_opt})
    assert next_epoch == 5 and extra == {"best": 12.5}
    assert torch.equal(other.text_projection_layer.weight, model.text_projection_layer.weight)
    assert other_opt.param_groups[0]["lr"] == 0.1
    assert torch.equal(torch.rand(3), expected_next)
    with pytest.raises(FileNotFoundError, match="resume.pt"):
        load_resume_state(tmp_path / "nowhere", {})


def test_cosine_schedule_matches_upstream_periodic_form():
    params = [nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.AdamW([{"params": [params[0]], "lr": 1.0}, {"params": [params[1]], "lr": 100.0}])
    rates = [cosine_lr_schedule(optimizer, e, 10, 1.0, 0.0) for e in (0, 5, 10, 15, 19)]
    assert rates == pytest.approx([1.0, 0.5, 0.0, 0.5, 0.97552825])
    assert optimizer.param_groups[1]["lr"] == 100.0
    assert cosine_lr_schedule(optimizer, 15, 10, 1.0, 0.0, clamp=True) == pytest.approx(0.0)


def test_csv_logger_rewrites_and_resumes(tmp_path):
    path = tmp_path / "train_metrics.csv"
    log = CSVLogger(path)
    for epoch in range(3):
        log.log({"epoch": epoch, "train_epoch_loss": 1.0 / (epoch + 1)})
    reopened = CSVLogger(path)
    reopened.truncate_after(1)
    reopened.log({"epoch": 2, "train_epoch_loss": 0.25})
    rows = list(csv.DictReader(open(path)))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"] and rows[2]["train_epoch_loss"] == "0.25"
    assert open(path).readline().strip() == "epoch,train_epoch_loss"



def test_csv_logger_resume_keeps_the_columns_beyond_the_given_ones(tmp_path):
    path = tmp_path / "train_metrics.csv"
    log = CSVLogger(path, ["epoch", "train_epoch_loss"])
    for epoch in range(2):
        log.log({"epoch": epoch, "train_epoch_loss": 1.0, "loss_h": 0.5 + epoch})
    reopened = CSVLogger(path, ["epoch", "train_epoch_loss"])
    reopened.truncate_after(0)
    reopened.log({"epoch": 1, "train_epoch_loss": 0.5, "loss_h": 0.25})
    rows = list(csv.DictReader(open(path)))
    assert [(r["epoch"], r["loss_h"]) for r in rows] == [("0", "0.5"), ("1", "0.25")]

def test_run_dir_hyperparameters_tracker_and_plot(tmp_path):
    first = make_run_dir(tmp_path, "x", run_name="run")
    assert make_run_dir(tmp_path, "x", run_name="run").name == "run_1" and first.is_dir()
    write_hyperparameters(first, {"num_epochs": 2, "batch_size": 4})
    assert (first / "training_hyperparameters.json").read_text() == '{\n    "batch_size": 4,\n    "num_epochs": 2\n}'
    tracker = ExperimentTracker(None, None, "project")
    assert not tracker.enabled
    with tracker.context("train"):
        tracker.log_metrics({"loss": 1.0})
    train, val = CSVLogger(first / "train_metrics.csv"), CSVLogger(first / "validation_metrics.csv")
    for epoch in range(2):
        train.log({"epoch": epoch, "train_epoch_loss": 2.0 - epoch})
        val.log({"epoch": epoch, "recall_at1": 10.0 * epoch})
    png = plot_training_curves(first / "train_metrics.csv", first / "validation_metrics.csv", first / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class Named(torch.utils.data.Dataset):
    def __len__(self):
        return 5

    def __getitem__(self, i):
        return f"img{i}", torch.full((2,), float(i))


def test_feature_cache_skips_the_encoder(tmp_path):
    calls = []

    def encode(x):
        calls.append(len(x))
        return x * 2

    key = {"checkpoint": "abc", "split": "val"}
    feats, names = extract_features(Named(), encode, device=torch.device("cpu"), batch_size=2,
                                    cache_dir=tmp_path, cache_key=key)
    assert calls == [2, 2, 1] and names == [f"img{i}" for i in range(5)]
    again, again_names = extract_features(Named(), encode, device=torch.device("cpu"), batch_size=2,
                                          cache_dir=tmp_path, cache_key=key)
    assert calls == [2, 2, 1] and again_names == names and torch.equal(again, feats)
    assert feats[:, 0].tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]


def test_logger_filter_keeps_info_to_rank_zero_at_emit_time(monkeypatch):
    from common.runtime import MainProcessFilter

    def record(level):
        return logging.LogRecord("x", level, __file__, 1, "message", None, None)

    keep = MainProcessFilter()
    monkeypatch.setenv("RANK", "1")
    assert not keep.filter(record(logging.INFO)) and keep.filter(record(logging.WARNING))
    monkeypatch.setenv("RANK", "0")
    assert keep.filter(record(logging.INFO))


def test_an_interrupted_plot_leaves_the_old_png_and_no_temporary_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    train = CSVLogger(tmp_path / "train.csv")
    train.log({"epoch": 0, "train_epoch_loss": 1.0})
    png = plot_training_curves(tmp_path / "train.csv", tmp_path / "val.csv", tmp_path / "curves.png")
    before = png.read_bytes()

    def cut(self, path, **kwargs):
        open(path, "wb").write(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", cut)
    with pytest.raises(KeyboardInterrupt):
        plot_training_curves(tmp_path / "train.csv", tmp_path / "val.csv", tmp_path / "curves.png")
    assert png.read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["curves.png", "train.csv"]
