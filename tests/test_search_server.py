"""The search demo's server over HTTP (``search_demo.py``, ``common/search``) with Bi-BLIP4CIR's tiny BLIP on
synthetic CIRR: the page, the search endpoint against the validation ranking, click-to-refine, uploads, unknown ids,
path traversal and the feature cache across restarts."""
import http.client
import io
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from PIL import Image

from bi_blip4cir import validate
from bi_blip4cir.data import build_query_sets
from bi_blip4cir.models import load_evaluation_models
from common.blip import BlipImageEncoder
from common.blip.config import ViTConfig
from common.blip.tiny import write_tiny_blip_files
from common.cir.combiner import Combiner
from common.errors import InputError
from common.cir.data import dataset_root, relative_dataset
from common.cir.evaluation import query_scores
from common.cir.frozen import encode_texts
from search_demo import build_server, parse_args
from common.search.engine import GalleryImage, SearchEngine
from common.synthetic.scenes import vocabulary
from common.synthetic.writers import write_cirr
from common.training.checkpoint import save_model

REPO = Path(__file__).resolve().parent.parent
VIT = ViTConfig(patch_size=8, width=32, depth=1, heads=2)
TOP_K = 5


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """Synthetic CIRR and a tiny BLIP; ``model_args`` are validate.py's flags for them."""
    root = tmp_path_factory.mktemp("search")
    data = root / "data"
    write_cirr(data, {"train": 2, "val": 3, "test1": 9}, 3, seed=0)
    blip = write_tiny_blip_files(root / "weights", VIT, extra_words=vocabulary())
    model_args = ["--dataset", "CIRR", "--combining-function", "sum", "--data-root", str(data), *blip.flags(),
                  "--num-workers", "0", "--device", "cpu"]
    return {"root": root, "data": data, "model_args": model_args, "cache": root / "cache"}


def start(args: list[str]):
    """A server of ``search_demo.py args`` on a free port, serving in a thread."""
    server = build_server(parse_args(["--paper", "bi_blip4cir", "--port", "0", *args]))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def server(tiny):
    server = start([*tiny["model_args"], "--cache-dir", str(tiny["cache"]), "--top-k", str(TOP_K),
                    "--max-upload-mb", "0.05"])
    yield server
    server.shutdown()
    server.server_close()


