"""Stage 2 of RA-TTA (RA-TTA:ratta_after_extract.py and ratta_after_extract_imagenet.py): retrieval-augmented
adaptation of CLIP's zero-shot predictions from the pre-extracted embeddings, the descriptions and the image DB.

Writes upstream's log ``<output_dir>/<net>/<dataset>_log.txt`` (appended, same lines) and, with
``--results_json``, the top-1/top-5 of the zero-shot ("CuPL") baseline and of RA-TTA plus every prediction.
"""
from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from common.errors import InputError
from common.io import MalformedFileError, atomic_write_json, check_writable_root, read_json
from common.paper_numbers import note_metrics
from common.report.args import ReportOptions, add_report_args, report_options
from common.run_record import note_args, note_dataset
from common.runtime import progress, run_main, seed_everything
from ratta.classnames import check_classnames, original_classnames
from ratta.cli import add_dataset_arg, add_model_args, choose_device, load_model, script_parser
from ratta.core import RattaConfig, adapt_batch
from ratta.data import get_spec, read_test_set
from ratta.embeddings import embedding_path, load_embeddings
from ratta.loop import adapt_sample, class_blocks
from ratta.pre_extract import classnames_path
from ratta.retrieval import BACKENDS, VectorIndex
from ratta.text import build_text_banks, description_file, load_descriptions
from ratta.vector_db import check_db, db_path, load_db, subsample_rows

SHARED_IMAGENET_DB = {"imagenet_1k", "imagenet_v2", "imagenet_sketch"}
OT_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def build_parser(imagenet: bool) -> argparse.ArgumentParser:
    parser = script_parser(2, "after_extract", imagenet,
                           "retrieval-augmented test-time adaptation from pre-extracted embeddings.")
    parser.add_argument("--db_root", type=str, required=True, help="folder holding the DB files")
    parser.add_argument("--tst_embedding_root", type=str, default="./test_embedding",
                        help="reads <root>/<net>/<seed>/<dataset>.pth (default ./test_embedding)")
    add_dataset_arg(parser, imagenet)
    parser.add_argument("--database", type=str, default="LAION2B",
                        help="DB file prefix: <db_root>/<database>_<dataset>_aux_<net> (default LAION2B)")
    add_model_args(parser, seed=42)
    parser.add_argument("--batch_size", type=int, default=None,
                        help="samples adapted together by --impl batched; results do not depend on it (default 64; "
                             "upstream's default 1 must stay 1 there and is what --impl loop does)")
    parser.add_argument("--output_dir", type=str, default="./logs/ratta",
                        help="log goes to <output_dir>/<net>/<dataset>_log.txt (default ./logs/ratta)")
    parser.add_argument("--augmentation_size", type=int, default=100,
                        help="views per image; must equal the pre-extraction value (default 100)")
    parser.add_argument("--top_k_d", type=int, default=20, help="descriptions selected per sample (default 20)")
    parser.add_argument("--top_k_s", type=int, default=20, help="images retrieved per set (default 20)")
    default_q = 0.90 if imagenet else 0.75
    parser.add_argument("--qthres", type=float, default=default_q,
                        help=f"quantile level over the views of each description score (default {default_q})")
    group = parser.add_argument_group("our additions (defaults reproduce upstream)")
    group.add_argument("--impl", choices=("batched", "loop"), default="batched",
                       help="'batched': many samples at once; 'loop': per-sample port of upstream (default batched)")
    group.add_argument("--min_desc", type=int, default=5, help="selected descriptions a class needs (default 5)")
    group.add_argument("--ot_reg", type=float, default=0.1, help="Sinkhorn entropic regularisation (default 0.1)")
    group.add_argument("--ot_iters", type=int, default=100, help="Sinkhorn max iterations (default 100)")
    group.add_argument("--ot_stop", type=float, default=1e-2, help="Sinkhorn stop threshold (default 0.01)")
    group.add_argument("--ot_dtype", choices=tuple(OT_DTYPES), default="float32",
                       help="precision of the OT solve (default float32; upstream ran fp16 numpy on GPU)")
    group.add_argument("--descriptions_dir", default="./descriptions",
                       help="folder of CuPL_prompts_<dataset>.json (default ./descriptions)")
    group.add_argument("--classnames", default=None,
                       help="a JSON list of class names to use instead of the original's (default: the original's "
                            "list of --dataset, the keys of the authors' description files)")
    group.add_argument("--db_subsample", type=float, default=0.75,
                       help="fraction of the shared ImageNet DB kept for imagenet_1k/v2/sketch (default 0.75)")
    group.add_argument("--db_subsample_mode", choices=("randint", "permutation"), default="randint",
                       help="'randint': upstream's draw with replacement; 'permutation': without (default randint)")
    group.add_argument("--trust_pickle", action="store_true",
                       help="allow unpickling a DB file without a .npz/.npy twin (unpickling runs code)")
    group.add_argument("--search_backend", choices=(*BACKENDS, "ivf"), default="auto",
                       help="DB search: faiss IndexFlatL2 (upstream's) or torch matmul+topk, both exact (default "
                            "auto: faiss-GPU on CUDA when installed, else torch, which is faster than faiss-cpu); "
                            "'ivf': the approximate <db file>.ivf.faiss written by ratta_build_db.py --index ivf")
    group.add_argument("--nprobe", type=int, default=32, help="IVF lists searched with --search_backend ivf "
                                                              "(default 32)")
    group.add_argument("--results_json", default=None, help="also write accuracies and predictions here")
    add_report_args(parser, select_note=" (by the rank of the true class after adaptation)")
    parser.add_argument("--report_root", default=None, metavar="ROOT",
                        help="the dataset root given to ratta_pre_extract.py (--root), to show the test images in "
                             "--report (default: images named, not shown)")
    parser.add_argument("--report_db_images", default=None, metavar="DIR",
                        help="the --image_root given to ratta_build_db.py: the DB file's image paths are relative "
                             "to it, and --report shows the retrieved DB images (default: only DB files whose paths "
                             "are absolute show them)")
    return parser


