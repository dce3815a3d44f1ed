"""Candidate Re-ranking training as the original recipe (``src/stage1_train.py``, ``src/stage2_train.py``):
what ``--blip-img-tune`` trains in each stage (ViT gradients, ``vision_proj``, the K/V-reuse grid, targets gathered
with their gradient under torchrun, the validation gallery encoded again), and the precision of each part of a
training step (``z_t`` in fp32 outside autocast; the ViT under autocast only when it trains). Tiny BLIP, CPU."""
import argparse
import dataclasses
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from common.blip import tokenize
from common.blip.config import ViTConfig
from common.blip.tiny import tiny_med_config, write_tiny_blip_files
from common.cir.data import dataset_root, relative_dataset
from common.dist import DistInfo, cleanup, init_distributed
from common.synthetic.scenes import vocabulary
from common.synthetic.writers import write_cirr
from common.training.loop import data_parallel
from common.transforms import build_preprocess
from reranking_cir import stage1_ranking, stage1_train, stage2_reranking, stage2_train, validate
from reranking_cir.args import add_port_args
from reranking_cir.data import build_query_sets
from reranking_cir.models import Models, build_models
from reranking_cir.models import build_stage1

VIT = ViTConfig(patch_size=8, width=32, depth=1, heads=2)
CPU = torch.device("cpu")
SINGLE = DistInfo(0, 1, 0, CPU)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("reranking_fidelity")
    data = root / "data"
    write_cirr(data, {"train": 3, "val": 2, "test1": 9}, 3, seed=0)
    blip = write_tiny_blip_files(root / "weights", VIT, extra_words=vocabulary())
    return {"root": root, "data": data, "blip": blip,
            "args": ["--data-root", str(data), *blip.flags(), "--num-workers", "0", "--device", "cpu"]}


def port_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_port_args(parser)
    return parser.parse_args(argv)


def tiny_models(argv: list[str]) -> Models:
    """Both stages from the tiny ``model_base.pth``; stage 2's fresh layers seeded, so every process builds the same."""
    torch.manual_seed(0)
    return build_models(port_args(argv), CPU, stage2=True)


def train_batch(data) -> tuple:
    """4 CIRR training triplets (reference images, target images, captions)."""
    dataset = relative_dataset("cirr", dataset_root("cirr", data), "train", build_preprocess("targetpad", 32))
    items = [dataset[i] for i in range(4)]
    return torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items]), [i[2] for i in items]


def grads(module: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    return {name: None if p.grad is None else p.grad.clone() for name, p in module.named_parameters()}


def stage1_backward(models: Models, batch: tuple, img_tune: bool, dist: DistInfo = SINGLE,
                    amp: bool = False) -> None:
    """One stage-1 training step's loss and its backward (the DDP wrapper alive until then, or it does not sync)."""
    model = models.stage1
    logits_fn = data_parallel(stage1_train.QueryLogits(model), dist)
    loss, _, _ = stage1_train.stage1_step(batch, None, name="cirr", model=model, logits_fn=logits_fn,
                                          tokenizer=models.tokenizer, dist=dist, amp=amp, chunk=4, img_tune=img_tune)
    loss.backward()


def stage2_backward(models: Models, batch: tuple, img_tune: bool, kv_reuse: bool = True,
                    dist: DistInfo = SINGLE, amp: bool = False) -> None:
    """One stage-2 training step's loss and its backward."""
    scores_fn = data_parallel(stage2_train.PairScores(models.stage2, kv_reuse), dist)
    loss, _, _ = stage2_train.stage2_step(batch, None, name="cirr", stage1=models.stage1, stage2=models.stage2,
                                          scores_fn=scores_fn, tokenizer=models.tokenizer, dist=dist, amp=amp,
                                          chunk=4, img_tune=img_tune)
    loss.backward()


# ------------------------------------------------------------------------------------------------ --blip-img-tune


def test_stage1_img_tune_trains_the_vit_and_vision_proj_through_references_and_targets(tiny):
    batch = train_batch(tiny["data"])
    models = tiny_models(tiny["args"])
    model = models.stage1.eval()
    model.visual_encoder.train()  # its gradient checkpointing (last 4 blocks, as the original) is active
    trained = stage1_train.trainable_parameters(model, img_tune=True)
    assert len(trained) == len(list(model.parameters()))  # one AdamW group holding everything, as the original
    stage1_backward(models, batch, img_tune=True)
    got = grads(model)
    assert all(grad is not None for grad in got.values())
    assert got["vision_proj.weight"].abs().sum() > 0  # reached only through the targets
    # the loss written out, with references and targets through the ViT
    input_ids, mask = tokenize(models.tokenizer, batch[2], device=CPU)
    targets = model.target_features(model.image_embeds(batch[1]))
    logits = model.logits(model(model.image_embeds(batch[0]), input_ids, mask), targets)
    names = [name for name, _ in model.named_parameters() if name.startswith(("visual_encoder", "vision_proj"))]
    expected = torch.autograd.grad(F.cross_entropy(logits, torch.arange(4)),
                                   [dict(model.named_parameters())[name] for name in names])
    for name, grad in zip(names, expected):
        torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-7, msg=name)


