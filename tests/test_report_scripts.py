"""``--report`` on the evaluation scripts, end to end on tiny synthetic data: the page's ranks agree with the
metrics the same run printed (the report reads the evaluation's own scores), and ``--report`` naming a file fails
before any work."""
import dataclasses
import re

import numpy as np
import pytest
import torch

import tcr.main as tcr_main
from bi_blip4cir import validate
from common.blip.config import MedConfig, ViTConfig
from common.blip.tiny import write_tiny_blip_checkpoint, write_tiny_blip_files, write_tiny_vocab
from common.clip import write_tiny_clip
from common.io import atomic_write_json
from common.report.args import ReportDirError
from common.synthetic.scenes import vocabulary
from common.synthetic.textures import write_descriptions, write_dtd
from common.synthetic.writers import write_cirr, write_karpathy
from ratta import after_extract, pre_extract
from ratta.vector_db import db_path, save_db
from tcr.config import dump_config
from test_report_pages import parse

VIT = ViTConfig(patch_size=8, width=32, depth=1, heads=2)


pytestmark = pytest.mark.usefixtures("one_thread")


def count_titles(entries: list[dict], pattern: str) -> int:
    """How many entry headings match ``pattern``."""
    return sum(bool(re.search(pattern, entry["title"])) for entry in entries)


@pytest.fixture(scope="module")
def cirr(tmp_path_factory) -> list[str]:
    """Synthetic CIRR (9 val queries) and a tiny BLIP: the flags that point validate.py at them."""
    root = tmp_path_factory.mktemp("cirr_report")
    write_cirr(root / "data", {"train": 1, "val": 3, "test1": 9}, 3, seed=0)
    blip = write_tiny_blip_files(root / "weights", VIT, extra_words=vocabulary())
    return ["--dataset", "CIRR", "--data-root", str(root / "data"), *blip.flags(), "--num-workers", "0",
            "--device", "cpu", "--combining-function", "sum"]


def test_bi_blip4cir_cirr_report_agrees_with_the_metrics(cirr, tmp_path):
    """Every val query shown: the share with target rank 1 is R@1, with subset rank 1 R_s@1."""
    metrics = validate.main([*cirr, "--metrics-json",
                             str(tmp_path / "m.json"), "--report", str(tmp_path / "report"),
                             "--report-queries", "100", "--report-select", "random", "--report-top-k", "3"])
    entries = parse(tmp_path / "report" / "index.html")
    assert len(entries) == 9 and (tmp_path / "report" / "grid.png").is_file()
    assert 100 * count_titles(entries, r"target rank 1 ") / 9 == pytest.approx(metrics["recall_at1"])
    assert 100 * count_titles(entries, r"subset rank 1$") / 9 == pytest.approx(metrics["group_recall_at1"])
    for entry in entries:
        assert len([tile for tile in entry["tiles"] if "hit" in tile["classes"]]) == 2  # top-k row and subset row
        assert entry["query"]["alt"].endswith(".png") and entry["query"]["text"]


