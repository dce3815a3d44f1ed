"""Datasets shared by the papers: CIR (FashionIQ, CIRR, Shoes), Karpathy retrieval sets, root resolution."""
from common.data.cir import (CIRRDataset, FashionIQDataset, collate_drop_none, fiq_compositions, fiq_train_caption,
                             fiq_val_caption)
from common.data.images import ImageReadError, open_image
from common.data.paths import dataset_dir, resolve_dataset_root
from common.data.retrieval import KarpathyRetrieval, build_retrieval_eval, pre_caption
from common.data.shoes import ShoesDataset, prepare_shoes

__all__ = [
    "CIRRDataset", "FashionIQDataset", "ImageReadError", "KarpathyRetrieval", "ShoesDataset", "build_retrieval_eval",
    "collate_drop_none", "dataset_dir", "fiq_compositions", "fiq_train_caption", "fiq_val_caption", "open_image",
    "pre_caption", "prepare_shoes", "resolve_dataset_root",
]
