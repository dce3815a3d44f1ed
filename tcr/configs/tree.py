"""The upstream ``configs/`` tree of TCR (587 YAML files) as one template plus override tables.

Every upstream file is ``key: value`` lines: the twelve :data:`BASE_KEYS` in that order, then, for the ReID and the
QGS ``*_large`` files, dead keys left over from BLIP/IRRA fine-tuning. Values are kept here as the YAML text of
the upstream files (``5e-4``, ``''``, ``true``), so :func:`config_text` reproduces them key for key and value for
value; :mod:`tcr.config` parses that text exactly as it parses a file.

Names are the file paths below ``configs/`` without ``.yaml``, e.g. ``QS/i2t/coco_image_c/COCO_IP_fog_3``,
``QS/t2i/coco_text_c/annotation_OcrAug_4``, ``QGS/t2i_large/retrieval_nocaps_in_domain``, ``Reid/retrieval_cuhk_pedes``.

Upstream path quirks kept on purpose, since they name folders of the authors' download:

- the clean QS i2t configs and all four QGS ``retrieval_coco`` read images from ``./dataset/coco-IP/coco_image``;
  every QS t2i config reads ``./dataset/coco/coco_image``. Flickr: ``./dataset/flickr-IP/flickr_image`` in the two
  clean QS i2t configs and in ``QGS/i2t_large/retrieval_flickr``, ``./dataset/flickr/flickr_image`` elsewhere;
- the clean QS t2i configs read annotations from ``./dataset/{coco,flickr}-TP/{coco,flickr}_annotations/``;
- QGS Flickr ``ann_root`` has no trailing slash, nocaps ``image_root`` has one;
- the ReID configs pair each test set with the model trained on the *other* set (cross-dataset).

Deviations and unverified parts:

- the upstream ``configs/fashion_detailed/retrieval_fashion_gen.yaml`` has no final newline; every file written
  here ends with one;
- the QS/QGS ``*_large`` files were not available to read: their ``pretrained``, ``vit`` and ``vit_ckpt_layer``
  are inferred (12 for QS large COCO and all QGS large, 10 for QS large Flickr). The dead keys of the QGS large
  files (:data:`QGS_LARGE_DEAD_KEYS`) follow a comparison with the authors' 587 files: none of the 14 has
  ``alpha`` or ``k_test``, and only two have ``init_lr``. Which two is not recorded, so none gets it here. No code
  reads the dead keys (``main.py`` sets ``init_lr`` and ``weight_decay`` itself).
"""
from __future__ import annotations

IMAGE_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "defocus_blur", "glass_blur", "zoom_blur",
    "motion_blur", "fog", "frost", "snow", "contrast", "brightness", "pixelate", "elastic_transform",
    "jpeg_compression",
)
"""The 16 image corruptions of COCO-C / Flickr-C."""

SEVERITIES = (1, 2, 3, 4, 5)

CHAR_CORRUPTIONS = ("KeyboardAug", "OcrAug", "RandomCharAug_insert", "RandomCharAug_substitute",
                    "RandomCharAug_swap", "RandomCharAug_delete")
WORD_CORRUPTIONS = ("sr", "ri", "rs", "rd", "ip")
SENTENCE_CORRUPTIONS = ("formal", "casual", "passive", "active", "back_trans")

TEXT_CORRUPTIONS: dict[str, tuple[int, ...]] = {
    **{name: (1, 2, 3, 4, 5, 6, 7) for name in CHAR_CORRUPTIONS},
    **{name: (6, 7) for name in WORD_CORRUPTIONS},
    **{name: (1,) for name in SENTENCE_CORRUPTIONS},
}
"""The 16 text corruption types of the configs and the levels each one has (57 per dataset)."""

BASE_KEYS = ("image_root", "ann_root", "dataset", "pretrained", "backbone", "vit", "vit_ckpt_layer",
             "vit_grad_ckpt", "image_size", "batch_size_image", "batch_size_text", "batch_size_total")

TEMPLATE = {"backbone": "blip", "vit": "base", "vit_ckpt_layer": "4", "vit_grad_ckpt": "true", "image_size": "384",
            "batch_size_image": "16", "batch_size_text": "16", "batch_size_total": "64"}
