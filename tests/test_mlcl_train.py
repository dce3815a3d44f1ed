"""MLCL training steps on tiny models: each stage lowers its loss with the frozen parts (BatchNorm statistics too)
unchanged, the frozen-feature tables give the losses of re-encoding, and the validation metrics on hand-built
rankings."""
from __future__ import annotations

import argparse
import random

import pytest
import torch
import torch.nn.functional as F

from clip.model import build_model
from common.cir.data import relative_dataset
from common.cir.evaluation import QuerySet, evaluate_composed
from common.cir.frozen import FrozenImages, FrozenTexts
from common.clip import tiny_clip_state_dict
from common.dist import DistInfo
from common.runtime import seed_everything
from common.synthetic.writers import write_shoes_raw
from common.training.loop import train_loader
from common.transforms import build_preprocess
from mlcl import prepare_shoes_data
from mlcl.augment import image_aug_transform
from mlcl.clip_fine_tune import QueryTarget, apply_encoder_choice, fine_tune_step
from mlcl.combiner import Combiner, mlcl_loss
from mlcl.combiner_train import build_optimizer, combiner_step
from mlcl.data import AugmentedRows, train_image_table
from mlcl.models import ImageEncoder, TextEncoder, sum_fusion
from mlcl.training import EpochMeans

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
CAPTIONS = ["make it red", "add a blue ball", "remove the cube", "turn it green", "make it larger", "on sand"]


def tiny_clip() -> torch.nn.Module:
    state = tiny_clip_state_dict("rn", seed=0)
    model = build_model(dict(state)).float()
    model.load_state_dict(state)
    return model.eval()


def snapshot(model: torch.nn.Module, prefix: str, buffers: bool = False) -> dict[str, torch.Tensor]:
    items = model.named_buffers() if buffers else model.named_parameters()
    return {name: value.detach().clone() for name, value in items if name.startswith(prefix)}


def changed(before: dict, model: torch.nn.Module, buffers: bool = False) -> set[str]:
    now = dict(model.named_buffers() if buffers else model.named_parameters())
    return {name for name, value in before.items() if not torch.equal(value, now[name])}


@pytest.mark.parametrize("encoder", ["text", "image", "both"])
def test_fine_tune_step_lowers_the_loss_and_respects_the_freeze(encoder):
    torch.manual_seed(0)
    model = tiny_clip()
    apply_encoder_choice(model, encoder)
    images = torch.randn(6, 3, 64, 64)
    batch = (images, images.roll(1, 0), CAPTIONS)
    visual, text = snapshot(model, "visual."), snapshot(model, "transformer.")
    bn_stats = snapshot(model, "visual.", buffers=True)
    scale = model.logit_scale.detach().clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, eps=1e-7)
    network = QueryTarget(model)
    losses = []
    for _ in range(4):
        loss, _, size = fine_tune_step(batch, random.Random(0), name="cirr", images=None, model=network, dist=CPU,
                                       amp=False)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert size == 6 and losses[-1] < losses[0]
    assert bool(changed(visual, model)) == (encoder != "text")
    assert bool(changed(text, model)) == (encoder != "image")
    assert not changed(bn_stats, model, buffers=True) and not model.training
    assert torch.equal(model.logit_scale, scale)


def test_encoder_choice_freeze_sets():
    model = tiny_clip()
    apply_encoder_choice(model, "text")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(name.startswith("visual.") for name in trainable)
    assert "token_embedding.weight" in trainable and "logit_scale" not in trainable
    apply_encoder_choice(model, "image")
    assert {name for name, p in model.named_parameters() if p.requires_grad} == {
        name for name, _ in model.named_parameters() if name.startswith("visual.")}


def test_combiner_steps_lower_the_loss_and_use_two_groups():
    torch.manual_seed(0)
    r, t = torch.randn(2, 16, 16).unbind(0)
    target, r_aug = 0.5 * (r + t) + 0.5 * torch.randn(16, 16), r + 0.3 * torch.randn(16, 16)
    combiner = Combiner(16, 32, 64, 1)
    optimizer = build_optimizer(combiner, 1e-3, 1e-2)

    def eval_loss() -> float:
        combiner.eval()
        with torch.no_grad():
            return mlcl_loss(combiner(r, t, target, r_aug), combiner.loss_weight)[0].item()

    before, weight = eval_loss(), combiner.loss_weight.detach().clone()
    for _ in range(5):
        combiner.train()
        loss, _ = mlcl_loss(combiner(r, t, target, r_aug), combiner.loss_weight)
        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.step()
    assert eval_loss() < before
    assert (combiner.loss_weight - weight).abs().item() == pytest.approx(5e-2, rel=0.05)  # Adam: ~lr per step


@pytest.fixture(scope="module")
def shoes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shoes")
    write_shoes_raw(root, {"train": 10, "eval": 6}, {"train": 8, "eval": 4}, n_cross_split=1, seed=2)
    prepare_shoes_data.main(["--data-root", str(root)])
    return root


