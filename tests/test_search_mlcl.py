"""MLCL in the search demo on synthetic FashionIQ with the tiny CLIP: each category is its own gallery, as in
validate.py, and a query typed into the demo retrieves validate.py's ranking (reference left out)."""
import json
import threading
import urllib.request

import pytest
import torch

from common.cir.evaluation import query_scores
from common.cir.frozen import encode_texts
from common.clip import write_tiny_clip
from search_demo import build_server, parse_args
from common.synthetic.writers import write_fashioniq
from mlcl import validate
from mlcl.data import query_sets
from mlcl.models import ImageEncoder, TextEncoder, evaluation_models

TOP_K = 4


@pytest.fixture(scope="module")
def flags(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("search_mlcl")
    write_fashioniq(root / "data", {"train": 4, "val": 6, "test": 2}, {"train": 2, "val": 3, "test": 2}, seed=0)
    clip_file = write_tiny_clip(root / "clip_rn.pt", kind="rn")
    return ["--dataset", "FashionIQ", "--combining-function", "sum", "--data-root", str(root / "data"),
            "--clip-model-name", str(clip_file), "--num-workers", "0", "--device", "cpu",
            "--cache-dir", str(root / "cache")]


def test_fashioniq_categories_rank_as_validate(flags):
    server = build_server(parse_args(["--paper", "mlcl", "--port", "0", "--top-k", str(TOP_K), *flags]))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        args = validate.build_parser().parse_args(flags)
        device = torch.device("cpu")
        model, info, combine = evaluation_models(args, device)
        sets = query_sets(args, "fashioniq", "val", ImageEncoder(model, device), device, info["input_resolution"])
        ids = {(image.group, image.name): i for i, image in enumerate(server.engine.model.images)}
        assert [image.group for image in server.engine.model.images] == [s.name for s in sets for _ in s.gallery_names]
        for query_set in sets:
            scores = query_scores(query_set, encode_texts(TextEncoder(model, device), query_set.captions), combine)
            for i, caption in enumerate(query_set.captions):
                row = scores[i].clone()
                row[query_set.reference_idx[i]] = -torch.inf
                reference = ids[query_set.name, query_set.gallery_names[query_set.reference_idx[i]]]
                body = json.dumps({"reference": reference, "caption": caption}).encode()
                req = urllib.request.Request(server.url + "api/search", data=body)
                with urllib.request.urlopen(req, timeout=60) as answer:
                    results = json.load(answer)["results"]
                assert [(r["group"], r["name"]) for r in results] == [
                    (query_set.name, query_set.gallery_names[j]) for j in row.topk(TOP_K).indices]
    finally:
        server.shutdown()
        server.server_close()
