"""common.training.loop and common.training.run: the shared epoch, loader and run folder."""
import argparse
import csv

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from common.dist import DistInfo
from common.training.experiment import ExperimentTracker
from common.training.loop import train_loader, train_one_epoch
from common.training.run import TrainingRun

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def run_args(tmp_path, resume=None) -> argparse.Namespace:
    return argparse.Namespace(output_root=str(tmp_path), run_name="run", resume=resume, api_key=None, workspace=None,
                              experiment_name=None)


def test_train_loader_drops_the_incomplete_batch_and_rejects_too_small_splits():
    data = TensorDataset(torch.arange(10.0))
    assert [len(batch[0]) for batch in train_loader(data, 4, 0, CPU, seed=0)] == [4, 4]
    with pytest.raises(ValueError, match="10 samples, fewer than --batch-size 16"):
        train_loader(data, 16, 0, CPU, seed=0)


def test_train_one_epoch_returns_the_batch_weighted_loss_and_learns():
    """The epoch loss is Σ loss·B / Σ B of the per-step losses; repeated epochs fit y = 3x."""
    torch.manual_seed(0)
    x = torch.linspace(-1, 1, 12).unsqueeze(1)
    model = nn.Linear(1, 1, bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    seen: list[tuple[float, int]] = []

    def step(batch):
        loss = ((model(batch[0]) - 3 * batch[0]) ** 2).mean()
        seen.append((loss.item(), len(batch[0])))
        return loss, {"half": loss / 2}, len(batch[0])

    loader = train_loader(TensorDataset(x), 4, 0, CPU, seed=0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    tracker = ExperimentTracker(None, None, "test")
    first = train_one_epoch(loader, step, optimizer, scaler, 0, CPU.device, tracker, "test")
    assert first == pytest.approx(sum(value * size for value, size in seen) / sum(size for _, size in seen))
    for epoch in range(1, 6):
        last = train_one_epoch(loader, step, optimizer, scaler, epoch, CPU.device, tracker, "test")
    assert last < 0.01 * first
    assert model.weight.item() == pytest.approx(3.0, abs=0.05)


def test_training_run_resumes_after_the_last_finished_epoch(tmp_path):
    """A run saved after epoch 1 restarts at epoch 2 with the model, the best metrics and the logs of epochs 0-1."""
    model = nn.Linear(2, 2)
    run = TrainingRun(run_args(tmp_path), CPU, "prefix", {"model": model}, {"lr": 0.1}, "project", "title")
    assert run.start_epoch == 0 and (run.dir / "training_hyperparameters.json").is_file()
    for epoch in range(3):
        run.log.train(epoch, 1.0 / (epoch + 1))
        run.log.validation(epoch, {"recall": 10.0 * epoch})
        run.best = {"recall": 10.0 * epoch}
        if epoch < 2:
            run.end_epoch(epoch)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.zero_()

    resumed = TrainingRun(run_args(tmp_path, resume=str(run.dir)), CPU, "prefix", {"model": model}, {"lr": 0.1},
                          "project", "title")
    assert resumed.dir == run.dir and resumed.start_epoch == 2 and resumed.best == {"recall": 10.0}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    with open(run.dir / "train_metrics.csv") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0", "1"]
    assert (run.dir / "training_curves.png").is_file()


def test_resume_of_a_missing_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere: --resume expects a run folder"):
        TrainingRun(run_args(tmp_path, resume=str(tmp_path / "nowhere")), CPU, "p", {}, {}, "project", "title")


def test_train_one_epoch_records_its_steps_for_the_stop_line(tmp_path, monkeypatch):
    import common.runtime as runtime

    monkeypatch.setattr(runtime, "_active_run", None)
    place = runtime.track_run(tmp_path / "run")
    model = nn.Linear(1, 1)
    loader = train_loader(TensorDataset(torch.arange(12.0).unsqueeze(1)), 4, 0, CPU, seed=0)
    seen = []

    def step(batch):
        seen.append((place.epoch, place.step, place.steps))
        return model(batch[0]).mean(), {}, len(batch[0])

    scaler = torch.amp.GradScaler("cpu", enabled=False)
    train_one_epoch(loader, step, torch.optim.SGD(model.parameters(), lr=0.1), scaler, 4, CPU.device,
                    ExperimentTracker(None, None, "test"), "test")
    assert seen[1:] == [(4, 1, 3), (4, 2, 3)] and (place.epoch, place.step, place.steps) == (4, 3, 3)
