"""Write TCR's upstream ``configs/`` tree (587 YAML files) from the template in :mod:`tcr.configs.tree`.

    python tcr/configs/make_configs.py --out configs          # configs/QS/i2t/coco_image_c/COCO_IP_fog_3.yaml, ...
    python tcr/configs/make_configs.py --out my_configs --only QS/t2i

``tcr/main.py --config`` also takes a config name (``QS/i2t/coco_image_c/COCO_IP_fog_3``) without any file, so
writing the tree is needed only to edit copies.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from common.args import HelpFormatter
from tcr.configs.tree import config_names, config_text


def write_tree(out: Path, only: str = "") -> list[Path]:
    """Write every config whose name starts with ``only`` as ``out/<name>.yaml``; return the written paths."""
    names = [name for name in config_names() if name.startswith(only)]
    if not names:
        folders = sorted({name.split("/")[0] for name in config_names()})
        raise ValueError(f"no config name starts with {only!r}; top-level folders: {', '.join(folders)}")
    written = []
    for name in names:
        path = out / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(config_text(name), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--out", type=Path,
                        help="folder that receives the tree (created if missing; required unless --list)")
    parser.add_argument("--only", default="",
                        help="write only names with this prefix, e.g. QS/t2i or Reid (default: all 587)")
    parser.add_argument("--list", action="store_true", help="print the config names instead of writing files")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(name for name in config_names() if name.startswith(args.only)))
        return
    if args.out is None:
        parser.error("--out is required unless --list is given")
    try:
        written = write_tree(args.out, args.only)
    except ValueError as error:
        parser.error(str(error))
    print(f"wrote {len(written)} config files under {args.out}")


if __name__ == "__main__":
    main()
