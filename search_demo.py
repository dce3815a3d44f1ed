"""A local composed-image search page over a CIR validation gallery, ranked by one paper's model (the server, the
engine and the page are in ``common/search``; each paper's part in ``<paper>/search.py``).

    python search_demo.py --paper bi_blip4cir --dataset CIRR --data-root DIR <the paper's model flags>

'--paper NAME --help' lists that paper's model flags (those of its validate.py). Gallery features are computed once
into --cache-dir and read back at the next start; uploads stay in memory; nothing else is written.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

from common.args import HelpFormatter, setup_runtime
from common.io import check_writable_root
from common.runtime import run_main
from common.search.engine import SearchEngine
from common.search.server import MAX_TOP_K, SearchServer, ServerInfo

PAPERS = {"bi_blip4cir": "bi_blip4cir.search", "mlcl": "mlcl.search", "reranking_cir": "reranking_cir.search"}
SPLIT = "val"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/vlr-search`` (``~/.cache/vlr-search`` without it)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vlr-search"


def adapter(paper: str) -> ModuleType:
    """The ``<paper>/search.py`` module: ``add_args(parser)`` and ``build_model(args, device)``."""
    return importlib.import_module(PAPERS[paper])


def add_server_args(parser: argparse.ArgumentParser) -> None:
    """The flags every paper shares: which paper, where to listen, how many results, the upload limit."""
    group = parser.add_argument_group("search demo")
    group.add_argument("--paper", required=True, choices=tuple(PAPERS),
                       help="whose model ranks the gallery; '--paper NAME --help' lists its model flags")
    group.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only)")
    group.add_argument("--port", type=int, default=8000, help="port to listen on; 0 picks a free one (default 8000)")
    group.add_argument("--top-k", type=int, default=10, help=f"results shown per query, 1 to {MAX_TOP_K} (default 10)")
    group.add_argument("--max-upload-mb", type=float, default=5.0,
                       help="largest accepted upload in MB (default 5); uploads are kept in memory only")


def set_cache_default(parser: argparse.ArgumentParser) -> None:
    """``--cache-dir`` (the paper's flag, or ours) defaults to ``default_cache_dir()``: the demo always caches."""
    for action in parser._actions:
        if action.dest == "cache_dir":
            action.default = str(default_cache_dir())
            action.help = ("folder of the gallery-feature cache, the only place the demo writes: a second start "
                           "with the same checkpoints reads the features instead of encoding the images "
                           f"(default {default_cache_dir()})")
            return
    parser.add_argument("--cache-dir", default=str(default_cache_dir()),
                        help="folder of the gallery-feature cache, the only place the demo writes "
                             f"(default {default_cache_dir()})")


def build_parser(paper: str | None = None) -> argparse.ArgumentParser:
    """The full parser for ``paper`` (only the shared flags without one)."""
    parser = argparse.ArgumentParser(prog="search_demo.py", description=__doc__, formatter_class=HelpFormatter)
    add_server_args(parser)
    if paper in PAPERS:
        adapter(paper).add_args(parser)
        set_cache_default(parser)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read ``--paper`` first, then every flag with that paper's parser."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--paper", choices=tuple(PAPERS))
    known, _ = first.parse_known_args(argv)
    parser = build_parser(known.paper)
    args = parser.parse_args(argv)
    if not 1 <= args.top_k <= MAX_TOP_K:
        parser.error(f"--top-k must be from 1 to {MAX_TOP_K}, got {args.top_k}")
    if args.max_upload_mb <= 0:
        parser.error(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    return args


def build_server(args: argparse.Namespace) -> SearchServer:
    """Bind the server (not yet serving), then load the model and index the gallery (cached)."""
    check_writable_root(args.cache_dir, "--cache-dir")
    info = ServerInfo(args.paper, args.dataset, SPLIT, args.top_k, int(args.max_upload_mb * 1024 * 1024))
    server = SearchServer(info, args.host, args.port)
    try:
        dist = setup_runtime(args)
        model = adapter(args.paper).build_model(args, dist.device)
    except BaseException:
        server.server_close()
        raise
    server.engine = SearchEngine(model, rerank_depth=getattr(args, "k", 50))
    return server


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    server = build_server(args)
    print(f"serving {len(server.engine)} {args.dataset} {SPLIT} images with {args.paper} on {server.url} "
          "(Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