def test_stage1_vit_checkpoints_its_last_4_blocks_as_the_original_config():
    med = tiny_med_config(64, VIT.width)
    model = build_stage1(dataclasses.replace(VIT, depth=6), med, 32, enc_token_id=1, embed_dim=16)
    assert [block.grad_checkpointing for block in model.visual_encoder.blocks] == [False] * 2 + [True] * 4


def test_stage1_without_img_tune_keeps_the_vit_and_vision_proj(tiny):
    models = tiny_models(tiny["args"])
    model = models.stage1.eval()
    trained = {id(p) for p in stage1_train.trainable_parameters(model, img_tune=False)}
    stage1_backward(models, train_batch(tiny["data"]), img_tune=False)
    for name, grad in grads(model).items():
        frozen = name.startswith(("visual_encoder", "vision_proj"))
        assert (grad is None) == frozen, name
        assert (id(dict(model.named_parameters())[name]) in trained) != frozen, name


def test_stage2_img_tune_trains_the_vit_through_the_targets_on_both_paths(tiny):
    batch = train_batch(tiny["data"])
    per_path = {}
    for kv_reuse in (True, False):
        models = tiny_models(tiny["args"])
        stage1, stage2 = models.stage1.eval(), models.stage2.eval()  # eval: no drop-path, same function twice
        trained = stage2_train.trainable_parameters(stage1, stage2, img_tune=True)
        assert len(trained) == len(list(stage2.parameters()))
        stage2_backward(models, batch, img_tune=True, kv_reuse=kv_reuse)
        assert all(p.grad is None for p in stage1.parameters())
        per_path[kv_reuse] = grads(stage2)
    vit = {name: grad for name, grad in per_path[True].items() if name.startswith("visual_encoder")}
    assert all(grad is not None for grad in vit.values()) and sum(g.abs().sum() for g in vit.values()) > 0
    for name, grad in per_path[True].items():  # the K/V-reuse grid passes the same gradient to the ViT
        torch.testing.assert_close(grad, per_path[False][name], rtol=1e-4, atol=1e-7, msg=name)


def test_stage2_without_img_tune_keeps_the_vit_and_stage1(tiny):
    models = tiny_models(tiny["args"])
    stage1, stage2 = models.stage1.eval(), models.stage2.eval()
    trained = {id(p) for p in stage2_train.trainable_parameters(stage1, stage2, img_tune=False)}
    stage2_backward(models, train_batch(tiny["data"]), img_tune=False)
    assert all(p.grad is None and not p.requires_grad for p in stage1.parameters())
    for name, parameter in stage2.named_parameters():
        frozen = name.startswith("visual_encoder")
        assert (parameter.grad is None) == frozen and (id(parameter) in trained) != frozen, name