def test_report_dir_that_is_a_file_fails_before_any_work(cirr, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("x")
    with pytest.raises(ReportDirError, match="is a file, expected a folder"):
        validate.main([*cirr, "--metrics-json", str(tmp_path / "m.json"), "--report", str(taken)])
    assert not (tmp_path / "m.json").exists()


@pytest.fixture(scope="module")
def tcr_setup(tmp_path_factory):
    """Synthetic COCO (24 images, noisy image queries) and a tiny BLIP."""
    root = tmp_path_factory.mktemp("tcr_report")
    data = write_karpathy(root / "data", "coco", 24, seed=1, image_shift=("gaussian_noise", 5))
    weights = root / "weights"
    write_tiny_vocab(weights / "tokenizer", extra_words=vocabulary())
    vocab_size = len((weights / "tokenizer" / "vocab.txt").read_text().splitlines()) + 2
    med = MedConfig(vocab_size=vocab_size, encoder_width=VIT.width, hidden_size=32, num_hidden_layers=1,
                    num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    atomic_write_json(dataclasses.asdict(med), weights / "med_config.json")
    atomic_write_json(dataclasses.asdict(VIT), weights / "vit_config.json")
    write_tiny_blip_checkpoint(weights / "model_base.pth", image_size=32, vit=VIT, med=med, seed=0)
    config = dump_config({"image_root": data["shifted_image_root"], "ann_root": data["ann_root"], "dataset": "coco",
                          "pretrained": str(weights / "model_base.pth"), "backbone": "blip", "vit": "base",
                          "vit_ckpt_layer": 0, "vit_grad_ckpt": False, "image_size": 32, "batch_size_image": 8,
                          "batch_size_text": 16, "batch_size_total": 8}, root / "i2t.yaml")
    flags = ["--config", str(config), "--device", "cpu", "--num_workers", "0", "--vit_config",
             str(weights / "vit_config.json"), "--med_config", str(weights / "med_config.json"), "--tokenizer",
             str(weights / "tokenizer")]
    return {"root": root, "flags": flags}


def test_tcr_report_before_is_the_source_model_and_after_the_adapted_one(tcr_setup, tmp_path, monkeypatch):
    """With every query shown, the 'before' ranks give the source model's i2t R@1/5/10 (a --retrieval None run)
    and the 'after' ranks the adapted R@1/5/10 of the same run. A larger rate than upstream's makes the short
    stream move the rankings (as in test_tcr_main)."""
    source = tcr_main.main([*tcr_setup["flags"], "--retrieval", "None", "--output_dir", str(tmp_path / "plain")])
    monkeypatch.setattr(tcr_main, "learning_rate", lambda retrieval, backbone: (1e-2, 1e-4))
    adapted = tcr_main.main([*tcr_setup["flags"], "--retrieval", "i2t", "--method", "tcr", "--output_dir",
                             str(tmp_path / "tcr"), "--report", str(tmp_path / "report"), "--report-queries", "100"])
    entries = parse(tmp_path / "report" / "index.html")
    ranks = [tuple(map(int, re.search(r"rank #(\d+) → #(\d+)$", entry["title"]).groups())) for entry in entries]
    assert len(ranks) == 24 and any(before != after for before, after in ranks)
    for k in (1, 5, 10):
        assert 100 * sum(before <= k for before, _ in ranks) / 24 == pytest.approx(source[f"txt_r{k}"])
        assert 100 * sum(after <= k for _, after in ranks) / 24 == pytest.approx(adapted[f"txt_r{k}"])
    assert all(entry["query"]["alt"] and entry["tiles"][0]["text"] for entry in entries)  # image → captions


def test_tcr_report_needs_a_direction(tcr_setup, tmp_path, capsys):
    with pytest.raises(SystemExit):
        tcr_main.parse_args([*tcr_setup["flags"], "--report", str(tmp_path / "report")])
    assert "--report shows the queries before and after adaptation" in capsys.readouterr().err


def test_ratta_report_shows_test_images_and_retrieved_db_images(tmp_path):
    data = tmp_path / "data"
    write_dtd(data, test_per_class=1, train_per_class=1, classes=tuple(range(47)))
    weights = write_tiny_clip(tmp_path / "clip.pt", kind="vit")
    write_descriptions(tmp_path / "descriptions" / "CuPL_prompts_dtd.json")
    model = ["--net_name", "test/tiny", "--weights", str(weights), "--device", "cpu"]
    pre_extract.run(pre_extract.build_parser(False).parse_args(
        ["--root", str(data), "--dataset", "dtd", "--augmentation_size", "4", "--save_dir", str(tmp_path / "emb"),
         "--num_workers", "0", *model]), imagenet=False)
    images = sorted(path.relative_to(data) for path in data.rglob("*.jpg"))[:30]
    rows = np.random.default_rng(0).normal(size=(len(images), 16)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    save_db(db_path(tmp_path / "db", "LAION2B", "dtd", "test/tiny"), rows, [str(path) for path in images],
            "test/tiny", None)
    argv = ["--db_root", str(tmp_path / "db"), "--tst_embedding_root", str(tmp_path / "emb"), "--dataset", "dtd",
            "--seed", "0", "--augmentation_size", "4", "--output_dir", str(tmp_path / "logs"), "--descriptions_dir",
            str(tmp_path / "descriptions"), "--top_k_s", "5", "--min_desc", "1", *model, "--report-queries", "6",
            "--report_root", str(data), "--report_db_images", str(data)]
    parser = after_extract.build_parser(False)
    after_extract.run(parser.parse_args([*argv, "--report", str(tmp_path / "report")]), imagenet=False)
    entries = parse(tmp_path / "report" / "index.html")
    assert len(entries) == 6
    for entry in entries:
        assert entry["query"]["alt"].endswith(".jpg") and "true class: " in entry["query"]["text"]
        class_tiles = [tile for tile in entry["tiles"] if tile["alt"] is None]
        db_tiles = [tile for tile in entry["tiles"] if tile["alt"] is not None]
        assert sum("hit" in tile["classes"] for tile in class_tiles) == 2  # zero-shot and adapted rows
        assert db_tiles and all(tile["row"].startswith("DB images retrieved") for tile in db_tiles)
        assert {tile["alt"] for tile in db_tiles} <= {path.name for path in images}
    after_extract.run(parser.parse_args([*argv, "--report", str(tmp_path / "loop"), "--impl", "loop"]),
                      imagenet=False)
    assert parse(tmp_path / "loop" / "index.html") == entries  # the per-sample port retrieves the same rows


def test_ratta_report_root_that_does_not_match_is_an_input_error(tmp_path):
    """A --report_root whose test set differs from the embeddings' is refused with both named."""
    from common.errors import InputError

    labels = torch.tensor([0, 1])
    data = tmp_path / "data"
    write_dtd(data, test_per_class=1, train_per_class=1, classes=tuple(range(47)))
    args = after_extract.build_parser(False).parse_args(["--db_root", "x", "--dataset", "dtd", "--seed", "0",
                                                         "--report_root", str(data)])
    with pytest.raises(InputError, match="does not match the 2 test embeddings"):
        after_extract.ordered_test_images(args, labels)


def test_rerank_stage2_report_agrees_with_the_saved_labels(tmp_path):
    """Stage 1 -> top-K -> stage 2 (one epoch each on tiny CIRR), then validate_stage2.py --report: each query's
    stage-1 and re-ranked target ranks are those of the top-K file's labels and of the re-ordered labels it saves,
    and the queries come by decreasing move."""
    from reranking_cir import stage1_train, stage2_train, validate as validate_stage1, validate_stage2
    from reranking_cir.topk import read_topk

    write_cirr(tmp_path / "data", {"train": 3, "val": 2, "test1": 9}, 3, seed=0)
    blip = write_tiny_blip_files(tmp_path / "weights", VIT, extra_words=vocabulary())
    args = ["--data-root", str(tmp_path / "data"), *blip.flags(), "--num-workers", "0", "--device", "cpu"]
    out = tmp_path / "out"
    stage1_train.main(["--dataset", "CIRR", *args, "--train", "--num-epochs", "1", "--batch-size", "3",
                       "--validation-frequency", "1", "--save-training", "--save-best", "--output-root", str(out),
                       "--blip-learning-rate", "1e-4"])
    stage1_run, = (out / "models").glob("CIR_Reranking_stageI_cirr_*")
    validate_stage1.main(["--dataset", "CIRR", *args, "--stage1-path", str(stage1_run), "--save-topk", "--k", "11",
                          "--metrics-json", str(out / "s1.json")])
    topk = stage1_run / "cirr_top_11_val.pt"
    stage2_train.main(["--dataset", "cirr", *args, "--train", "--num-epochs", "1", "--batch-size", "3",
                       "--validation-frequency", "1", "--save-training", "--output-root", str(out),
                       "--blip-model-path", str(stage1_run),
                       "--top-k-path", str(topk), "--K-value", "3"])
    stage2_run, = (out / "models").glob("CIR_Reranking_stageII_cirr_*")
    validate_stage2.main(["--dataset", "CIRR", *args, "--stage1-path", str(stage1_run), "--stage2-path",
                          str(stage2_run / "saved_models" / "blip_0.pt"), "--top-k-path", str(topk), "--k", "4",
                          "--save-labels", str(out / "labels.pt"), "--metrics-json", str(out / "s2.json"),
                          "--report", str(tmp_path / "report"), "--report-queries", "6", "--report-top-k", "3"])
    before_labels, after_labels = read_topk(topk).labels, torch.load(out / "labels.pt", weights_only=True)
    entries = parse(tmp_path / "report" / "index.html")
    moves = []
    for entry in entries:
        query, before, after = map(int, re.match(r"cirr query (\d+) · target #(\d+) → #(\d+)$",
                                                 entry["title"]).groups())
        assert before == int(before_labels[query].float().argmax()) + 1
        assert after == (int(after_labels[query].float().argmax()) + 1 if before <= 4 else before)
        moves.append(abs(before - after))
    assert len(entries) == 6 and moves == sorted(moves, reverse=True)