"""YAML text of the values every upstream file shares unless overridden."""

REID_DEAD_KEYS = {"alpha": "0.4", "k_test": "128", "max_epoch": "1", "min_lr": "0", "negative_all_rank": "false",
                  "queue_size": "57600", "top_k_select": "5", "weight_decay": "5e-4"}
QGS_LARGE_DEAD_KEYS = {"max_epoch": "1", "min_lr": "0", "negative_all_rank": "false", "queue_size": "57600",
                       "weight_decay": "5e-4"}

QS_SETTINGS = ("i2t", "i2t_large", "t2i", "t2i_large")
QGS_DATASETS = ("coco", "flickr", "fashion_gen", "nocaps_in_domain", "nocaps_near_domain", "nocaps_out_domain",
                "nocaps_entire_domain")

_IP_PREFIX = {"coco": "COCO_IP", "flickr": "Flickr30K_IP"}
"""File-name prefix of the image-corrupted folders and configs."""
_QS_LARGE_CKPT_LAYER = {"coco": "12", "flickr": "10"}


def _render(values: dict[str, str]) -> str:
    return "".join(f"{key}: {value}\n" for key, value in values.items())


def _config(image_root: str, ann_root: str, dataset: str, pretrained: str, **overrides: str) -> dict[str, str]:
    values = {"image_root": image_root, "ann_root": ann_root, "dataset": dataset, "pretrained": pretrained,
              **TEMPLATE}
    values.update(overrides)
    return values


def _large(values: dict[str, str], ckpt_layer: str) -> dict[str, str]:
    return {**values, "vit": "large", "vit_ckpt_layer": ckpt_layer}


def _qs_tree() -> dict[str, dict[str, str]]:
    tree: dict[str, dict[str, str]] = {}
    for dataset, ckpt_layer in _QS_LARGE_CKPT_LAYER.items():
        ann = f"./dataset/{dataset}/{dataset}_annotations/"
        for setting in QS_SETTINGS:
            large = setting.endswith("_large")
            weights = f"./weights/blip/model_{'large' if large else 'base'}_retrieval_{dataset}.pth"
            finish = (lambda v: _large(v, ckpt_layer)) if large else (lambda v: v)
            if setting.startswith("i2t"):
                folder = f"QS/{setting}/{dataset}_image_c"
                tree[f"{folder}/retrieval_{dataset}"] = finish(
                    _config(f"./dataset/{dataset}-IP/{dataset}_image", ann, dataset, weights))
                for corruption in IMAGE_CORRUPTIONS:
                    for severity in SEVERITIES:
                        stem = f"{_IP_PREFIX[dataset]}_{corruption}_{severity}"
                        tree[f"{folder}/{stem}"] = finish(
                            _config(f"./dataset/{dataset}-IP/{stem}", ann, dataset, weights))
            else:
                folder = f"QS/{setting}/{dataset}_text_c"
                images = f"./dataset/{dataset}/{dataset}_image"
                tree[f"{folder}/retrieval_{dataset}"] = finish(
                    _config(images, f"./dataset/{dataset}-TP/{dataset}_annotations/", dataset, weights))
                for augmentation, levels in TEXT_CORRUPTIONS.items():
                    for level in levels:
                        tree[f"{folder}/annotation_{augmentation}_{level}"] = finish(_config(
                            images, f"./dataset/{dataset}-TP/annotation_{augmentation}/{level}/", dataset, weights))
    return tree


def _qgs_paths(setting: str, dataset: str) -> tuple[str, str]:
    if dataset == "coco":
        return "./dataset/coco-IP/coco_image", "./dataset/coco/coco_annotations/"
    if dataset == "flickr":
        folder = "flickr-IP" if setting == "i2t_large" else "flickr"
        return f"./dataset/{folder}/flickr_image", "./dataset/flickr/flickr_annotations"
    if dataset == "fashion_gen":
        return "./dataset/Fashion-Gen", "''"
    return "./dataset/nocaps/", "./dataset/nocaps"


