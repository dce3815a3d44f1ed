"""Candidate Re-ranking pieces: top-K files and their checks, path aliases, re-ranking invariants, stage-2
metrics over the top-K, the Figure-8 statistics, the stage-2 initialisation and checkpoint-kind errors."""
import numpy as np
import pytest
import torch

from common.blip import CirStage1, CirStage2
from common.blip.tiny import tiny_med_config, tiny_vit_config, write_tiny_blip_checkpoint
from common.io import CheckpointError
from common.training.checkpoint import save_model
from reranking_cir.models import init_stage2, load_stage
from reranking_cir.paths import get_model_path, get_top_k_path
from reranking_cir.ranking_delta import delta_stats
from reranking_cir.rerank import permute_labels, recall_from_labels, rerank_topk, stage2_cirr_metrics
from reranking_cir.topk import TopKError, build_topk, load_topk, read_topk, save_topk

NAMES = [f"img{i}" for i in range(6)]


def _cirr_topk(k: int = 4):
    order = torch.tensor([[1, 2, 3, 4, 5], [0, 2, 4, 5, 3], [5, 4, 3, 0, 1]])
    targets = torch.tensor([3, 0, 1])
    group = torch.tensor([[2, 3, 4, 5, 0], [2, 0, 4, 5, 3], [5, 4, 3, 1, 0]])
    return build_topk(order, NAMES, "val", k, targets, group)


def test_topk_round_trip_in_the_original_layout(tmp_path):
    path = save_topk(_cirr_topk(), tmp_path / "cirr_top_4_val.pt")
    raw = torch.load(path, weights_only=False)
    assert set(raw) == {"sorted_index_names", "target_names", "index_names", "labels", "group_labels", "split"}
    assert isinstance(raw["sorted_index_names"], np.ndarray) and raw["sorted_index_names"].dtype.kind == "U"
    assert raw["sorted_index_names"].tolist()[0] == ["img1", "img2", "img3", "img4"]
    assert raw["labels"].dtype == torch.bool and raw["labels"].tolist()[0] == [False, False, True, False]
    assert raw["labels"][2].any().item() is False  # target img1 is outside the top 4
    assert raw["group_labels"].tolist()[1] == [False, True, False, False, False]
    assert raw["target_names"] == ["img3", "img0", "img1"] and raw["split"] == "val"
    back = read_topk(path)
    assert np.array_equal(back.sorted_index_names, raw["sorted_index_names"])
    assert back.index_rows(2).tolist() == [[1, 2], [0, 2], [5, 4]]


def test_fiq_topk_keeps_its_category(tmp_path):
    topk = build_topk(torch.tensor([[0, 1, 2], [2, 1, 0]]), NAMES[:3], "val", 2, torch.tensor([1, 1]),
                      dress_type="shirt")
    path = save_topk(topk, tmp_path / "fiq_top_2_val_shirt.pt")
    assert torch.load(path, weights_only=False)["dress_types"] == "shirt"
    load_topk(path, k=2, split="val", index_names=NAMES[:3], n_queries=2, dress_type="shirt")
    with pytest.raises(TopKError, match="fiq_top_2_val_shirt.pt.*category 'shirt', expected 'dress'"):
        load_topk(path, k=2, split="val", index_names=NAMES[:3], n_queries=2, dress_type="dress")


@pytest.mark.parametrize("change, message", [
    (dict(k=6), "top 5 per query, fewer than the requested K = 6"),
    (dict(split="test1"), "split 'val', expected 'test1'"),
    (dict(index_names=NAMES[::-1]), "index_names"),
    (dict(n_queries=4), "3 rows for the 4 queries"),
    (dict(target_names=["img3", "img0", "img2"]), "target_names differ"),
])
def test_topk_checks_name_the_file(tmp_path, change, message):
    path = save_topk(_cirr_topk(5), tmp_path / "cirr_top_5_val.pt")
    kwargs = dict(k=4, split="val", index_names=NAMES, n_queries=3, target_names=["img3", "img0", "img1"])
    assert load_topk(path, **kwargs).width == 5
    with pytest.raises(TopKError, match=f"cirr_top_5_val.pt.*{message}"):
        load_topk(path, **{**kwargs, **change})


def test_not_a_topk_file(tmp_path):
    torch.save({"labels": torch.zeros(2, 2, dtype=torch.bool)}, tmp_path / "bad.pt")
    with pytest.raises(TopKError, match="bad.pt: lacks"):
        read_topk(tmp_path / "bad.pt")