def test_rerank_takes_the_z_t_references_from_the_stage2_gallery(tiny):
    """When stage 2's ViT differs (after --blip-img-tune), its gallery tokens feed the candidates and z_t, as the
    original validate_stage2.py, which encodes the gallery with the stage-2 model only."""
    args = stage2_train.build_parser().parse_args(["--dataset", "CIRR", *tiny["args"], "--top-k-path", "unused",
                                                   "--K-value", "3", "--blip-model-path", "unused"])
    models = tiny_models(tiny["args"])
    query_set, = build_query_sets(args, "cirr", "val", models.stage1.visual_encoder, CPU)
    topk = stage1_ranking.stage1_topk(query_set, stage1_ranking.stage1_scores(models, query_set, args), "val", 5)
    stage2_gallery = torch.randn(query_set.gallery.shape, generator=torch.Generator().manual_seed(0))
    given = stage2_reranking.rerank(models, query_set, topk, 3, args, stage2_gallery)
    shared = stage2_reranking.rerank(models, dataclasses.replace(query_set, gallery=stage2_gallery), topk, 3, args)
    assert torch.equal(given.scores, shared.scores) and torch.equal(given.group_scores, shared.group_scores)


def vit_weight(state: dict) -> torch.Tensor:
    return state["visual_encoder.blocks.0.attn.qkv.weight"]


def test_img_tune_runs_change_the_vit_in_both_checkpoints(tiny):
    out, args = tiny["root"] / "runs", tiny["args"]
    base = torch.load(tiny["blip"].checkpoint, weights_only=True)["model"]
    common = [*args, "--train", "--num-epochs", "1", "--batch-size", "3", "--validation-frequency", "1",
              "--save-training", "--output-root", str(out), "--blip-learning-rate", "1e-3", "--blip-img-tune"]
    stage1_train.main(["--dataset", "CIRR", *common, "--run-name", "s1"])
    first = torch.load(out / "models/s1/saved_models/blip_0.pt", weights_only=True)["BLIP_Retrieval"]
    assert not torch.equal(vit_weight(first), vit_weight(base))
    assert not torch.equal(first["vision_proj.weight"], base["vision_proj.weight"])
    stage1_file = str(out / "models/s1/saved_models/blip_0.pt")
    validate.main(["--dataset", "CIRR", *args, "--stage1-path", stage1_file, "--save-topk", "--k", "11"])
    stage2_train.main(["--dataset", "CIRR", *common, "--run-name", "s2", "--blip-model-path", stage1_file,
                       "--top-k-path", str(out / "models/s1/cirr_top_11_val.pt"), "--K-value", "3"])
    second = torch.load(out / "models/s2/saved_models/blip_0.pt", weights_only=True)["BLIP_NLVR"]
    assert not torch.equal(vit_weight(second), vit_weight(base))
    assert (out / "models/s2/validation_metrics.csv").is_file()


# --------------------------------------------------------------------------------------------------- precision


