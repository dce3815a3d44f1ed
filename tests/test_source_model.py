"""The demo's source retrieval model: ITC training on clean synthetic COCO, BLIP's retrieval file layout, and
image-to-text retrieval above chance on scenes it never saw."""
import pytest
import torch

import demo
from common.blip import BlipItc, BlipRetrieval, MedConfig, build_blip_tokenizer, load_blip_checkpoint, tokenize
from common.blip.tiny import write_tiny_vocab
from common.metrics.retrieval import itm_eval
from common.synthetic.scenes import describe, vocabulary
from common.synthetic.source_model import QUEUE_SIZE, TEXT_LENGTH, load_clean_split, train_tiny_blip_itc
from common.synthetic.writers import read_scenes, write_karpathy

TRAIN_IMAGES, EVAL_IMAGES, STEPS, BATCH = 400, 50, 200, 32
QUEUES = ("idx_queue", "image_queue", "ptr_queue", "text_queue")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A source model trained at the demo's sizes (one intra-op thread: fastest for tiny models on 2 cores) on
    clean seed-1 COCO, holding out the scenes of a clean seed-0 evaluation set."""
    root = tmp_path_factory.mktemp("source_model")
    write_karpathy(root / "eval", "coco", EVAL_IMAGES, seed=0)
    write_karpathy(root / "train", "coco", TRAIN_IMAGES, seed=1)
    vocab = write_tiny_vocab(root / "tokenizer", extra_words=vocabulary())
    med = MedConfig(vocab_size=len(vocab.read_text().splitlines()) + 2, encoder_width=demo.DEMO_VIT.width,
                    **demo.DEMO_MED)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        stats = train_tiny_blip_itc(root / "train", root / "model.pth", vit=demo.DEMO_VIT, med=med,
                                    tokenizer_dir=root / "tokenizer", image_size=demo.DEMO_IMAGE_SIZE,
                                    embed_dim=demo.DEMO_EMBED_DIM, held_out=root / "eval", steps=STEPS,
                                    batch_size=BATCH, seed=0)
    finally:
        torch.set_num_threads(threads)
    return {"root": root, "med": med, "stats": stats, "state": torch.load(root / "model.pth")["model"]}


def make_model(cls, med, **kwargs):
    return cls(demo.DEMO_VIT, med, demo.DEMO_IMAGE_SIZE, embed_dim=demo.DEMO_EMBED_DIM, **kwargs)


def test_training_lowers_the_contrastive_loss(trained):
    stats = trained["stats"]
    assert stats["steps"] == STEPS and stats["texts"] == 5 * stats["images"]
    assert stats["loss_first"] > 3.0  # ln(32) = 3.47 for uniform predictions; a random start is about there
    assert stats["loss_last"] < stats["loss_first"] - 1.5


def test_scenes_of_the_held_out_set_are_not_trained_on(trained):
    root = trained["root"]
    eval_scenes = set(read_scenes(root / "eval" / "coco").values())
    train_scenes = list(read_scenes(root / "train" / "coco").values())
    shared = [scene for scene in train_scenes if scene in eval_scenes]
    images, texts, img2txt = load_clean_split(root / "train", "coco", demo.DEMO_IMAGE_SIZE, held_out=root / "eval")
    assert shared, "the two splits share no scene, so the held-out filter is not exercised"
    assert len(images) == trained["stats"]["images"] == TRAIN_IMAGES - len(shared)
    assert len(texts) == 5 * len(images) and img2txt[-1] == list(range(len(texts) - 5, len(texts)))
    assert not any(describe(scene) in texts for scene in shared)
    assert sum(describe(scene) in texts for scene in train_scenes) == len(images)


def test_file_has_the_retrieval_layout_and_loads_into_blip_itc(trained):
    state, med = trained["state"], trained["med"]
    assert set(state) == set(make_model(BlipRetrieval, med, queue_size=QUEUE_SIZE).state_dict())
    for key in ("visual_encoder.blocks.0.attn.qkv.weight", "text_encoder.encoder.layer.1.output.dense.weight",
                "text_proj.weight"):
        prefix, rest = key.split(".", 1)
        assert torch.equal(state[f"{prefix}_m.{rest}"], state[key])
    assert 0.001 <= state["temp"].item() <= 0.5

    itc = make_model(BlipItc, med)
    report = load_blip_checkpoint(itc, trained["root"] / "model.pth")
    assert report.missing == () and report.dropped_mismatch == ()
    assert report.unexpected == ("itm_head.bias", "itm_head.weight", "temp")
    assert report.ignored == tuple(sorted(key for key in state if key.split(".")[0].endswith("_m") or key in QUEUES))
    assert set(report.loaded) == set(itc.state_dict())
    assert torch.equal(itc.text_proj.weight, state["text_proj.weight"])

    full = load_blip_checkpoint(make_model(BlipRetrieval, med, queue_size=QUEUE_SIZE), trained["root"] / "model.pth")
    assert full.missing == full.unexpected == full.ignored == ()


def test_image_to_text_retrieval_beats_chance_on_held_out_scenes(trained):
    root = trained["root"]
    model = make_model(BlipItc, trained["med"])
    load_blip_checkpoint(model, root / "model.pth")
    images, texts, img2txt = load_clean_split(root / "eval", "coco", demo.DEMO_IMAGE_SIZE)
    input_ids, attention_mask = tokenize(build_blip_tokenizer(root / "tokenizer"), texts, padding="max_length",
                                         max_length=TEXT_LENGTH, truncation=True)
    with torch.no_grad():
        scores = model.eval().encode_image(images) @ model.encode_text(input_ids, attention_mask).t()
    txt2img = [[image] for image, text_ids in enumerate(img2txt) for _ in text_ids]
    metrics = itm_eval(scores, scores.t(), img2txt, txt2img)
    chance_r1 = 100.0 * sum(len(text_ids) / len(texts) for text_ids in img2txt) / len(img2txt)  # 5 / 250 = 2 %
    assert chance_r1 == pytest.approx(2.0)
    assert metrics["txt_r1"] >= 5 * chance_r1
