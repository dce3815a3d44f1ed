"""Stage 1 of RA-TTA (RA-TTA:ratta_pre_extract.py and ratta_pre_extract_imagenet.py): CLIP embeddings of every
test image and of ``--augmentation_size`` random views of it.

The test set is visited in a seeded random order (upstream shuffles its loader); every image's views come from
an RNG seeded by (``--seed``, image index), so a resumed or sharded run writes the same file as one uninterrupted
process. Work is saved in chunks under ``<output>.partial/`` (each written atomically); a rerun skips finished
chunks. Under ``torch.distributed.run`` the chunks are shared out over the ranks and rank 0 writes the file.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from common.dist import barrier, init_distributed
from common.io import CheckpointError, atomic_torch_save, atomic_write_json, load_torch_file, read_json
from common.io import check_writable_root
from common.run_record import note_args, note_output
from common.runtime import note_stop, progress, run_main, seed_everything
from common.transforms import CLIP_MEAN, CLIP_STD, clip_preprocess
from ratta.cli import add_dataset_arg, add_model_args, choose_device, load_model, script_parser
from ratta.data import TestImages, get_spec, read_test_set
from ratta.embeddings import SAVE_FORMATS, embedding_path, save_embeddings


def build_parser(imagenet: bool) -> argparse.ArgumentParser:
    parser = script_parser(1, "pre_extract", imagenet, "CLIP embeddings of each test image and its random views.")
    parser.add_argument("--root", type=str, required=True, help="data root holding the dataset folders")
    add_dataset_arg(parser, imagenet)
    add_model_args(parser, seed=42 if imagenet else 0)
    parser.add_argument("--save_dir", type=str, default="./test_embedding",
                        help="writes <save_dir>/<net>/<seed>/<dataset>.pth (default ./test_embedding)")
    parser.add_argument("--augmentation_size", type=int, default=100, help="random views per image (default 100)")
    group = parser.add_argument_group("our additions")
    group.add_argument("--save_format", choices=SAVE_FORMATS, default="list",
                       help="'list': upstream's list of (x, views, y) tuples; 'stacked': one dict of stacked "
                            "tensors that loads much faster (default list)")
    group.add_argument("--image_batch", type=int, default=4,
                       help="test images per forward pass; each brings 1 + augmentation_size crops (default 4)")
    group.add_argument("--num_workers", type=int, default=4, help="data-loader workers (default 4, as upstream)")
    group.add_argument("--chunk_size", type=int, default=256,
                       help="images per resumable chunk under <output>.partial/ (default 256)")
    return parser


def _identity(image):
    return image


class ViewImages(Dataset):
    """(base view, ``aug_size`` random views, label, position) of the test images in ``order``."""

    def __init__(self, images: TestImages, order: list[int], n_px: int, aug_size: int, seed: int):
        self.images, self.order, self.seed, self.aug_size = images, order, seed, aug_size
        self.base = clip_preprocess(n_px)
        self.view = T.Compose([T.RandomResizedCrop(n_px), T.RandomHorizontalFlip(), T.ToTensor(),
                               T.Normalize(CLIP_MEAN, CLIP_STD)])

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int):
        index = self.order[i]
        image, label, _ = self.images[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + index)
            views = torch.stack([self.view(image) for _ in range(self.aug_size)])
        return self.base(image), views, label


@torch.no_grad()
def encode_chunk(model, loader: DataLoader, desc: str) -> dict[str, torch.Tensor]:
    xs, views, ys = [], [], []
    for base, crops, label in progress(loader, desc=desc):
        b, v = crops.shape[:2]
        xs.append(model.encode_image(base).cpu())
        views.append(model.encode_image(crops.flatten(0, 1)).reshape(b, v, -1).cpu())
        ys.append(label)
    return {"x": torch.cat(xs), "views": torch.cat(views), "y": torch.cat(ys)}


def run(args: argparse.Namespace, imagenet: bool, max_new_chunks: int | None = None) -> Path | None:
    """Extract (resuming finished chunks) and write the output file on rank 0. ``max_new_chunks`` stops early
    without writing it, as a killed run would (for tests). Ctrl-C or SIGTERM (under ``run_main``) stops with one
    line saying how many images are done and kept."""
    get_spec(args.dataset, imagenet=imagenet)
    out = embedding_path(args.save_dir, args.net_name, args.seed, args.dataset)
    check_writable_root(out.parent, "--save_dir")
    note_output(out.parent)
    info = init_distributed(choose_device(args))
    seed_everything(args.seed)
    note_args(args, info.device, info.world_size)
    if info.is_main:
        print(str(out.with_suffix("")))
        print(f"seed: {args.seed}, augmentation size: {args.augmentation_size}")
        if not out.parent.is_dir():
            print(f"create folder: {out.parent}")
    model, model_info = load_model(args, info.device)
    n_px = model_info["input_resolution"]
    items, classnames = read_test_set(args.dataset, args.root)
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(args.seed)).tolist()
    partial = out.with_name(out.name + ".partial")
    meta = {"net_name": args.net_name, "seed": args.seed, "aug_size": args.augmentation_size, "n_px": n_px,
            "num_images": len(items), "chunk_size": args.chunk_size, "weights": model_info["source"]}
    check_partial(partial, meta, info.is_main)
    barrier()
    chunks = range(-(-len(items) // args.chunk_size))
    dataset = ViewImages(TestImages(items, _identity), order, n_px, args.augmentation_size, args.seed)
    note_stop(lambda: f"{images_done(partial, len(items), args.chunk_size)} of {len(items)} images done, kept in "
                      f"{partial}/; run the same command again to continue")
    done_now = 0
    for chunk in chunks[info.rank::info.world_size]:
        target = partial / f"chunk_{chunk:06d}.pt"
        if target.is_file():
            continue
        if max_new_chunks is not None and done_now >= max_new_chunks:
            return None
        positions = list(range(chunk * args.chunk_size, min((chunk + 1) * args.chunk_size, len(items))))
        loader = DataLoader(torch.utils.data.Subset(dataset, positions), batch_size=args.image_batch,
                            num_workers=args.num_workers)
        atomic_torch_save(encode_chunk(model, loader, f"chunk {chunk + 1}/{len(chunks)}"), target)
        done_now += 1
    barrier()
    if info.is_main:
        parts = [load_chunk(partial / f"chunk_{chunk:06d}.pt") for chunk in chunks]
        x, views, y = (torch.cat([part[key] for part in parts]) for key in ("x", "views", "y"))
        save_embeddings(out, x, views, y, args.save_format,
                        {"net_name": args.net_name, "seed": args.seed, "aug_size": args.augmentation_size})
        atomic_write_json(classnames, classnames_path(out))
        shutil.rmtree(partial)
        print(f"Successfully saved image features to [{out}]")
    barrier()
    return out


def load_chunk(path: Path) -> dict[str, torch.Tensor]:
    """A finished chunk; a damaged one names the file and how to redo it."""
    try:
        return load_torch_file(path, what="pre-extraction chunk")
    except CheckpointError as error:
        raise CheckpointError(f"{error} Delete {path} and run the same command again to encode that chunk "
                              f"anew.") from None


def images_done(partial: Path, num_images: int, chunk_size: int) -> int:
    """How many of the ``num_images`` images have their chunk saved under ``partial``."""
    starts = [int(path.stem.removeprefix("chunk_")) * chunk_size for path in partial.glob("chunk_*.pt")]
    return sum(min(chunk_size, num_images - start) for start in starts if start < num_images)


def classnames_path(embedding_file: Path) -> Path:
    """``<dataset>.classnames.json`` next to the embeddings: the class names stage 1 used (the original's list),
    which after-extract checks against its own."""
    return embedding_file.with_name(embedding_file.stem + ".classnames.json")


def check_partial(partial: Path, meta: dict, is_main: bool) -> None:
    """Create ``partial/meta.json``, or check that an existing one came from the same settings."""
    meta_file = partial / "meta.json"
    if meta_file.is_file():
        stored = read_json(meta_file, "the settings of the unfinished run")
        if stored != meta:
            diff = {key: (stored.get(key), value) for key, value in meta.items() if stored.get(key) != value}
            raise ValueError(f"{partial}: unfinished run with other settings {diff} (stored, now); delete the "
                             f"folder to start over")
    elif is_main:
        atomic_write_json(meta, meta_file)


def main(imagenet: bool, argv: list[str] | None = None) -> None:
    run_main(lambda args: run(build_parser(imagenet).parse_args(args), imagenet), argv)
