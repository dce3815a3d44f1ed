"""TCR test-time adaptation for image-text retrieval, with the original command line.

    python -m torch.distributed.run --nproc_per_node 2 tcr/main.py --retrieval i2t --config CONFIG --method tcr
    python tcr/main.py --retrieval t2i --config QS/t2i/coco_text_c/annotation_OcrAug_4 --method tent --device cpu
    python tcr/main.py --config CONFIG                      # no --retrieval (or --retrieval None): no adaptation

Differences from the original: runs as one process on CPU or GPU as well as under torchrun, with the
same metrics for any process count (``--ddp_grad global``; ``local`` keeps upstream's unsynchronised multi-GPU
updates); ``--retrieval None`` disables adaptation; rank 0 alone writes one ``evaluate.txt`` line, with the
unused direction as null and the run's method/config added, plus ``result.json``; an empty L_REM set logs 0, not
NaN; images are resized to the backbone's input size (BLIP: the config's ``image_size``, 384 in every shipped
config); the scores kept for the baselines are cosines, not cosines/τ (same ranking); the model is built before
the datasets (their transform follows the backbone), so "Creating model" is logged first.
"""
from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path
from typing import Any

import torch

from common.args import HelpFormatter
from common.dist import cleanup, get_world_size, init_distributed, is_main_process
from common.io import atomic_write_json
from common.report.args import ReportOptions, add_report_args, report_options
from common.run_record import note_args, note_dataset, note_output
from common.runtime import run_main, seed_everything
from common.tta import train_only
from tcr.adapter import GRAD_SYNC_MODES
from tcr.config import dump_config, load_config
from tcr.data import build_tcr_datasets
from tcr.evaluation import DIRECTION_PREFIX, distribution_stats, evaluate
from tcr.method import METHODS, build_adapter, build_optimizer, check_method, method_temperature
from tcr.models import BackboneOptions, build_backbone, check_direction
from tcr.stream import encode_all, run_stream

NO_ADAPTATION = ("None", "none")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--config", default="./configs/QS/i2t_large/flickr_image_c/Flickr30K_IP_gaussian_noise_5.yaml",
                        help="YAML config file, or the name of an upstream config (e.g. QS/i2t/coco_image_c/"
                             "COCO_IP_fog_3)")
    parser.add_argument("--output_dir", default="output/Retrieval_flickr",
                        help="receives config.yaml, evaluate.txt (one JSON line per run) and result.json")
    parser.add_argument("--device", default="cuda", help="torch device (falls back to cpu without CUDA)")
    parser.add_argument("--seed", type=int, default=42, help="seeds random/numpy/torch with seed + rank; the query "
                                                             "order does not depend on it")
    parser.add_argument("--world_size", type=int, default=1, help="ignored: taken from torchrun's environment")
    parser.add_argument("--dist_url", default="env://", help="ignored: torchrun's env:// rendezvous is used")
    parser.add_argument("--distributed", type=bool, default=True, help="ignored: set by the launcher")
    parser.add_argument("--retrieval", type=str, default=None,
                        help="i2t (image queries, adapt the visual LayerNorms), t2i (text queries, adapt the text "
                             "LayerNorms); omitted or None: no adaptation, both directions evaluated")
    parser.add_argument("--tta_steps", type=int, default=3, help="gradient steps per query batch")
    parser.add_argument("--con_ratio", type=float, default=0.3, help="TCR: share of a batch pushed into the queue")
    parser.add_argument("--temperature", type=float, default=0.02,
                        help="TCR's τ; the baselines use the per-dataset value of the original code instead")
    parser.add_argument("--t", type=float, default=0.1, help="TCR: scale of the uniformity loss")
    parser.add_argument("--method", default="tcr", help=f"one of {', '.join(METHODS)}")

    ours = parser.add_argument_group("additions (defaults keep the original behaviour)")
    ours.add_argument("--data_root", default=None,
                      help="folder that plays upstream's ./dataset (default: ./dataset under the working directory)")
    ours.add_argument("--weights_root", default=None,
                      help="folder that plays upstream's ./weights (default: ./weights under the working directory)")
    ours.add_argument("--ddp_grad", default="global", choices=GRAD_SYNC_MODES,
                      help="global: average LayerNorm gradients over ranks (N processes = 1 process); local: "
                           "upstream's multi-GPU behaviour, rank r of W steps on the gradient of its own shard "
                           "(positions r, r+W, ... of each global batch, as upstream's DistributedSampler)")
    ours.add_argument("--queue_updates", type=int, default=10, help="TCR: batches whose pairs may enter the queue")
    ours.add_argument("--num_workers", type=int, default=1, help="data loader workers, as upstream")
    ours.add_argument("--vit_config", default=None,
                      help="BLIP ViT size overriding the config's vit: base, large, tiny or a JSON of ViTConfig "
                           "fields (default: the config's vit)")
    ours.add_argument("--med_config", default=None, help="BLIP MED config JSON (default: BLIP's med_config.json)")
    ours.add_argument("--tokenizer", default=None, help="BERT tokenizer folder or vocab.txt (default: "
                                                        "$BLIP_TOKENIZER_DIR, then the Hugging Face cache)")
    ours.add_argument("--clip_weights", default="ViT-B/16", help="CLIP model name or file for backbone: clip")
    ours.add_argument("--allow_download", "--allow-download", action="store_true",
                      help="allow fetching official weights")
    ours.add_argument("--trust_checkpoints", "--trust-checkpoints", action="store_true",
                      help="allow checkpoints that need weights_only=False")
    add_report_args(parser, select_note=" (by the rank after adaptation); with --report the source model also "
                                        "encodes the queries once before adapting, for the 'before' row")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_method(args.method)
        args.retrieval = None if args.retrieval in (None, *NO_ADAPTATION) else check_direction(args.retrieval)
    except ValueError as error:
        parser.error(str(error))
    if args.report is not None and args.retrieval is None:
        parser.error("--report shows the queries before and after adaptation: give --retrieval i2t or t2i")
    return args