def first_losses(data, images: FrozenImages, texts: FrozenTexts, model: torch.nn.Module, steps: int = 2) -> list:
    """Losses of ``steps`` batches of a fresh, identically seeded Combiner (dropout on)."""
    seed_everything(0)
    loader = train_loader(data, 4, 0, CPU, 0)
    combiner = Combiner(16, 32, 64, 1).train()
    augmented = FrozenImages(ImageEncoder(model, CPU.device), CPU.device, chunk_size=3)
    means, losses = EpochMeans(CPU.device), []
    for batch, _ in zip(loader, range(steps)):
        loss, terms, _ = combiner_step(batch, random.Random(0), name="shoes", images=images, texts=texts,
                                       augmented=augmented, model=combiner, dist=CPU, amp=False, means=means)
        losses.append([loss.item(), *[value.item() for value in terms.values()]])
    assert set(means.result()) == {"h", "c", "s", "mid", "high"}
    return losses


def test_feature_tables_give_the_losses_of_re_encoding(shoes):
    model = tiny_clip().requires_grad_(False)
    preprocess, augment = build_preprocess("targetpad", 64), image_aug_transform(1.25, 64)
    train = relative_dataset("shoes", shoes, "train", preprocess, ref_aug=augment)
    image_encoder, text_encoder = ImageEncoder(model, CPU.device), TextEncoder(model, CPU.device)
    reencoded = first_losses(train, FrozenImages(image_encoder, CPU.device, chunk_size=3), FrozenTexts(text_encoder),
                             model)
    args = argparse.Namespace(num_workers=0, cache_dir=None)
    table, rows = train_image_table(train, image_encoder, CPU.device, args, preprocess, 3)
    strings = sorted({triplet["RelativeCaption"] for triplet in train.triplets})
    cached = first_losses(AugmentedRows(train, rows, augment), FrozenImages(image_encoder, CPU.device, table),
                          FrozenTexts(text_encoder, strings, text_encoder(strings)), model)
    torch.testing.assert_close(torch.tensor(cached), torch.tensor(reencoded), rtol=1e-5, atol=1e-5)
    assert len(cached) == 2 and cached[0] != cached[1]


def one_hot(rows: list[int], size: int) -> torch.Tensor:
    return F.one_hot(torch.tensor(rows), size).float()


def test_shoes_metrics_exclude_the_reference():
    """Query = reference + text; the reference is always the best match, the target second: R@1 is 100 only
    because the reference is excluded."""
    gallery = torch.eye(6)
    references, targets = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])
    query_set = QuerySet("shoes", gallery, [f"img{i}" for i in range(6)], references, ["a", "b", "c"],
                         target_idx=targets)
    texts = 0.8 * one_hot([3, 4, 5], 6)
    metrics = evaluate_composed([query_set], [texts], sum_fusion)
    assert metrics == {"recall_at1": 100.0, "recall_at10": 100.0, "recall_at50": 100.0, "recall_mean": 100.0}
    texts = 0.8 * one_hot([3, 0, 5], 6)  # query 1 points at image 0, so its target 4 ties the rest
    metrics = evaluate_composed([query_set], [texts], sum_fusion)
    assert metrics["recall_at1"] == pytest.approx(200 / 3)


def test_fiq_metrics_keep_the_reference_and_combiner_fusion_ranks():
    gallery = torch.eye(12)
    sets = [QuerySet(name, gallery, [f"{name}{i}" for i in range(12)], torch.tensor([0, 1]), ["x", "y"],
                     target_idx=torch.tensor([5, 1])) for name in ("dress", "toptee", "shirt")]
    texts = [0.5 * one_hot([5, 1], 12)] * 3
    metrics = evaluate_composed(sets, texts, sum_fusion)
    assert metrics["dress_recall_at10"] == 100.0 and metrics["average_recall"] == 100.0
    combiner = Combiner(12, 8, 16, 0).eval()
    fused = evaluate_composed(sets, texts, combiner.fused_query)
    assert set(fused) == set(metrics)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_amp_features_and_step():
    """Autocast image features (the per-step augmented view) match fp32 ones; a GradScaler step lowers the loss."""
    device = torch.device("cuda")
    gpu = DistInfo(rank=0, world_size=1, local_rank=0, device=device)
    model = tiny_clip().to(device).requires_grad_(False)
    images = torch.randn(8, 3, 64, 64, device=device)
    full, mixed = ImageEncoder(model, device)(images), ImageEncoder(model, device, amp=True)(images)
    assert mixed.dtype == torch.float32 and F.cosine_similarity(full, mixed).min() > 0.99
    torch.manual_seed(0)
    features = torch.randn(4, 8, 16, device=device)
    table = FrozenImages(None, device, features.reshape(32, 16))
    texts = FrozenTexts(None, CAPTIONS[:4] * 2, torch.randn(8, 16, device=device))
    augmented = FrozenImages(lambda x: x.flatten(1)[:, :16], device)
    combiner = Combiner(16, 32, 64, 1).to(device)
    optimizer, scaler = build_optimizer(combiner, 1e-3, 1e-3), torch.amp.GradScaler("cuda")
    batch = (torch.arange(8), torch.arange(8, 16), CAPTIONS[:4] * 2, torch.randn(8, 16, device=device))
    losses = []
    for _ in range(5):
        loss, _, _ = combiner_step(batch, random.Random(0), name="cirr", images=table, texts=texts,
                                   augmented=augmented, model=combiner, dist=gpu, amp=True, means=EpochMeans(device))
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
