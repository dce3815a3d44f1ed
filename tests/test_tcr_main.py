"""tcr/main.py end to end on synthetic COCO-format data with a tiny BLIP, and the stream/evaluation pieces."""
import copy
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tcr.main as tcr_main
from common.blip.config import MedConfig, ViTConfig
from common.blip.tiny import write_tiny_blip_checkpoint, write_tiny_vocab
from common.io import atomic_write_json
from common.synthetic.scenes import vocabulary
from common.synthetic.writers import write_karpathy
from tcr.config import dump_config
from tcr.evaluation import UPSTREAM_KEYS, evaluate
from tcr.stream import run_stream
from tcr.make_corruptions import build_parser as make_corruptions_parser
from tcr.method import build_adapter, build_optimizer

REPO = Path(__file__).resolve().parents[1]
VIT = ViTConfig(patch_size=8, width=32, depth=2, heads=2)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Synthetic COCO (40 images, Gaussian-noise image queries, typo captions) and a tiny BLIP; returns a dict
    with the two config paths and the common flags. Batches of 13 split unevenly over 2 ranks (7 + 6), and the
    last batch (1 query) leaves rank 1 empty."""
    root = tmp_path_factory.mktemp("tcr")
    data = write_karpathy(root / "data", "coco", 40, seed=1, image_shift=("gaussian_noise", 5),
                          caption_shift=("RandomCharAug_swap", 5))
    weights = root / "weights"
    write_tiny_vocab(weights / "tokenizer", extra_words=vocabulary())
    vocab_size = len((weights / "tokenizer" / "vocab.txt").read_text().splitlines()) + 2
    med = MedConfig(vocab_size=vocab_size, encoder_width=VIT.width, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    atomic_write_json(dataclasses.asdict(med), weights / "med_config.json")
    atomic_write_json(dataclasses.asdict(VIT), weights / "vit_config.json")
    write_tiny_blip_checkpoint(weights / "model_base.pth", image_size=32, vit=VIT, med=med, seed=0)
    base = {"dataset": "coco", "pretrained": str(weights / "model_base.pth"), "backbone": "blip", "vit": "base",
            "vit_ckpt_layer": 0, "vit_grad_ckpt": False, "image_size": 32, "batch_size_image": 16,
            "batch_size_text": 16, "batch_size_total": 13}
    i2t = dump_config({"image_root": data["shifted_image_root"], "ann_root": data["ann_root"], **base},
                      root / "i2t.yaml")
    t2i = dump_config({"image_root": data["image_root"], "ann_root": data["shifted_ann_root"], **base},
                      root / "t2i.yaml")
    flags = ["--device", "cpu", "--num_workers", "0", "--vit_config", str(weights / "vit_config.json"),
             "--med_config", str(weights / "med_config.json"), "--tokenizer", str(weights / "tokenizer")]
    return {"root": root, "i2t": i2t, "t2i": t2i, "flags": flags}


def spy_backbone(monkeypatch):
    """Record the backbone main() builds and a copy of its weights at build time."""
    seen = {}
    build = tcr_main.build_backbone

    def recording_build(*args, **kwargs):
        backbone = build(*args, **kwargs)
        seen["backbone"], seen["initial"] = backbone, copy.deepcopy(backbone.state_dict())
        return backbone

    monkeypatch.setattr(tcr_main, "build_backbone", recording_build)
    return seen


def changed_keys(seen) -> set[str]:
    after = seen["backbone"].state_dict()
    return {key for key, value in seen["initial"].items() if not torch.equal(value, after[key])}


def test_defaults_are_the_original_flags():
    args = tcr_main.parse_args([])
    assert args.config == "./configs/QS/i2t_large/flickr_image_c/Flickr30K_IP_gaussian_noise_5.yaml"
    assert (args.output_dir, args.device, args.seed) == ("output/Retrieval_flickr", "cuda", 42)
    assert (args.tta_steps, args.con_ratio, args.temperature, args.t, args.method) == (3, 0.3, 0.02, 0.1, "tcr")
    assert args.retrieval is None and args.ddp_grad == "global" and args.queue_updates == 10
    assert tcr_main.parse_args(["--retrieval", "None"]).retrieval is None
    assert tcr_main.learning_rate("t2i", "blip") == (3e-5, 1e-4)
    assert tcr_main.learning_rate("i2t", "blip") == tcr_main.learning_rate("t2i", "clip") == (3e-4, 1e-4)


@pytest.mark.parametrize("build", [tcr_main.build_parser, make_corruptions_parser])
def test_help_shows_every_default_and_cites_no_spec(build):
    parser = build()
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.option_strings and action.dest != "help" and not action.required:
            assert "default" in formatter._get_help_string(action).lower(), action.dest
    text = " ".join(parser.format_help().split())
    assert "§" not in text
    if build is tcr_main.build_parser:
        for default in ("--tta_steps TTA_STEPS gradient steps per query batch (default: 3)",
                        "(default: 0.3)", "(default: 0.02)", "scale of the uniformity loss (default: 0.1)",
                        "(default: tcr)", "(default: global)"):
            assert default in text


def test_unknown_method_or_direction_lists_the_valid_ones(capsys):
    with pytest.raises(SystemExit):
        tcr_main.parse_args(["--method", "foo"])
    assert "valid methods: tcr, tent, eata, sar, read, shot, deyo" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tcr_main.parse_args(["--retrieval", "x2y"])
    assert "valid: i2t, t2i" in capsys.readouterr().err


def test_i2t_tcr_adapts_only_visual_layernorms_and_writes_outputs(setup, monkeypatch, tmp_path):
    seen = spy_backbone(monkeypatch)
    out = tmp_path / "run"
    record = tcr_main.main(["--config", str(setup["i2t"]), "--retrieval", "i2t", "--method", "tcr",
                            "--output_dir", str(out), *setup["flags"]])
    changed = changed_keys(seen)
    _, names = seen["backbone"].query_norm_params("i2t")
    visual_ln = {f"model.visual_encoder.{name}" for name in names}
    assert changed and changed <= visual_ln
    assert len(visual_ln) == 2 * (2 * VIT.depth + 1)

    lines = (out / "evaluate.txt").read_text().splitlines()
    assert len(lines) == 1
    logged = json.loads(lines[0])
    assert set(UPSTREAM_KEYS) <= set(logged) and logged == record
    assert logged["img_r1"] is None and logged["r_sum"] is None
    result = json.loads((out / "result.json").read_text())
    assert result["t2i"] is None and result["i2t"]["r1"] == logged["txt_r1"]
    assert result["method"] == "tcr" and result["config"] == str(setup["i2t"])
    assert set(result["stats"]) == {"lr", "loss_total", "loss_REM", "loss_UNI", "loss_EMG"}
    assert (out / "config.yaml").read_text() == Path(setup["i2t"]).read_text()


def test_adaptation_changes_the_metrics_of_the_source_model(setup, monkeypatch, tmp_path):
    """The tiny stream is short (4 batches), so the upstream rate barely moves a ranking: a larger one shows that
    the adapted LayerNorms reach the scores."""
    common = ["--config", str(setup["i2t"]), *setup["flags"]]
    plain = tcr_main.main([*common, "--retrieval", "None", "--output_dir", str(tmp_path / "plain")])
    monkeypatch.setattr(tcr_main, "learning_rate", lambda retrieval, backbone: (1e-2, 1e-4))
    adapted = tcr_main.main([*common, "--retrieval", "i2t", "--output_dir", str(tmp_path / "tcr")])
    metrics = [f"txt_{name}" for name in ("r1", "r5", "r10", "r_mean", "map")]
    assert [adapted[key] for key in metrics] != [plain[key] for key in metrics]


def test_t2i_adapts_only_text_layernorms(setup, monkeypatch, tmp_path):
    seen = spy_backbone(monkeypatch)
    record = tcr_main.main(["--config", str(setup["t2i"]), "--retrieval", "t2i", "--method", "tent",
                            "--output_dir", str(tmp_path), *setup["flags"]])
    changed = changed_keys(seen)
    assert changed and all(key.startswith("model.text_encoder.") and "LayerNorm" in key for key in changed)
    assert not any("crossattention" in key for key in changed)  # text mode never reaches cross-attention
    assert record["txt_r1"] is None and record["img_r1"] is not None


def test_retrieval_none_changes_no_parameter_and_evaluates_both_directions(setup, monkeypatch, tmp_path, capsys):
    seen = spy_backbone(monkeypatch)
    record = tcr_main.main(["--config", str(setup["i2t"]), "--retrieval", "None", "--output_dir", str(tmp_path),
                            *setup["flags"]])
    assert changed_keys(seen) == set()
    assert all(record[key] is not None for key in UPSTREAM_KEYS)
    assert record["r_sum"] == pytest.approx(sum(record[f"{p}_r{k}"] for p in ("txt", "img") for k in (1, 5, 10)))
    printed = capsys.readouterr().out
    assert "Not using distributed mode" in printed and "Modality gap" in printed and "only_visual" not in printed


@pytest.mark.slow
def test_two_gloo_processes_give_the_metrics_of_one(setup, tmp_path):
    common = ["--config", str(setup["i2t"]), "--retrieval", "i2t", "--method", "tcr", *setup["flags"]]
    one = tcr_main.main([*common, "--output_dir", str(tmp_path / "one")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLR_NO_PROGRESS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29531", str(REPO / "tcr" / "main.py"), *common, "--output_dir", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=240, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = (tmp_path / "two" / "evaluate.txt").read_text().splitlines()
    assert len(lines) == 1
    two = json.loads(lines[0])
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert {key: two[key] for key in UPSTREAM_KEYS} == {key: one[key] for key in UPSTREAM_KEYS}
    stats_one = json.loads((tmp_path / "one" / "result.json").read_text())["stats"]
    stats_two = json.loads((tmp_path / "two" / "result.json").read_text())["stats"]
    assert stats_two == pytest.approx(stats_one, abs=1e-5)


def test_hand_built_recall_with_several_captions_per_image():
    img2txt, txt2img = [[0, 1], [2, 3]], [[0], [0], [1], [1]]
    i2t = torch.tensor([[0.9, 0.1, 0.8, 0.2], [0.5, 0.6, 0.4, 0.3]])
    t2i = torch.tensor([[0.9, 0.5], [0.1, 0.6], [0.8, 0.4], [0.2, 0.3]])
    both = evaluate(None, i2t, img2txt, txt2img)
    expected = {"txt_r1": 50.0, "txt_r5": 100.0, "txt_r10": 100.0, "txt_r_mean": 83.33, "txt_map": 58.33,
                "img_r1": 50.0, "img_r5": 100.0, "img_r10": 100.0, "img_r_mean": 83.33, "img_map": 75.0,
                "r_mean": 83.33, "r_sum": 500.0}
    assert both == expected
    text_queries = evaluate("t2i", t2i, img2txt, txt2img)
    assert {k: v for k, v in text_queries.items() if v is not None} == {k: expected[k] for k in expected
                                                                         if k.startswith("img_")}
    image_queries = evaluate("i2t", i2t, img2txt, txt2img)
    assert image_queries["txt_map"] == 58.33 and image_queries["img_r1"] is None


class PairedQueries(torch.utils.data.Dataset):
    """Query i is the feature of gallery item 2i (its first caption), before a trainable scale."""

    def __init__(self, gallery: torch.Tensor):
        self.gallery = gallery

    def __len__(self) -> int:
        return len(self.gallery) // 2

    def __getitem__(self, index):
        return self.gallery[2 * index], index


def test_oracle_queries_reach_recall_100_through_the_tcr_stream():
    torch.manual_seed(0)
    gallery = F.normalize(torch.randn(22, 8), dim=1)
    scale = nn.Parameter(torch.ones(8))
    optimizer = build_optimizer("tcr", [scale], lr=0.0, weight_decay=0.0)
    adapter = build_adapter("tcr", lambda x: F.normalize(x * scale, dim=-1), gallery, [scale], optimizer,
                            queue_size=4)
    scores = run_stream(adapter, PairedQueries(gallery), len(gallery), batch_size=4, device=torch.device("cpu"))
    img2txt = [[2 * i, 2 * i + 1] for i in range(11)]
    txt2img = [[i // 2] for i in range(22)]
    assert (scores > -100).all()
    result = evaluate("i2t", scores, img2txt, txt2img)
    assert result["txt_r1"] == 100.0
    assert len(adapter.queue) == 2  # ⌊0.3·4⌋ + ⌊0.3·4⌋ + ⌊0.3·3⌋ pairs