def test_path_aliases_and_dtype(tmp_path):
    fiq = tmp_path / "models" / "stage1" / "fashionIQ"
    fiq.mkdir(parents=True)
    (fiq / "fiq_top_200_val_dress.pt").write_bytes(b"x")
    models = tmp_path / "models"
    assert get_top_k_path("BLIP_stageI_b512_2e-5_cos20", "fashioniq", models_root=models,
                          dress_type="dress") == fiq / "fiq_top_200_val_dress.pt"
    raw = str(fiq / "fiq_top_200_val_DTYPE.pt")
    assert get_top_k_path(raw, "fashioniq", dress_type="dress") == fiq / "fiq_top_200_val_dress.pt"
    with pytest.raises(FileNotFoundError, match="cirr_top_200_test1.pt: top-K file not found .alias"):
        get_top_k_path("BLIP_stageI_b512_2e-5_cos10", "cirr", cirr_test=True, models_root=models)
    with pytest.raises(FileNotFoundError, match="fiq_top_200_val_shirt.pt"):
        get_top_k_path(raw, "fashioniq", dress_type="shirt")
    run = models / "stage1" / "CIRR" / "saved_models"
    run.mkdir(parents=True)
    (run / "blip_mean.pt").write_bytes(b"x")
    assert get_model_path(models / "stage1" / "CIRR", "cirr") == run / "blip_mean.pt"
    with pytest.raises(FileNotFoundError, match="saved_models/blip.pt"):
        get_model_path(models / "stage1" / "CIRR", "fashioniq")


@pytest.mark.parametrize("k", [1, 7, 30])
def test_rerank_invariants(k):
    torch.manual_seed(k)
    ranking = torch.stack([torch.randperm(30) for _ in range(5)])
    scores = torch.randint(0, 4, (5, k)).float()  # many ties
    result = rerank_topk(ranking, scores)
    assert torch.equal(result[:, k:], ranking[:, k:])
    for row in range(5):
        assert set(result[row, :k].tolist()) == set(ranking[row, :k].tolist())
        position = {item: j for j, item in enumerate(ranking[row, :k].tolist())}
        reordered = [(-scores[row, position[item]].item(), position[item]) for item in result[row, :k].tolist()]
        assert reordered == sorted(reordered)  # descending score, ties in stage-1 order
    if k == 30:
        assert torch.equal(result, ranking.gather(1, scores.argsort(dim=1, descending=True, stable=True)))


def test_stage2_recall_at_k_equals_stage1():
    torch.manual_seed(0)
    labels = torch.zeros(20, 10, dtype=torch.bool)
    labels[torch.arange(12), torch.randint(0, 10, (12,))] = True
    for _ in range(3):
        reordered = permute_labels(labels, torch.randn(20, 10))
        assert recall_from_labels(reordered, 10) == recall_from_labels(labels, 10) == 60.0
    assert recall_from_labels(labels[:, :1], 1) == 100.0 * labels[:, 0].sum().item() / 20


def test_stage2_cirr_metrics_hand_built():
    labels = torch.tensor([[False, True, False], [True, False, False], [False, False, False]])
    scores = torch.tensor([[0.0, 1.0, 0.5], [0.0, 1.0, 2.0], [3.0, 2.0, 1.0]])  # row 0: target to the front
    group_labels = torch.tensor([[False, True, False, False, False]] * 3)
    group_scores = torch.tensor([[0.0, 5.0, 1, 1, 1], [9.0, 5.0, 1, 1, 1], [0.0, 1.0, 1, 1, 1]])
    reordered = permute_labels(labels, scores)
    assert reordered.tolist()[:2] == [[True, False, False], [False, False, True]]
    metrics = stage2_cirr_metrics(reordered, group_labels, group_scores)
    assert metrics["recall_at1"] == pytest.approx(100 / 3)
    assert metrics["recall_at5"] == metrics["recall_at50"] == pytest.approx(200 / 3)
    # row 2: tie of 1.0 among members 1..4 keeps member order, so the target (member 1) is first
    assert metrics["group_recall_at1"] == pytest.approx(200 / 3)
    assert metrics["group_recall_at2"] == pytest.approx(100.0)