def _qgs_tree() -> dict[str, dict[str, str]]:
    tree = {}
    for setting in QS_SETTINGS:
        large = setting.endswith("_large")
        for dataset in QGS_DATASETS:
            image_root, ann_root = _qgs_paths(setting, dataset)
            values = _config(image_root, ann_root, dataset, f"./weights/blip/model_{'large' if large else 'base'}.pth")
            tree[f"QGS/{setting}/retrieval_{dataset}"] = (
                {**_large(values, "12"), **QGS_LARGE_DEAD_KEYS} if large else values)
    return tree


def _other_tree() -> dict[str, dict[str, str]]:
    cuhk = _config("./dataset/CUHK-PEDES", "''", "cuhk_pedes", "./weights/reid/irra_icfg_pedes.pth",
                   backbone="clip_reid")
    icfg = _config("./dataset/ICFG-PEDES", "''", "icfg_pedes", "./weights/reid/irra_cuhk_pedes.pth",
                   backbone="clip_reid")
    icfg_dead = {key: value for key, value in REID_DEAD_KEYS.items() if key != "top_k_select"}
    return {
        "Reid/retrieval_cuhk_pedes": {**cuhk, **REID_DEAD_KEYS},
        "Reid/retrieval_icfg_pedes": {**icfg, **icfg_dead},
        "fashion_detailed/retrieval_fashion_gen": _config(
            "./dataset/Fashion-Gen", "''", "fashion_gen_detail", "./weights/fashion_pretrained/finetuned_clip.pt",
            backbone="clip"),
    }


def _build_tree() -> dict[str, dict[str, str]]:
    return {**_qs_tree(), **_qgs_tree(), **_other_tree()}


CONFIG_TREE: dict[str, dict[str, str]] = _build_tree()
"""Config name → ordered ``{key: YAML value text}`` for every upstream file."""


def config_names() -> list[str]:
    """All 587 config names, in generation order."""
    return list(CONFIG_TREE)


def normalize_name(name: str) -> str:
    """Strip a leading ``./``, ``configs/`` or ``tcr/configs/`` and a trailing ``.yaml`` from a config name."""
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    for prefix in ("tcr/configs/", "configs/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    return name[:-5] if name.endswith(".yaml") else name


def config_text(name: str) -> str:
    """The YAML text of a config, by name (see module docstring); unknown names raise a ``KeyError`` that says
    which part is wrong and lists the valid choices."""
    key = normalize_name(name)
    if key not in CONFIG_TREE:
        raise KeyError(unknown_name_message(name))
    return _render(CONFIG_TREE[key])


def _choices(values) -> str:
    return ", ".join(str(value) for value in values)


def unknown_name_message(name: str) -> str:
    """Explain why ``name`` is not a config name: unknown folder, corruption, severity or level."""
    key = normalize_name(name)
    folder, _, stem = key.rpartition("/")
    folders = sorted({known.rpartition("/")[0] for known in CONFIG_TREE})
    head = f"{name!r} is neither a config file nor a known config name"
    if folder not in folders:
        return f"{head}: unknown folder {folder!r}; valid folders: {_choices(folders)}"
    stems = [known.rpartition("/")[2] for known in CONFIG_TREE if known.rpartition("/")[0] == folder]
    prefix = next((p for p in _IP_PREFIX.values() if stem.startswith(p + "_")), None)
    if folder.endswith("image_c") and prefix:
        corruption, _, severity = stem[len(prefix) + 1:].rpartition("_")
        if corruption not in IMAGE_CORRUPTIONS:
            return f"{head}: unknown image corruption {corruption!r}; valid corruptions: {_choices(IMAGE_CORRUPTIONS)}"
        return f"{head}: severity {severity!r} of {corruption} does not exist; valid severities: {_choices(SEVERITIES)}"
    if folder.endswith("text_c") and stem.startswith("annotation_"):
        augmentation, _, level = stem[len("annotation_"):].rpartition("_")
        if augmentation not in TEXT_CORRUPTIONS:
            return (f"{head}: unknown text corruption {augmentation!r}; valid corruptions: "
                    f"{_choices(TEXT_CORRUPTIONS)}")
        return (f"{head}: level {level!r} of {augmentation} does not exist; valid levels: "
                f"{_choices(TEXT_CORRUPTIONS[augmentation])}")
    shown = stems if len(stems) <= 10 else stems[:1] + [f"<{len(stems) - 1} more>"]
    return f"{head}: no {stem!r} in {folder}; valid names there: {_choices(shown)}"
