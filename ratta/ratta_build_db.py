"""RA-TTA ratta_build_db.py (new): build an image DB for ratta_after_extract.py.

From a folder of images (scanned recursively, paths sorted, CLIP eval transform) or from an ``.npy`` of
embeddings: unit-norm float16 rows written as ``<db_root>/<database>_<dataset>_aux_<net>`` (the upstream pickle
layout, with ``paths`` and the backbone recorded) plus ``.npz``. ``--index ivf`` also writes a faiss IVF index.

    python ratta/ratta_build_db.py --image_root web_images/dtd --dataset dtd --net_name ViT-B/16
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from common.io import check_writable_root
from common.runtime import progress, run_main
from common.transforms import clip_preprocess
from ratta.cli import add_model_args, choose_device, load_model
from ratta.retrieval import build_ivf_index, faiss, recall_against_exact
from ratta.vector_db import db_path, normalize_rows, save_db

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image_root", default=None, help="folder of images, scanned recursively")
    source.add_argument("--from_embeddings", default=None,
                        help="an .npy [N, D] of embeddings to normalise and wrap instead of encoding images")
    parser.add_argument("--dataset", required=True, help="dataset key used in the output name")
    parser.add_argument("--database", default="LAION2B", help="output name prefix (default LAION2B)")
    parser.add_argument("--db_root", default="./db_embedding", help="output folder (default ./db_embedding)")
    add_model_args(parser, seed=0)
    parser.add_argument("--batch_size", type=int, default=256, help="images per forward pass (default 256)")
    parser.add_argument("--num_workers", type=int, default=4, help="data-loader workers (default 4)")
    parser.add_argument("--skip_bad", action="store_true", help="skip unreadable images (listed) instead of failing")
    parser.add_argument("--index", choices=("flat", "ivf"), default="flat",
                        help="'ivf' also writes <db file>.ivf.faiss, a faiss IndexIVFFlat (default flat)")
    parser.add_argument("--nlist", type=int, default=1024, help="IVF lists (default 1024)")
    parser.add_argument("--nprobe", type=int, default=32, help="IVF lists probed when measuring recall (default 32)")
    return parser


def list_images(root: Path) -> list[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: --image_root is not a folder")
    paths = sorted(path for path in root.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
    if not paths:
        raise ValueError(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    return paths


class ImageFiles(Dataset):
    def __init__(self, paths: list[Path], n_px: int, skip_bad: bool):
        self.paths, self.transform, self.skip_bad = paths, clip_preprocess(n_px), skip_bad
        self.n_px = n_px

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            with Image.open(self.paths[i]) as image:
                return self.transform(image.convert("RGB")), True
        except OSError as error:
            if not self.skip_bad:
                raise OSError(f"{self.paths[i]}: unreadable image ({error}); pass --skip_bad to skip it") from error
            return torch.zeros(3, self.n_px, self.n_px), False


@torch.no_grad()
def encode_folder(args: argparse.Namespace, device: torch.device) -> tuple[np.ndarray, list[str], int]:
    root = Path(args.image_root)
    paths = list_images(root)
    model, info = load_model(args, device)
    n_px = info["input_resolution"]
    loader = DataLoader(ImageFiles(paths, n_px, args.skip_bad), batch_size=args.batch_size,
                        num_workers=args.num_workers)
    features, ok = [], []
    for images, good in progress(loader, desc="DB images"):
        features.append(model.encode_image(images).float().cpu())
        ok.append(good)
    good = torch.cat(ok).numpy()
    for path in np.array(paths)[~good]:
        print(f"skipped unreadable image: {path}", file=sys.stderr)
    rows = torch.cat(features).numpy()[good]
    return rows, [str(path.relative_to(root)) for path, keep in zip(paths, good) if keep], n_px


def main(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    out_path = db_path(args.db_root, args.database, args.dataset, args.net_name)
    check_writable_root(out_path.parent, "--db_root")
    if args.from_embeddings:
        source = Path(args.from_embeddings)
        if not source.is_file():
            raise FileNotFoundError(f"{source}: --from_embeddings file not found (expected an .npy [N, D])")
        rows = np.load(source, allow_pickle=False)
        if rows.ndim != 2:
            raise ValueError(f"{source}: expected an array [N, D], got shape {rows.shape}")
        paths, n_px = [f"row_{i}" for i in range(rows.shape[0])], None
    else:
        rows, paths, n_px = encode_folder(args, choose_device(args))
    embedding = normalize_rows(rows)
    out, npz = save_db(out_path, embedding, paths, args.net_name, n_px)
    print(f"DB of {embedding.shape[0]} rows x {embedding.shape[1]} written to {out} and {npz}")
    if args.index == "ivf":
        index = build_ivf_index(embedding, args.nlist)
        index.nprobe = args.nprobe
        probe = embedding[np.random.default_rng(0).choice(len(embedding), min(1000, len(embedding)), False)]
        recall = recall_against_exact(index, embedding, probe, min(20, len(embedding)))
        ivf_file = out.with_name(out.name + ".ivf.faiss")
        faiss.write_index(index, str(ivf_file))
        print(f"IVF index (nlist {args.nlist}) written to {ivf_file}; recall@20 vs exact at nprobe "
              f"{args.nprobe}: {recall:.4f}")
    return out


if __name__ == "__main__":
    run_main(main)