def request(server, path: str, body: bytes | None = None, content_type: str | None = None) -> tuple[int, bytes, str]:
    """(status, body, content type) of a GET (or a POST with ``body``)."""
    headers = {"Content-Type": content_type} if content_type else {}
    req = urllib.request.Request(server.url.rstrip("/") + path, data=body, headers=headers,
                                 method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as answer:
            return answer.status, answer.read(), answer.headers["Content-Type"]
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers["Content-Type"]


def search(server, reference, caption: str, **extra) -> tuple[int, dict]:
    status, body, _ = request(server, "/api/search", json.dumps({"reference": reference, "caption": caption,
                                                                 **extra}).encode(), "application/json")
    return status, json.loads(body)


def png_bytes(size=(24, 24), color=(200, 30, 30), fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


def gallery_id(server, name: str) -> int:
    return next(i for i, image in enumerate(server.engine.model.images) if image.name == name)


def test_page_and_info(server):
    status, body, content_type = request(server, "/")
    assert status == 200 and content_type.startswith("text/html")
    page = body.decode()
    for element in ('id="gallery"', 'id="caption"', 'id="results"', 'id="upload"', "/api/search"):
        assert element in page
    status, body, _ = request(server, "/api/info")
    info = json.loads(body)
    assert status == 200 and info["paper"] == "bi_blip4cir" and info["dataset"] == "cirr"
    assert info["stages"] == ["composed"] and info["top_k"] == TOP_K and info["images"] == 18
    assert server.server_address[0] == "127.0.0.1"


def test_gallery_paging_and_name_search(server):
    status, body, _ = request(server, "/api/gallery?offset=4&limit=3")
    page = json.loads(body)
    assert status == 200 and page["total"] == 18 and [item["id"] for item in page["items"]] == [4, 5, 6]
    name = page["items"][1]["name"]
    found = json.loads(request(server, f"/api/gallery?q={name.upper()}")[1])
    assert found["total"] == 1 and found["items"][0]["id"] == 5
    status, body, _ = request(server, "/api/image/5")
    assert status == 200 and json.loads(body) == {**page["items"][1], "id": 5}
    assert request(server, "/api/image/18")[0] == 404
    assert request(server, "/api/gallery?limit=0")[0] == 400
    assert request(server, "/api/gallery?offset=x")[0] == 400


@pytest.fixture(scope="module")
def combiner_args(tiny) -> list[str]:
    """validate.py's flags for the tiny BLIP with a random Combiner."""
    torch.manual_seed(0)
    path = save_model("combiner", 0, Combiner(16, 32, 64), tiny["root"])
    return [*tiny["model_args"], "--combining-function", "combiner", "--combiner-path", str(path),
            "--feature-dim", "16", "--projection-dim", "32", "--hidden-dim", "64"]


@pytest.fixture(params=["sum", "combiner"])
def composed(request, tiny, server) -> tuple[list[str], object]:
    """(validate.py's flags, a server of them): the normalised sum (the module's server), or the Combiner."""
    if request.param == "sum":
        yield tiny["model_args"], server
        return
    flags = request.getfixturevalue("combiner_args")
    other = start([*flags, "--cache-dir", str(tiny["cache"]), "--top-k", str(TOP_K)])
    yield flags, other
    other.shutdown()
    other.server_close()


def test_search_equals_the_validation_ranking(composed):
    """Each val query typed into the page (its raw caption) retrieves the validation path's top-k, in order
    (``query_scores`` of validate.py's models, query sets and marked captions; the reference left out as CIRR's
    recalls do), with the same scores; with the sum and with a Combiner."""
    flags, server = composed
    args = validate.build_parser().parse_args(flags)
    device = torch.device("cpu")
    image_encoder, text_encoder, combine = load_evaluation_models(args, device)
    root = dataset_root("cirr", args.data_root)
    (query_set,) = build_query_sets("cirr", "val", root, image_encoder, device, args)
    scores = query_scores(query_set, encode_texts(text_encoder, query_set.captions), combine)
    raw = relative_dataset("cirr", root, "val", None)
    assert len(raw) >= 6
    for i in range(len(raw)):
        reference, _, caption, _ = raw[i]
        row = scores[i].clone()
        row[query_set.reference_idx[i]] = -torch.inf
        expected = row.topk(TOP_K)
        status, answer = search(server, gallery_id(server, reference), caption)
        assert status == 200
        assert [r["name"] for r in answer["results"]] == [query_set.gallery_names[j] for j in expected.indices]
        assert [r["score"] for r in answer["results"]] == pytest.approx(expected.values.tolist(), abs=1e-5)
        assert [r["rank"] for r in answer["results"]] == list(range(1, TOP_K + 1))


def test_click_to_refine(server):
    """A result chosen as the next reference is searched from, its image served by id, and left out of its own
    results."""
    _, first = search(server, 0, "add a red circle")
    clicked = first["results"][0]
    status, image, content_type = request(server, clicked["url"])
    assert status == 200 and content_type == "image/png"
    assert image == server.engine.model.images[clicked["id"]].path.read_bytes()
    status, second = search(server, clicked["id"], "remove the blue square")
    assert status == 200 and second["reference"] == clicked["id"] and len(second["results"]) == TOP_K
    assert clicked["id"] not in [r["id"] for r in second["results"]]


def test_upload_then_search(server):
    data = png_bytes()
    status, body, _ = request(server, "/api/upload", data, "image/png")
    token = json.loads(body)["upload"]
    assert status == 200 and token.startswith("u")
    assert request(server, f"/upload/{token}")[1] == data
    status, answer = search(server, token, "add a red circle")
    assert status == 200 and answer["reference"] == token and len(answer["results"]) == TOP_K
    status, body, _ = request(server, "/api/upload", png_bytes(fmt="JPEG"), "image/jpeg")
    assert status == 200 and search(server, json.loads(body)["upload"], "add a red circle")[0] == 200


@pytest.mark.parametrize("body, content_type, status, words", [
    (b"hello, not an image", "image/png", 400, "not a readable JPEG or PNG"),
    (png_bytes(), "text/plain", 400, "content type 'text/plain' is not accepted"),
    (png_bytes(), None, 400, "send image/jpeg or image/png"),
    (png_bytes(), "image/jpeg", 400, "is a PNG file, declared as image/jpeg"),
    (png_bytes(fmt="GIF"), "image/png", 400, "not a readable JPEG or PNG"),
    (png_bytes(fmt="BMP")[:40], "image/png", 400, "not a readable"),
    (b"\0" * 60_000, "image/png", 413, "at most 52428 bytes"),
    (b"\0" * 200_000, "image/png", 413, "at most 52428 bytes"),
])
def test_bad_uploads_are_refused_with_a_message(server, body, content_type, status, words):
    kept = dict(server.engine.uploads)
    answer_status, answer, answer_type = request(server, "/api/upload", body, content_type)
    assert answer_status == status and answer_type == "application/json"
    assert words in json.loads(answer)["error"]
    assert server.engine.uploads == kept


def test_an_oversized_upload_is_refused_before_it_is_read(server):
    """A Content-Length over the limit is answered 413 at once: the body (here never sent) is not awaited."""
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=10)
    connection.putrequest("POST", "/api/upload")
    connection.putheader("Content-Type", "image/png")
    connection.putheader("Content-Length", str(10 ** 9))
    connection.endheaders()
    answer = connection.getresponse()
    assert answer.status == 413 and "at most 52428 bytes" in json.loads(answer.read())["error"]
    connection.close()


def test_an_upload_without_length_is_refused(server):
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=10)
    connection.putrequest("POST", "/api/upload")
    connection.putheader("Content-Type", "image/png")
    connection.endheaders()
    answer = connection.getresponse()
    assert answer.status == 411 and "needs a Content-Length" in json.loads(answer.read())["error"]
    connection.close()