def test_figure8_statistics_hand_built():
    stage1 = torch.zeros(4, 5, dtype=torch.bool)
    stage2 = torch.zeros(4, 5, dtype=torch.bool)
    for row, (r1, r2) in enumerate([(0, 0), (3, 1), (3, 2)]):
        stage1[row, r1], stage2[row, r2] = True, True
    stats = delta_stats(stage1, stage2, 5)
    assert stats["counts"] == [1, 0, 0, 2, 0]
    assert stats["deltas"] == [0.0, 0.0, 0.0, 1.5, 0.0]
    assert stats["mean_r1"] == 2.0 and stats["mean_r2"] == 1.0 and stats["shift"] == 1.0
    assert stats["queries_in_top_k"] == 3
    moved = stage2.clone()
    moved[3, 0] = True  # a positive where stage 1 has none
    with pytest.raises(ValueError, match="rows with a target"):
        delta_stats(stage1, moved, 5)
    with pytest.raises(ValueError, match="bool"):
        delta_stats(stage1.float(), stage2, 5)


def test_stage2_init_duplicates_keys_and_reports_only_fresh_layers(tmp_path):
    vit = tiny_vit_config()
    med = tiny_med_config(60, vit.width, num_layers=4)
    path = write_tiny_blip_checkpoint(tmp_path / "model_base.pth", vit=vit, med=med, layout="pretrain")
    model = CirStage2(vit, med, 32, enc_token_id=59, merge_start_layer=2)
    report = init_stage2(model, path)
    assert set(report.missing) == {"cls_head.0.weight", "cls_head.0.bias", "cls_head.2.weight", "cls_head.2.bias",
                                   *(f"text_encoder.encoder.layer.{i}.crossattention.output.merge_layer.{p}"
                                     for i in (2, 3) for p in ("weight", "bias"))}
    source = torch.load(path, weights_only=True)["model"]
    state = model.state_dict()
    layer = "text_encoder.encoder.layer.1."
    for twin in ("self0", "self1"):
        for kind in ("attention", "crossattention"):
            assert torch.equal(state[f"{layer}{kind}.{twin}.query.weight"], source[f"{layer}{kind}.self.query.weight"])
    for twin in ("LayerNormA", "LayerNormB"):
        assert torch.equal(state[f"{layer}crossattention.output.{twin}.weight"],
                           source[f"{layer}crossattention.output.LayerNorm.weight"])
    assert torch.equal(state[f"{layer}attention.output.dense1.bias"], source[f"{layer}attention.output.dense.bias"])
    assert torch.equal(state[f"{layer}intermediate.dense.weight"], source[f"{layer}intermediate.dense.weight"])
    assert "text_proj.weight" in report.unexpected


def test_stage_checkpoints_are_not_interchangeable(tmp_path):
    vit = tiny_vit_config()
    med = tiny_med_config(60, vit.width)
    stage1 = CirStage1(vit, med, 32, enc_token_id=59, embed_dim=16)
    stage2 = CirStage2(vit, med, 32, enc_token_id=59, merge_start_layer=1)
    first = save_model("blip_mean", 3, stage1, tmp_path / "s1", key="BLIP_Retrieval")
    second = save_model("blip_mean", 4, stage2, tmp_path / "s2", key="BLIP_NLVR")
    assert load_stage(stage1, first, 1) == 3 and load_stage(stage2, second, 2) == 4
    with pytest.raises(CheckpointError, match="s2/saved_models/blip_mean.pt: is a stage-2 checkpoint"):
        load_stage(stage1, second, 1)
    with pytest.raises(CheckpointError, match="s1/saved_models/blip_mean.pt: is a stage-1 checkpoint"):
        load_stage(stage2, first, 2)


def test_gradient_accumulation_really_accumulates():
    from torch.utils.data import DataLoader

    from common.runtime import grad_scaler
    from common.training.experiment import ExperimentTracker
    from common.training.loop import train_one_epoch

    weight = torch.nn.Parameter(torch.tensor(0.0))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    loader = DataLoader(torch.tensor([1.0, 2.0, 3.0, 4.0]), batch_size=1, shuffle=False)
    steps = []
    optimizer.register_step_post_hook(lambda *_: steps.append(weight.item()))
    train_one_epoch(loader, lambda x: (weight * x.sum(), {}, 1), optimizer, grad_scaler(torch.device("cpu")), 0,
                    torch.device("cpu"), ExperimentTracker(None, None, "test"), "test", accumulation=2)
    assert steps == [-1.5, -5.0]  # mean gradient of batches (1, 2), then of (3, 4)
