"""TCR config files (the original's ``configs/``): load an upstream YAML unchanged, validate it, resolve its
relative paths.

``--config`` takes either a YAML file or the name of an upstream config, which is then rendered in memory from the
template in :mod:`tcr.configs.tree`: ``QS/i2t/coco_image_c/COCO_IP_fog_3``, with or without a leading
``./configs/`` and a trailing ``.yaml`` (so upstream's default ``./configs/QS/i2t_large/flickr_image_c/
Flickr30K_IP_gaussian_noise_5.yaml`` works without the file). An existing file always wins over a name.

Upstream parses with ruamel's YAML 1.2 loader; we use PyYAML's safe loader plus the YAML 1.2 rule that a number
with an exponent and no dot (``5e-4``) is a float, so every upstream file gives the same values. The result is a
plain ``dict`` in file order, dead keys included.

Paths in the configs are relative to the directory upstream runs from (``./dataset/...``, ``./weights/...``).
:func:`resolve_paths` re-roots them on ``--data_root`` (the folder that plays ``./dataset``) and
``--weights_root`` (the folder that plays ``./weights``). BLIP's ``configs/med_config.json`` is
``common/blip/configs/med_config.json`` here (:func:`resolve_med_config`).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from common.blip.config import MED_CONFIG_PATH
from common.errors import InputError
from common.io import PathLike
from tcr.configs.tree import config_text, normalize_name

DATASETS = ("coco", "flickr", "fashion_gen", "fashion_gen_detail", "cuhk_pedes", "icfg_pedes",
            "nocaps_in_domain", "nocaps_near_domain", "nocaps_out_domain", "nocaps_entire_domain")
BACKBONES = ("blip", "clip", "clip_reid")
VITS = ("base", "large")

REQUIRED_KEYS = ("image_root", "ann_root", "dataset", "backbone", "batch_size_image", "batch_size_text",
                 "batch_size_total")
"""Keys every config needs; :data:`BACKBONE_KEYS` adds the ones the backbone reads."""
BACKBONE_KEYS = {
    "blip": ("pretrained", "vit", "vit_grad_ckpt", "vit_ckpt_layer", "image_size"),
    "clip": (),
    "clip_reid": ("pretrained",),
}
PATH_KEYS = ("image_root", "ann_root", "pretrained")
UPSTREAM_MED_CONFIG = "configs/med_config.json"


class ConfigError(InputError, ValueError):
    """A config that is not a valid TCR config; the message names the file and the offending key."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's exponent floats (``5e-4``), as ruamel reads them upstream."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def parse_config(text: str, source: str) -> dict[str, Any]:
    """Parse config YAML text (from ``source``, used in messages) into a dict; it must be a mapping."""
    try:
        config = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML ({error})") from error
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: expected a mapping of config keys, got {type(config).__name__}")
    return config


def _check_choice(config: dict[str, Any], key: str, valid: tuple[str, ...], source: str) -> None:
    if config[key] not in valid:
        raise ConfigError(f"{source}: unknown {key} {config[key]!r}; valid values: {', '.join(valid)}")


def validate_config(config: dict[str, Any], source: str) -> None:
    """Check required keys, names and types; errors name ``source``, the key and, for names, the valid values."""
    missing = [key for key in REQUIRED_KEYS if key not in config]
    if not missing:
        _check_choice(config, "backbone", BACKBONES, source)
        needed = list(BACKBONE_KEYS[config["backbone"]])
        if config["backbone"] == "clip" and config.get("dataset") == "fashion_gen_detail":
            needed.append("pretrained")
        missing = [key for key in needed if key not in config]
    if missing:
        keys = ", ".join(repr(key) for key in missing)
        raise ConfigError(f"{source}: missing required key{'s' if len(missing) > 1 else ''} {keys}")
    _check_choice(config, "dataset", DATASETS, source)
    if config["backbone"] == "blip":
        _check_choice(config, "vit", VITS, source)
    for key in PATH_KEYS:
        if key in config and not isinstance(config[key], str):
            raise ConfigError(f"{source}: {key} must be a path string, got {config[key]!r}")
    for key in ("batch_size_image", "batch_size_text", "batch_size_total"):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{source}: {key} must be a positive integer, got {value!r}")


def read_config_source(config: PathLike) -> tuple[str, str]:
    """``(yaml text, source description)`` for a config file path or an upstream config name."""
    path = Path(config)
    if path.is_file():
        return path.read_text(encoding="utf-8"), str(path)
    try:
        return config_text(str(config)), f"config {normalize_name(str(config))} (generated from tcr/configs/tree.py)"
    except KeyError as error:
        raise FileNotFoundError(error.args[0]) from None


def load_config(config: PathLike, data_root: PathLike | None = None,
                weights_root: PathLike | None = None) -> dict[str, Any]:
    """Load and validate a config file or name, then re-root its ``./dataset`` and ``./weights`` paths."""
    text, source = read_config_source(config)
    parsed = parse_config(text, source)
    validate_config(parsed, source)
    return resolve_paths(parsed, data_root, weights_root)


def _reroot(value: str, folder: str, root: PathLike) -> str:
    relative = value[2:] if value.startswith("./") else value
    if relative == folder:
        return str(root)
    if relative.startswith(folder + "/"):
        return os.path.join(str(root), relative[len(folder) + 1:])
    return value


def resolve_paths(config: dict[str, Any], data_root: PathLike | None = None,
                  weights_root: PathLike | None = None) -> dict[str, Any]:
    """A copy of ``config`` whose ``image_root``/``ann_root``/``pretrained`` under ``./dataset`` (``./weights``)
    are moved under ``data_root`` (``weights_root``). ``None`` keeps a path relative to the working directory, as
    upstream; an empty ``ann_root`` and absolute paths are left alone."""
    resolved = dict(config)
    for key in PATH_KEYS:
        value = resolved.get(key)
        if not value:
            continue
        if data_root is not None:
            value = _reroot(value, "dataset", data_root)
        if weights_root is not None:
            value = _reroot(value, "weights", weights_root)
        resolved[key] = value
    return resolved


def resolve_med_config(path: PathLike | None = None) -> Path:
    """The BLIP MED (BERT) config file: an existing ``path``, else for ``None`` or upstream's relative
    ``configs/med_config.json`` the copy in ``common/blip/configs/``."""
    if path is not None and Path(path).is_file():
        return Path(path)
    if path is None or normalize_name(str(path)) == normalize_name(UPSTREAM_MED_CONFIG):
        return MED_CONFIG_PATH
    raise FileNotFoundError(f"{path}: MED config not found (the default is {MED_CONFIG_PATH})")


def dump_config(config: dict[str, Any], path: PathLike) -> Path:
    """Write ``config`` as YAML in its key order (the ``config.yaml`` a run leaves in its output folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False, default_flow_style=False), encoding="utf-8")
    return path