def cpu_autocast(device, enabled=True, dtype=torch.float16):
    """``common.runtime.autocast`` as on CUDA, but on the CPU (bf16), so the tests can see where it is on."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


def record(modules: dict[str, torch.nn.Module]) -> list[tuple]:
    """(module, autocast on, gradient on, output dtype) of every forward of ``modules``."""
    calls = []
    for name, module in modules.items():
        module.register_forward_hook(lambda _, __, out, name=name: calls.append(
            (name, torch.is_autocast_enabled("cpu"), torch.is_grad_enabled(), getattr(out, "dtype", None))))
    return calls


@pytest.mark.parametrize("img_tune", [False, True])
def test_stage2_step_precision_as_the_original(tiny, monkeypatch, img_tune):
    """z_t in fp32 outside autocast (the original's stage2_train.py); the ViT in fp32 without gradient, or under
    autocast with gradient for the targets with --blip-img-tune; the pair scores under autocast."""
    monkeypatch.setattr(stage1_train, "autocast", cpu_autocast)
    monkeypatch.setattr(stage2_train, "autocast", cpu_autocast)
    models = tiny_models(tiny["args"])
    stage2_train.trainable_parameters(models.stage1.eval(), models.stage2.eval(), img_tune)
    calls = record({"vit": models.stage2.visual_encoder, "z_t": models.stage1, "head": models.stage2.cls_head})
    stage2_backward(models, train_batch(tiny["data"]), img_tune, amp=True)
    vit_calls = [call[:3] for call in calls if call[0] == "vit"]
    if img_tune:
        assert vit_calls == [("vit", True, False), ("vit", True, True)]  # references, then targets
    else:
        assert vit_calls == [("vit", False, False), ("vit", False, False)]
    assert [call for call in calls if call[0] == "z_t"] == [("z_t", False, False, torch.float32)]
    assert [call[:3] for call in calls if call[0] == "head"] == [("head", True, True)]


@pytest.mark.parametrize("img_tune", [False, True])
def test_stage1_step_precision_as_the_original(tiny, monkeypatch, img_tune):
    monkeypatch.setattr(stage1_train, "autocast", cpu_autocast)
    models = tiny_models(tiny["args"])
    model = models.stage1.eval()
    stage1_train.trainable_parameters(model, img_tune)
    calls = record({"vit": model.visual_encoder, "vision_proj": model.vision_proj, "text": model.text_encoder})
    stage1_backward(models, train_batch(tiny["data"]), img_tune, amp=True)
    image = (img_tune, img_tune)  # autocast and gradient together, or neither
    assert [call[:3] for call in calls] == [("vit", *image), ("vit", *image), ("vision_proj", *image),
                                            ("text", True, True)]


# ------------------------------------------------------------------------------------------- torchrun (gloo)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def img_tune_gradients(argv: list[str], data, dist: DistInfo) -> dict:
    """Stage-1 and stage-2 ViT gradients of one --blip-img-tune step on this process's block of the 4 triplets."""
    size = 4 // dist.world_size
    batch = tuple(field[dist.rank * size:(dist.rank + 1) * size] for field in train_batch(data))
    result = {}
    for stage in (1, 2):
        models = tiny_models(argv)
        models.stage1.eval()
        models.stage2.eval()
        if stage == 1:
            stage1_train.trainable_parameters(models.stage1, img_tune=True)
            stage1_backward(models, batch, img_tune=True, dist=dist)
        else:
            stage2_train.trainable_parameters(models.stage1, models.stage2, img_tune=True)
            stage2_backward(models, batch, img_tune=True, dist=dist)
        model = models.stage1 if stage == 1 else models.stage2
        result[stage] = {name: grad for name, grad in grads(model).items()
                         if name.startswith(("visual_encoder", "vision_proj"))}
    return result


def gloo_process(rank: int, port: int, argv: list[str], data, out) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    dist = init_distributed("cpu")
    result = img_tune_gradients(argv, data, dist)
    if dist.is_main:
        torch.save(result, out)
    cleanup()


@pytest.mark.slow
def test_img_tune_targets_keep_their_gradient_under_torchrun(tiny, tmp_path):
    """Two processes give the ViT gradient of one on the whole batch: the gathered targets carry their gradient
    back to the process that encoded them."""
    single = img_tune_gradients(tiny["args"], tiny["data"], SINGLE)
    mp.start_processes(gloo_process, (free_port(), tiny["args"], tiny["data"], tmp_path / "two.pt"), nprocs=2,
                       start_method="spawn")
    double = torch.load(tmp_path / "two.pt", weights_only=True)
    for stage in (1, 2):
        assert set(double[stage]) == set(single[stage])
        for name, grad in single[stage].items():
            torch.testing.assert_close(double[stage][name], grad, rtol=1e-4, atol=1e-6, msg=f"stage {stage} {name}")