class AverageMeter:
    """Running mean of per-sample accuracies kept in float32, as upstream's meters (so the logs match)."""

    def __init__(self):
        self.sum, self.count = torch.zeros((), dtype=torch.float32), 0

    def update(self, value: float) -> None:
        self.sum += torch.tensor(value, dtype=torch.float32)
        self.count += 1

    @property
    def avg(self) -> float:
        return float(self.sum / self.count) if self.count else 0.0


def get_logger(log_file: Path) -> logging.Logger:
    """Logger 'RATTA': ``asctime - RATTA - LEVEL - message`` appended to ``log_file``, and to stderr."""
    logging.basicConfig(level=logging.INFO)
    logger = logging.getLogger("RATTA")
    logger.setLevel(logging.INFO)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
    logger.addHandler(handler)
    return logger


def read_classnames(path: Path, dataset: str, num_classes: int) -> list[str]:
    """A JSON list of ``num_classes`` class names."""
    names = read_json(path, "a JSON list of class names")
    if not isinstance(names, list) or len(names) != num_classes or not all(isinstance(n, str) for n in names):
        found = f"{len(names)} entries" if isinstance(names, list) else type(names).__name__
        raise MalformedFileError(f"{path}: expected a JSON list of {num_classes} class names for {dataset}, "
                                 f"found {found}")
    return names


def resolve_classnames(args: argparse.Namespace, embeddings: Path, num_classes: int) -> list[str]:
    """``--classnames`` verbatim, else the original's list; the ``<dataset>.classnames.json`` that stage 1 wrote
    next to the embeddings is checked against it (the labels of the embeddings index those names)."""
    if args.classnames:
        return read_classnames(Path(args.classnames), args.dataset, num_classes)
    stored = classnames_path(embeddings)
    if stored.is_file():
        check_classnames(args.dataset, read_classnames(stored, args.dataset, num_classes), str(stored))
    return original_classnames(args.dataset)