def learning_rate(retrieval: str | None, backbone: str) -> tuple[float, float]:
    """Upstream's hard-coded (lr, weight decay): 3e-4 everywhere except BLIP text queries (3e-5)."""
    if retrieval == "i2t" or backbone in ("clip", "clip_reid"):
        return 3e-4, 1e-4
    return 3e-5, 1e-4


def duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds)))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    config = load_config(args.config, args.data_root, args.weights_root)
    requested = args.device if args.device != "cuda" or torch.cuda.is_available() else "cpu"
    info = init_distributed(requested)
    log = print if info.is_main else (lambda *a, **k: None)
    out = Path(args.output_dir)
    report = report_options(args)
    note_args(args, info.device, info.world_size)
    note_output(out)
    if info.is_main:
        dump_config(config, out / "config.yaml")
    if info.distributed:
        print(f"| distributed init (rank {info.rank}, word {info.world_size}): env://", flush=True)
    else:
        log("Not using distributed mode")
    seed_everything(args.seed + info.rank)
    temperature = method_temperature(args.method, config["dataset"], args.temperature)

    log("Creating model")
    options = BackboneOptions(vit_config=args.vit_config, med_config=args.med_config, tokenizer=args.tokenizer,
                              clip_weights=args.clip_weights, allow_download=args.allow_download,
                              trusted=args.trust_checkpoints)
    backbone = build_backbone(config, info.device, options)
    if backbone.source is not None:
        log(f"load checkpoint from {backbone.source}")
        log("missing keys:")
        log(backbone.missing_keys)
        if backbone.unexpected_keys:
            log(f"unexpected keys (not loaded): {backbone.unexpected_keys}")
    log("Creating retrieval dataset")
    images, texts = build_tcr_datasets(config, backbone.transform)
    note_dataset(config["dataset"], "test", images=len(images), texts=len(texts))

    log("Start training")
    start = time.time()
    if args.retrieval is None:
        result, stats = plain_evaluation(backbone, images, texts, config, info.device, args.num_workers, log)
        log("Test Result:", result)
    else:
        result, stats = adapt_and_evaluate(args, backbone, images, texts, config, info.device, temperature, log,
                                           report)
        prefix = DIRECTION_PREFIX[args.retrieval]
        log("Test Result:", {key: value for key, value in result.items() if key.startswith(prefix)})

    record = {**result, "method": args.method if args.retrieval else None, "retrieval": args.retrieval,
              "config": str(args.config), "dataset": config["dataset"], "backbone": config["backbone"],
              "seed": args.seed, "world_size": get_world_size()}
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "evaluate.txt", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        atomic_write_json(result_json(record, stats, args, temperature), out / "result.json", indent=2)
    log("Training time:", duration(time.time() - start))
    cleanup()
    return record


def plain_evaluation(backbone, images, texts, config, device, num_workers, log) -> tuple[dict, dict]:
    """No adaptation: encode both sides with the source model and evaluate both directions."""
    log("Computing features for evaluation...")
    start = time.time()
    image_features = encode_all(backbone, images, "image", device, config["batch_size_image"], num_workers)
    text_features = encode_all(backbone, texts, "text", device, config["batch_size_text"], num_workers)
    scores = (image_features.float() @ text_features.float().t()).cpu()
    stats = distribution_stats(image_features, text_features)
    log("Modality gap", stats["modality_gap"])
    log(f"Image Intra Uniformity: {stats['image_intra']:.3f}")
    log(f"Text Intra Uniformity: {stats['text_intra']:.3f}")
    log(f"Inter Sim: {stats['inter_sim']:.3f}")
    log(f"Evaluation time {duration(time.time() - start)}")
    return evaluate(None, scores, images.img2txt, images.txt2img), stats