@pytest.mark.parametrize("reference, caption, extra, status, words", [
    (10_000, "x", {}, 404, "unknown gallery id 10000"),
    (-1, "x", {}, 404, "unknown gallery id -1"),
    ("u999", "x", {}, 404, "unknown upload 'u999'"),
    ("../../etc/passwd", "x", {}, 404, "unknown upload"),
    (None, "x", {}, 400, "'reference' must be"),
    (True, "x", {}, 400, "'reference' must be"),
    (0, "  ", {}, 400, "'caption' must be"),
    (0, "x", {"stage": "stage2"}, 400, "unknown stage 'stage2'"),
    (0, "x", {"top_k": 0}, 400, "'top_k' must be"),
])
def test_bad_searches_are_refused(server, reference, caption, extra, status, words):
    answer_status, answer = search(server, reference, caption, **extra)
    assert answer_status == status and words in answer["error"]


def test_malformed_search_body(server):
    assert request(server, "/api/search", b"{not json", "application/json")[0] == 400
    assert request(server, "/api/search", b"[1, 2]", "application/json")[0] == 400
    assert request(server, "/api/search", b"{}" + b" " * 70_000, "application/json")[0] == 413
    assert request(server, "/api/nothing", b"{}", "application/json")[0] == 404


@pytest.mark.parametrize("path", [
    "/image/18", "/image/-1", "/image/1.0", "/image/0/../../etc/passwd", "/image/../../etc/passwd",
    "/image/..%2F..%2Fetc%2Fpasswd", "/%2e%2e/%2e%2e/etc/passwd", "/../../etc/passwd", "/image/0%00.png",
    "/upload/../image/0", "/upload/u0", "/weights/model_base.pth", "/data/cirr_dataset/cirr/captions/cap.rc2.val.json",
    "/image/%30", "//etc/passwd",
])
def test_only_gallery_images_by_id_are_served(server, path):
    status, body, content_type = request(server, path)
    assert status == 404 and content_type == "application/json" and b"root:" not in body