def warn_if_not_unit(rows, source: str, sample: int = 10_000) -> None:
    """L2 search ranks like cosine only for unit rows; upstream never checks, so warn instead of failing."""
    norms = np.linalg.norm(rows[:: max(1, len(rows) // sample)].astype(np.float32), axis=1)
    if np.abs(norms - 1).max() > 1e-2:
        warnings.warn(f"{source}: DB rows are not unit-norm (norms {norms.min():.3f}..{norms.max():.3f}); "
                      f"retrieval ranks by L2, not cosine", stacklevel=2)


def topk_hits(probs: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    top = probs.topk(min(k, probs.shape[1]), dim=1).indices
    return (top == labels[:, None]).any(dim=1)


def check_outputs(args: argparse.Namespace, log_file: Path) -> None:
    """Fail before any work when the log or ``--results_json`` cannot be written."""
    check_writable_root(log_file.parent, "--output_dir")
    if args.results_json:
        results = Path(args.results_json)
        if results.is_dir():
            raise IsADirectoryError(f"--results_json {results}: is a folder, expected a file name")
        check_writable_root(results.parent, "--results_json")


def run(args: argparse.Namespace, imagenet: bool) -> dict:
    spec = get_spec(args.dataset, imagenet=imagenet)
    log_file = Path(args.output_dir) / args.net_name.replace("/", "_") / f"{args.dataset}_log.txt"
    check_outputs(args, log_file)
    report = report_options(args)
    device = choose_device(args)
    seed_everything(args.seed)
    note_args(args, device)
    log = get_logger(log_file)
    log.info(f"Seed: {args.seed}")
    log.info(f"Augmentation size: {args.augmentation_size}")
    log.info(f"# descriptions: {args.top_k_d}")
    log.info(f"# samples: {args.top_k_s}")
    log.info(f"Q threshold: {args.qthres}")

    db_key = "imagenet_1k" if args.dataset in SHARED_IMAGENET_DB else args.dataset
    db_file = db_path(args.db_root, args.database, db_key, args.net_name)
    record = load_db(db_file, args.trust_pickle)
    rows = record["embedding"]
    if args.dataset in SHARED_IMAGENET_DB and args.db_subsample < 1:
        rows = subsample_rows(rows, args.db_subsample, args.db_subsample_mode)
    log.info(f"Database size: {rows.shape}")
    log.info(f"Array size: {rows.nbytes / 1024 ** 2:.2f} MB")

    emb_file = embedding_path(args.tst_embedding_root, args.net_name, args.seed, args.dataset)
    x, views, labels = load_embeddings(emb_file, args.augmentation_size)
    check_db(record, x.shape[1], args.net_name)
    warn_if_not_unit(rows, record["source"])
    classnames = resolve_classnames(args, emb_file, spec.num_classes)
    descriptions = load_descriptions(description_file(args.descriptions_dir, args.dataset), classnames)

    model, _ = load_model(args, device)
    with torch.no_grad():
        banks = build_text_banks(model.encode_text, classnames, descriptions, spec.templates, spec.pre_template)
        scale = model.model.logit_scale.exp().float().cpu()
    del model
    banks.W, banks.E, banks.name = banks.W.to(device), banks.E.to(device), banks.name.to(device)
    db = torch.from_numpy(rows).to(device)
    if args.search_backend == "ivf":
        if args.dataset in SHARED_IMAGENET_DB and args.db_subsample < 1:
            raise ValueError("--search_backend ivf indexes the full DB; pass --db_subsample 1 with it")
        index = VectorIndex.from_faiss_file(db_file.with_name(db_file.name + ".ivf.faiss"), args.nprobe)
    else:
        index = VectorIndex(rows, backend=args.search_backend, device=device)
    cfg = RattaConfig(top_k_d=args.top_k_d, top_k_s=args.top_k_s, qthres=args.qthres, min_desc=args.min_desc,
                      ot_reg=args.ot_reg, ot_iters=args.ot_iters, ot_stop=args.ot_stop,
                      ot_dtype=OT_DTYPES[args.ot_dtype])

    start = time.perf_counter()
    with torch.no_grad():
        retrieved = [] if report is not None else None
        p_t, p, num_sets = adapt_all(args, x, views, banks, index, db, scale.to(device), cfg, retrieved)
    seconds = time.perf_counter() - start

    meters = {name: AverageMeter() for name in ("cupl1", "cupl5", "ratta1", "ratta5")}
    hits = {"cupl1": topk_hits(p_t, labels, 1), "cupl5": topk_hits(p_t, labels, 5),
            "ratta1": topk_hits(p, labels, 1), "ratta5": topk_hits(p, labels, 5)}
    for i in range(len(labels)):
        for name, meter in meters.items():
            meter.update(100.0 * float(hits[name][i]))
        if num_sets[i] > 0 and (i + 1) % 100 == 0:
            log.info(f"Iter: {i}")
            log_accuracies(log, meters)
    log.info(f"Dataset: {args.dataset}")
    log_accuracies(log, meters)
    log.info("Exp end")
    results = {"dataset": args.dataset, "net_name": args.net_name, "seed": args.seed, "impl": args.impl,
               "num_samples": len(labels), "seconds": seconds, "samples_per_second": len(labels) / seconds,
               "zero_shot": {"top1": meters["cupl1"].avg, "top5": meters["cupl5"].avg},
               "ratta": {"top1": meters["ratta1"].avg, "top5": meters["ratta5"].avg},
               "mean_sets_per_sample": float(num_sets.float().mean()),
               "predictions": {"labels": labels.tolist(), "zero_shot": p_t.argmax(1).tolist(),
                               "ratta": p.argmax(1).tolist()}}
    if args.results_json:
        atomic_write_json(results, args.results_json, indent=2)
    note_dataset(args.dataset, "test", images=len(labels))
    note_metrics(args.dataset, "test", results, args.results_json or log_file)
    if report is not None:
        subsampled = args.dataset in SHARED_IMAGENET_DB and args.db_subsample < 1
        paths = None if subsampled else db_paths(record, args.report_db_images)
        write_report(report, args, labels, p_t, p, classnames, retrieved, paths)
    return results


def db_paths(record: dict, image_root: str | None) -> list[Path] | None:
    """The image file of every DB row when the DB file lists their paths (ratta_build_db.py writes them, relative
    to its --image_root, which ``image_root`` gives back)."""
    paths = record.get("paths")
    if paths is None and record["source"].endswith(".npz"):
        with np.load(record["source"], allow_pickle=False) as data:
            paths = data["paths"] if "paths" in data else None
    if paths is None:
        return None
    return [Path(image_root or "", str(path)) for path in paths]


def ordered_test_images(args: argparse.Namespace, labels: torch.Tensor) -> list[Path]:
    """The test images in the embeddings' order: ratta_pre_extract.py's seeded permutation of the test set under
    ``--report_root``, checked against the embeddings' labels."""
    items, _ = read_test_set(args.dataset, args.report_root)
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(args.seed)).tolist()
    paths = [Path(items[i][0]) for i in order]
    if len(paths) != len(labels) or any(items[i][1] != int(y) for i, y in zip(order, labels)):
        raise InputError(f"--report_root {args.report_root}: its {args.dataset} test set ({len(items)} images, "
                         f"visited with --seed {args.seed}) does not match the {len(labels)} test embeddings; pass "
                         f"the --root and --seed given to ratta_pre_extract.py")
    return paths


def write_report(options: ReportOptions, args: argparse.Namespace, labels: torch.Tensor, p_t: torch.Tensor,
                 p: torch.Tensor, classnames: list[str], retrieved: list[tuple], paths: list[Path] | None) -> None:
    """``--report``: zero-shot vs RA-TTA top-5 per test image, with the DB images it retrieved."""
    from common.report.classify import Retrieved, write_classification_report

    images = ordered_test_images(args, labels) if args.report_root else None
    notes = [f"DB {args.database}, {args.net_name}, --impl {args.impl}"]
    if paths is None:
        notes.append("retrieved DB images not shown: the DB file lists no paths (or the ImageNet DB was subsampled)")
    write_classification_report(options, f"RA-TTA on {args.dataset}", labels, p_t, p, classnames, images,
                                [Retrieved(*found) for found in retrieved], paths, notes)


def log_accuracies(log: logging.Logger, meters: dict[str, AverageMeter]) -> None:
    log.info(f"CuPL - Top-1 acc: {meters['cupl1'].avg} \t Top-5 acc: {meters['cupl5'].avg}")
    log.info(f"RA-TTA - Top-1 acc: {meters['ratta1'].avg} \t Top-5 acc: {meters['ratta5'].avg}")


def adapt_all(args, x, views, banks, index, db, scale, cfg,
              retrieved: list | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(p_t [N, C], p [N, C], number of sets [N]) on the CPU, by --impl; ``retrieved`` (a list) receives per sample
    (set classes, retrieved DB rows per set, set weights)."""
    p_t, p, num_sets = [], [], []
    if args.impl == "loop":
        blocks = class_blocks(banks.name.cpu())
        for i in progress(range(len(x)), desc="RA-TTA (loop)"):
            out = adapt_sample(x[i:i + 1].to(db.device), views[i].to(db.device), banks, blocks, index, db, scale, cfg)
            p_t.append(out["p_t"][None].cpu())
            p.append(out["p"][None].cpu())
            num_sets.append(out["S"])
            if retrieved is not None:
                retrieved.append(sample_retrievals(out))
        return torch.cat(p_t), torch.cat(p), torch.tensor(num_sets)
    batch_size = args.batch_size or 64
    for start in progress(range(0, len(x), batch_size), desc="RA-TTA (batched)"):
        stop = start + batch_size
        out = adapt_batch(x[start:stop].to(db.device), views[start:stop].to(db.device), banks, index, db, scale, cfg)
        p_t.append(out.p_t.cpu())
        p.append(out.p.cpu())
        num_sets.append(out.num_sets.cpu())
        if retrieved is not None:
            retrieved += batch_retrievals(out)
    return torch.cat(p_t), torch.cat(p), torch.cat(num_sets)


def sample_retrievals(out: dict) -> tuple[list[int], list[list[int]], list[float]]:
    """(set classes, retrieved rows per set, set weights) of one ``adapt_sample`` output (empty without sets)."""
    if not out["S"]:
        return [], [], []
    return out["set_classes"].tolist(), out["retrieved_ids"].tolist(), out["rho"].tolist()


def batch_retrievals(out) -> list[tuple[list[int], list[list[int]], list[float]]]:
    """``sample_retrievals`` of every sample of an ``adapt_batch`` output (padding sets dropped)."""
    valid = out.valid.cpu()
    return [(out.set_classes[b].cpu()[valid[b]].tolist(), out.retrieved_ids[b].cpu()[valid[b]].tolist(),
             out.rho[b].cpu()[valid[b]].tolist()) for b in range(len(valid))]


def main(imagenet: bool, argv: list[str] | None = None) -> None:
    run_main(lambda args: run(build_parser(imagenet).parse_args(args), imagenet), argv)