def adapt_and_evaluate(args, backbone, images, texts, config, device, temperature, log,
                       report: ReportOptions | None = None) -> tuple[dict, dict]:
    """Freeze all but the query-side LayerNorms, encode the gallery once, adapt on the query stream, evaluate;
    with ``report``, also score the queries with the source model first and write the before/after report."""
    log("only_visual" if args.retrieval == "i2t" else "only_text")
    params, _ = backbone.query_norm_params(args.retrieval)
    train_only(backbone, params)
    lr, weight_decay = learning_rate(args.retrieval, config["backbone"])
    optimizer = build_optimizer(args.method, params, lr, weight_decay)

    log("Computing features for evaluation...")
    start = time.time()
    if args.retrieval == "i2t":
        queries, gallery_set, gallery_kind = images, texts, "text"
    else:
        queries, gallery_set, gallery_kind = texts, images, "image"
    gallery_batch = config["batch_size_text" if gallery_kind == "text" else "batch_size_image"]
    gallery = encode_all(backbone, gallery_set, gallery_kind, device, gallery_batch, args.num_workers)
    before = None
    if report is not None:
        query_kind = "image" if args.retrieval == "i2t" else "text"
        query_batch = config["batch_size_image" if query_kind == "image" else "batch_size_text"]
        query_features = encode_all(backbone, queries, query_kind, device, query_batch, args.num_workers)
        before = (query_features.float() @ gallery.float().t()).cpu()

    options: dict[str, Any] = {}
    if args.method == "tcr":
        options = dict(t=args.t, con_ratio=args.con_ratio, queue_size=config["batch_size_total"],
                       queue_updates=args.queue_updates)
    elif args.method == "deyo":
        options = dict(direction=args.retrieval, seed=args.seed)
    adapter = build_adapter(args.method, lambda x: backbone.encode_query(x, args.retrieval), gallery, params,
                            optimizer, steps=args.tta_steps, temperature=temperature, grad_sync=args.ddp_grad,
                            **options)
    log("Test time adaptation...")
    scores = run_stream(adapter, queries, len(gallery_set), config["batch_size_total"], device, args.num_workers)
    stats = adapter.averages()
    log("Averaged stats:", "  ".join(f"{name}: {value:.4f}" for name, value in stats.items()))
    log(f"Test time adaptation time {duration(time.time() - start)}")
    if report is not None and is_main_process():
        write_report(report, args, config, before, scores, images, texts)
    return evaluate(args.retrieval, scores, images.img2txt, images.txt2img), stats


def write_report(options: ReportOptions, args: argparse.Namespace, config: dict[str, Any], before: torch.Tensor,
                 after: torch.Tensor, images, texts) -> None:
    """``--report``: the queries before (source model) and after adaptation."""
    from common.report.retrieval import write_retrieval_report

    title = f"TCR ({args.method}), {args.retrieval} on {Path(str(args.config)).stem}"
    paths = [images.image_root / name for name in images.ann.images]
    write_retrieval_report(options, title, args.retrieval, before, after, paths, texts.ann.texts, images.img2txt,
                           images.txt2img, notes=[f"dataset {config['dataset']}, backbone {config['backbone']}"])


def result_json(record: dict[str, Any], stats: dict[str, float], args: argparse.Namespace,
                temperature: float) -> dict[str, Any]:
    """``result.json``: recalls per direction (null when not evaluated), the run's settings and logged averages."""
    def direction(prefix: str) -> dict[str, float] | None:
        if record[f"{prefix}_r1"] is None:
            return None
        return {name: record[f"{prefix}_{name}"] for name in ("r1", "r5", "r10", "r_mean", "map")}

    return {
        "i2t": direction("txt"), "t2i": direction("img"),
        "method": record["method"], "retrieval": record["retrieval"], "config": record["config"],
        "dataset": record["dataset"], "backbone": record["backbone"], "seed": record["seed"],
        "world_size": record["world_size"], "tta_steps": args.tta_steps if args.retrieval else 0,
        "temperature": temperature if args.retrieval else None, "ddp_grad": args.ddp_grad,
        "metrics": {key: record[key] for key in record if key.startswith(("txt_", "img_", "r_"))},
        "stats": stats,
    }


if __name__ == "__main__":
    run_main(main)