def test_second_start_reads_the_cache_and_writes_nowhere_else(tiny, tmp_path, monkeypatch):
    """A first start encodes the 18 gallery images into --cache-dir; a second one reads them (no image encoded)
    and serves the same results. Nothing is written outside --cache-dir, uploads included."""
    encoded = []
    forward = BlipImageEncoder.forward
    monkeypatch.setattr(BlipImageEncoder, "forward", lambda self, images: encoded.append(len(images)) or
                        forward(self, images))
    monkeypatch.chdir(tmp_path)
    before = {path: path.stat().st_mtime_ns for path in tiny["root"].rglob("*")}
    cache = tmp_path / "cache"
    results = []
    for expected_encoded in (18, 0):
        encoded.clear()
        server = start([*tiny["model_args"], "--cache-dir", str(cache)])
        try:
            assert sum(encoded) == expected_encoded
            assert request(server, "/api/upload", png_bytes(), "image/png")[0] == 200
            results.append(search(server, 3, "add a red circle")[1]["results"])
        finally:
            server.shutdown()
            server.server_close()
    assert results[0] == results[1]
    assert len(list(cache.glob("features_*.pt"))) == 1
    assert {path.relative_to(tmp_path) for path in tmp_path.rglob("*")} == {Path("cache"), *(
        path.relative_to(tmp_path) for path in cache.glob("*"))}
    assert {path: path.stat().st_mtime_ns for path in tiny["root"].rglob("*")
            if not path.is_relative_to(tiny["cache"])} == {p: t for p, t in before.items()
                                                            if not p.is_relative_to(tiny["cache"])}


def test_busy_port_is_reported_before_the_model_loads(tiny, server, monkeypatch):
    monkeypatch.setattr("bi_blip4cir.search.build_model", lambda *args: pytest.fail("the model was loaded"))
    busy = ["--paper", "bi_blip4cir", "--port", str(server.server_address[1]), *tiny["model_args"]]
    with pytest.raises(InputError, match=f"--port {server.server_address[1]}: cannot listen there"):
        build_server(parse_args(busy))


class Reversed:
    """A fake two-stage model: stage 1 prefers low ids, stage 2 reverses stage 1's candidates."""

    stages = ("stage1", "stage2")

    def __init__(self, n: int):
        self.images = [GalleryImage(f"img{i}", "a" if i < n - 2 else "b", Path(f"img{i}.png")) for i in range(n)]
        self.gallery = torch.arange(n, dtype=torch.float32).unsqueeze(1)

    def encode_image(self, image):
        return torch.zeros(1, 1)

    def scores(self, reference, caption):
        return -self.gallery[:, 0]

    def rescore(self, reference, caption, candidates):
        return candidates.float()


def test_engine_reranks_the_first_k_of_stage1_within_the_group():
    """Stage 2 re-orders stage 1's first ``rerank_depth`` candidates (the reference and other groups left out)."""
    engine = SearchEngine(Reversed(10), rerank_depth=4)
    assert [r.id for r in engine.search(0, "x", 3)] == [1, 2, 3]
    assert [r.id for r in engine.search(0, "x", 3, "stage2")] == [4, 3, 2]
    assert [r.id for r in engine.search(0, "x", 6, "stage2")] == [6, 5, 4, 3, 2, 1]
    assert [r.id for r in engine.search(9, "x", 3, "stage2")] == [8]


def test_help_without_and_with_a_paper():
    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "search_demo.py", *argv], cwd=REPO, capture_output=True, text=True,
                              timeout=120)

    general = run("--help")
    assert general.returncode == 0 and "--paper {bi_blip4cir,mlcl,reranking_cir}" in general.stdout
    assert "--combining-function" not in general.stdout
    paper = run("--paper", "reranking_cir", "--help")
    assert paper.returncode == 0 and "--stage2-path" in paper.stdout and "--cache-dir" in paper.stdout
    missing = run("--dataset", "CIRR")
    assert missing.returncode == 2 and "--paper" in missing.stderr
