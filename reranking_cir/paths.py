"""Model and top-K path resolution of Candidate-Reranking-CIR ``src/utils.py`` (``get_model_path``,
``get_top_k_path``), with the placeholder ``DTYPE`` substituted before the existence check (the original checks the
raw path first, so FashionIQ paths with the placeholder failed)."""
from __future__ import annotations

from pathlib import Path

from common.io import PathLike

DTYPE = "DTYPE"
BEST_FILE = {"fashioniq": "blip.pt", "cirr": "blip_mean.pt"}
TOPK_ALIASES = {
    ("fashioniq", False): "stage1/fashionIQ/fiq_top_200_val_DTYPE.pt",
    ("cirr", False): "stage1/CIRR/cirr_top_200_val.pt",
    ("cirr", True): "stage1/CIRR/cirr_top_200_test1.pt",
}
ALIAS_NAMES = {"BLIP_stageI_b512_2e-5_cos20": "fashioniq", "BLIP_stageI_b512_2e-5_cos10": "cirr"}


def get_model_path(path: PathLike, dataset: str, models_root: PathLike = "models") -> Path:
    """A checkpoint file from a run folder or a file, as the original: relative paths live under ``models_root``
    (unless they exist as given or already start with it); a folder means ``<folder>/saved_models/blip.pt``
    (FashionIQ) or ``blip_mean.pt`` (CIRR)."""
    if path is None:
        raise ValueError("a checkpoint path is required (a run folder or a .pt file)")
    resolved = Path(path)
    if not resolved.exists() and not resolved.is_absolute() and resolved.parts[:1] != Path(models_root).parts[:1]:
        resolved = Path(models_root) / resolved
    if resolved.suffix != ".pt":
        resolved = resolved / "saved_models" / BEST_FILE[dataset]
    if not resolved.is_file():
        raise FileNotFoundError(f"{resolved}: checkpoint not found (from {path!r}; expected a .pt file or a run folder "
                                f"with saved_models/{BEST_FILE[dataset]})")
    return resolved


def get_top_k_path(name: PathLike, dataset: str, cirr_test: bool = False, models_root: PathLike = "models",
                   dress_type: str | None = None) -> Path:
    """A top-K file: the original aliases map to the released files under ``models_root``, anything else is a path.

    ``DTYPE`` in the path is replaced by ``dress_type`` (FashionIQ) before checking that the file exists.
    """
    text = str(name)
    if text in ALIAS_NAMES:
        if ALIAS_NAMES[text] != dataset:
            raise ValueError(f"top-K alias {text!r} is for {ALIAS_NAMES[text]}, not {dataset}")
        text = str(Path(models_root) / TOPK_ALIASES[(dataset, cirr_test)])
    if DTYPE in text:
        if dress_type is None:
            raise ValueError(f"{text}: the DTYPE placeholder needs a FashionIQ dress type")
        text = text.replace(DTYPE, dress_type)
    path = Path(text)
    if not path.is_file():
        source = f" (alias {name!r})" if str(name) in ALIAS_NAMES else ""
        raise FileNotFoundError(f"{path}: top-K file not found{source}; write it with validate.py --save-topk")
    return path


def top_k_pattern(name: PathLike, dataset: str, cirr_test: bool = False, models_root: PathLike = "models") -> str:
    """The file an alias stands for (``DTYPE`` kept), or ``name`` itself: what a run records as its top-K path."""
    if str(name) in ALIAS_NAMES:
        return str(Path(models_root) / TOPK_ALIASES[(dataset, cirr_test)])
    return str(name)


def topk_file_name(dataset: str, k: int, split: str, dress_type: str | None = None) -> str:
    """``cirr_top_{k}_{split}.pt`` or ``fiq_top_{k}_{split}_{dress_type}.pt``."""
    if dataset == "cirr":
        return f"cirr_top_{k}_{split}.pt"
    return f"fiq_top_{k}_{split}_{dress_type}.pt"


def stage1_run_dir(checkpoint: Path) -> Path:
    """The run folder of a checkpoint ``<run>/saved_models/<file>.pt``, where the original writes top-K files."""
    return checkpoint.resolve().parent.parent
