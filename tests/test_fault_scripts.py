"""One training script per paper family, stopped inside an epoch after a ``--save-every-steps`` save and continued
with ``--resume auto``, ends with every tensor of its files and every CSV row equal to an uninterrupted run:
MLCL stage 2 on Shoes (the per-step warm-restart schedule and the loss-term means), Bi-BLIP4CIR stage II on
FashionIQ (the caption draws), Candidate Re-ranking stage 1 on FashionIQ (gradient accumulation, dropout).
The stop is a KeyboardInterrupt raised after a step, in this process (the tiny-script test SIGKILLs)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import common.training.loop as loop
from common.blip.config import ViTConfig
from common.blip.tiny import write_tiny_blip_files
from common.clip import write_tiny_clip
from common.synthetic.scenes import vocabulary
from common.synthetic.writers import write_fashioniq, write_shoes_raw
from test_fault_steps import assert_same_files

pytestmark = pytest.mark.slow  # three scripts, each run three times on tiny models: about 10 s each
VIT = ViTConfig(patch_size=8, width=32, depth=1, heads=2)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    from mlcl import prepare_shoes_data

    root = tmp_path_factory.mktemp("fault_scripts")
    data = root / "data"
    write_fashioniq(data, {"train": 8, "val": 6, "test": 2}, {"train": 8, "val": 4, "test": 2}, seed=0)
    write_shoes_raw(data, {"train": 10, "eval": 8}, {"train": 8, "eval": 6}, n_cross_split=1, seed=0)
    prepare_shoes_data.main(["--data-root", str(data)])
    clip = write_tiny_clip(root / "clip_rn.pt", kind="rn")
    blip = write_tiny_blip_files(root / "weights", VIT, extra_words=vocabulary())
    common = ["--data-root", str(data), "--num-workers", "0", "--device", "cpu"]
    return {"root": root, "clip": [*common, "--clip-model-name", str(clip)], "blip": [*common, *blip.flags()]}


def stop_after(monkeypatch, epoch: int, step: int) -> None:
    """Raise KeyboardInterrupt once ``step`` of ``epoch`` is done (before a save due at that step)."""
    note = loop.note_step

    def noting(done_epoch: int, done: int, steps: int | None) -> None:
        note(done_epoch, done, steps)
        if (done_epoch, done) == (epoch, step):
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "note_step", noting)


def cut_and_resume(monkeypatch, main, argv: list[str], out: Path, folder: str, every: int = 2, stop: int = 3,
                   saved: int = 2) -> tuple[Path, Path]:
    """The uninterrupted run, then one saving every ``every`` steps, stopped after step ``stop`` of epoch 1 (the
    last save at step ``saved``) and resumed with --resume auto; returns both run folders."""
    main([*argv, "--output-root", str(out / "straight")])
    flags = [*argv, "--output-root", str(out / "cut"), "--save-every-steps", str(every), "--resume", "auto"]
    with monkeypatch.context() as patch:
        stop_after(patch, 1, stop)
        with pytest.raises(KeyboardInterrupt):
            main(flags)
    run, = (out / "cut" / folder).iterdir()
    partial = torch.load(run / "resume.pt", weights_only=False)["extra"]["partial"]
    assert (partial["epoch"], partial["step"]) == (1, saved)
    main(flags)
    assert list((out / "cut" / folder).iterdir()) == [run]
    straight, = (out / "straight" / folder).iterdir()
    return run, straight


def test_mlcl_stage2_shoes_with_schedule(tiny, monkeypatch):
    from mlcl import combiner_train

    argv = [*tiny["clip"], "--dataset", "Shoes", "--projection-dim", "32", "--hidden-dim", "64", "--batch-size", "2",
            "--clip-bs", "3", "--combiner-lr", "1e-3", "--num-epochs", "2", "--validation-frequency", "1",
            "--use_schedule", "1", "--save-training"]
    run, straight = cut_and_resume(monkeypatch, combiner_train.main, argv, tiny["root"] / "mlcl",
                                   combiner_train.RUN_SUBDIR)
    assert_same_files(run, straight)
    assert (run / "loss_terms.csv").read_text() == (straight / "loss_terms.csv").read_text()


def test_bi_blip4cir_stage2_fashioniq_caption_draws(tiny, monkeypatch):
    from bi_blip4cir import combiner_train

    argv = [*tiny["blip"], "--dataset", "FashionIQ", "--feature-dim", "16", "--projection-dim", "32",
            "--hidden-dim", "64", "--batch-size", "4", "--combiner-lr", "1e-3", "--num-epochs", "2",
            "--validation-frequency", "1", "--save-training"]
    run, straight = cut_and_resume(monkeypatch, combiner_train.main, argv, tiny["root"] / "bi", "models")
    assert_same_files(run, straight)


def test_reranking_stage1_fashioniq_with_accumulation(tiny, monkeypatch):
    """Two-batch accumulation and a save due every 3 batches: it waits for the optimizer step at batch 4 (the
    summed gradient of batch 3 is not part of the state)."""
    from reranking_cir import stage1_train

    argv = [*tiny["blip"], "--dataset", "FashionIQ", "--train", "--batch-size", "2", "--grad-accumulation-step", "2",
            "--num-epochs", "2", "--validation-frequency", "1", "--save-training", "--blip-learning-rate", "1e-4"]
    run, straight = cut_and_resume(monkeypatch, stage1_train.main, argv, tiny["root"] / "reranking", "models",
                                   every=3, stop=5, saved=4)
    assert_same_files(run, straight)
