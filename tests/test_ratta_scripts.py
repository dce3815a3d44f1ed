"""The RA-TTA scripts on a synthetic DTD with a tiny random CLIP: defaults, pre-extraction (formats, seeds,
resume, torchrun), after-extraction (log, JSON, loop vs batched), the DB builder and bad-input errors."""
import json
import os
import pickle
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from common.clip import write_tiny_clip
from common.synthetic.textures import write_descriptions, write_dtd
from ratta import after_extract, pre_extract, ratta_build_db
from ratta.embeddings import load_embeddings
from ratta.retrieval import VectorIndex
from ratta.vector_db import load_db

REPO = Path(__file__).resolve().parent.parent
AS = 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ratta")
    write_dtd(root / "data", test_per_class=1, train_per_class=1, classes=tuple(range(47)))
    weights = write_tiny_clip(root / "clip.pt", kind="vit")
    write_descriptions(root / "descriptions" / "CuPL_prompts_dtd.json")
    model = ["--net_name", "test/tiny", "--weights", str(weights), "--device", "cpu"]
    return {"root": root, "model": model}


def pre_args(setup, *extra, save_dir="emb"):
    argv = ["--root", str(setup["root"] / "data"), "--dataset", "dtd", "--augmentation_size", str(AS),
            "--save_dir", str(setup["root"] / save_dir), "--num_workers", "0", "--chunk_size", "10",
            *setup["model"], *extra]
    return pre_extract.build_parser(False).parse_args(argv)


@pytest.fixture(scope="module")
def extracted(setup):
    out = pre_extract.run(pre_args(setup), imagenet=False)
    rows = np.random.default_rng(0).normal(size=(60, 16)).astype(np.float32)
    np.save(setup["root"] / "rows.npy", rows)
    ratta_build_db.main(["--from_embeddings", str(setup["root"] / "rows.npy"), "--dataset", "dtd",
                         "--net_name", "test/tiny", "--db_root", str(setup["root"] / "db")])
    return out


def after_args(setup, *extra, imagenet=False):
    argv = ["--db_root", str(setup["root"] / "db"), "--tst_embedding_root", str(setup["root"] / "emb"),
            "--dataset", "dtd", "--seed", "0", "--augmentation_size", str(AS), "--output_dir",
            str(setup["root"] / "logs"), "--descriptions_dir", str(setup["root"] / "descriptions"),
            "--top_k_s", "5", *setup["model"], *extra]
    return after_extract.build_parser(imagenet).parse_args(argv)


UPSTREAM_DEFAULTS = {  # --root, --dataset and --db_root have no default (required here; upstream crashed without)
    "pre": {"net_name": "ViT-B/16", "seed": 0, "gpu": None, "max_threads": 4, "save_dir": "./test_embedding",
            "augmentation_size": 100},
    "after": {"tst_embedding_root": "./test_embedding", "database": "LAION2B", "net_name": "ViT-B/16", "seed": 42,
              "gpu": None, "max_threads": 4, "output_dir": "./logs/ratta", "augmentation_size": 100, "top_k_d": 20,
              "top_k_s": 20, "qthres": 0.75},
}


def test_cli_defaults_equal_upstream():
    for imagenet, seed, q in ((False, 0, 0.75), (True, 42, 0.90)):
        pre = vars(pre_extract.build_parser(imagenet).parse_args(["--root", "data", "--dataset", "x"]))
        assert {key: pre[key] for key in UPSTREAM_DEFAULTS["pre"]} == {**UPSTREAM_DEFAULTS["pre"], "seed": seed}
        after = vars(after_extract.build_parser(imagenet).parse_args(["--db_root", "db", "--dataset", "x"]))
        assert {key: after[key] for key in UPSTREAM_DEFAULTS["after"]} == {**UPSTREAM_DEFAULTS["after"], "qthres": q}
        assert (after["impl"], after["min_desc"], after["ot_reg"], after["ot_iters"], after["ot_stop"]) == \
            ("batched", 5, 0.1, 100, 1e-2)
        assert (after["db_subsample"], after["db_subsample_mode"]) == (0.75, "randint")
    build = vars(ratta_build_db.build_parser().parse_args(["--dataset", "dtd", "--image_root", "web"]))
    assert (build["database"], build["db_root"], build["batch_size"], build["num_workers"], build["skip_bad"]) == \
        ("LAION2B", "./db_embedding", 256, 4, False)


def test_pre_extract_layout_and_values(setup, extracted):
    assert extracted == setup["root"] / "emb" / "test_tiny" / "0" / "dtd.pth"
    records = torch.load(extracted, weights_only=True)
    assert isinstance(records, list) and len(records) == 47
    x, views, y = records[0]
    assert x.shape == (1, 16) and views.shape == (AS, 16) and y.shape == (1,) and y.dtype == torch.long
    x, views, y = load_embeddings(extracted, AS)
    torch.testing.assert_close(x.norm(dim=1), torch.ones(47), atol=1e-3, rtol=0)
    torch.testing.assert_close(views.norm(dim=2), torch.ones(47, AS), atol=1e-3, rtol=0)
    assert sorted(y.tolist()) == list(range(47))
    assert y.tolist() != list(range(47)), "upstream visits the test set in shuffled order"
    assert not torch.equal(views[:, 0], views[:, 1])
    names = json.loads((extracted.parent / "dtd.classnames.json").read_text())
    assert names[:3] == ["banded", "blotchy", "braided"] and len(names) == 47


def test_pre_extract_repeatable_and_stacked_equal(setup, extracted):
    again = pre_extract.run(pre_args(setup, "--save_format", "stacked", save_dir="emb_stacked"), imagenet=False)
    stacked = torch.load(again, weights_only=True)
    assert stacked["aug_size"] == AS and stacked["net_name"] == "test/tiny"
    for a, b in zip(load_embeddings(extracted), load_embeddings(again)):
        assert torch.equal(a, b)


def test_pre_extract_resumes_after_a_kill(setup, extracted):
    args = pre_args(setup, save_dir="emb_resume")
    assert pre_extract.run(args, imagenet=False, max_new_chunks=2) is None
    partial = setup["root"] / "emb_resume" / "test_tiny" / "0" / "dtd.pth.partial"
    assert len(list(partial.glob("chunk_*.pt"))) == 2
    assert not (partial.parent / "dtd.pth").exists()
    out = pre_extract.run(args, imagenet=False)
    assert not partial.exists()
    for a, b in zip(load_embeddings(extracted), load_embeddings(out)):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="other settings"):
        partial.mkdir()
        (partial / "meta.json").write_text(json.dumps({"aug_size": 99}))
        pre_extract.run(args, imagenet=False)


@pytest.mark.slow
def test_torchrun_two_processes_write_the_same_file(setup, extracted):
    save_dir = setup["root"] / "emb_ddp"
    argv = ["--root", str(setup["root"] / "data"), "--dataset", "dtd", "--augmentation_size", str(AS),
            "--save_dir", str(save_dir), "--num_workers", "0", "--chunk_size", "10", *setup["model"]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLR_NO_PROGRESS": "1"}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
                    "ratta/ratta_pre_extract.py", *argv], cwd=REPO, env=env, check=True, capture_output=True)
    out = save_dir / "test_tiny" / "0" / "dtd.pth"
    for a, b in zip(load_embeddings(extracted), load_embeddings(out)):
        assert torch.equal(a, b)
    one = after_extract.run(after_args(setup), imagenet=False)
    two = after_extract.run(after_args(setup, "--tst_embedding_root", str(save_dir)), imagenet=False)
    assert one["predictions"] == two["predictions"] and one["ratta"] == two["ratta"]


def test_after_extract_log_json_and_impls_agree(setup, extracted):
    results_file = setup["root"] / "results.json"
    sets = ["--min_desc", "2"]  # the random tiny CLIP rarely gathers 5 descriptions of one class
    batched = after_extract.run(after_args(setup, "--results_json", str(results_file), "--batch_size", "7", *sets),
                                imagenet=False)
    log = (setup["root"] / "logs" / "test_tiny" / "dtd_log.txt").read_text().splitlines()
    messages = [line.split(" - RATTA - INFO - ", 1)[1] for line in log]
    assert messages[:5] == ["Seed: 0", f"Augmentation size: {AS}", "# descriptions: 20", "# samples: 5",
                            "Q threshold: 0.75"]
    assert messages[5] == "Database size: (60, 16)" and messages[6] == f"Array size: {60 * 16 * 2 / 1024 ** 2:.2f} MB"
    assert messages[-4] == "Dataset: dtd" and messages[-1] == "Exp end"
    cupl = re.fullmatch(r"CuPL - Top-1 acc: (\S+) \t Top-5 acc: (\S+)", messages[-3])
    ratta = re.fullmatch(r"RA-TTA - Top-1 acc: (\S+) \t Top-5 acc: (\S+)", messages[-2])
    saved = json.loads(results_file.read_text())
    assert float(cupl[1]) == saved["zero_shot"]["top1"] and float(ratta[2]) == saved["ratta"]["top5"]
    labels = np.array(saved["predictions"]["labels"])
    assert saved["ratta"]["top1"] == pytest.approx(100 * np.mean(np.array(saved["predictions"]["ratta"]) == labels),
                                                   abs=1e-4)
    loop = after_extract.run(after_args(setup, "--impl", "loop", *sets), imagenet=False)
    single = after_extract.run(after_args(setup, "--batch_size", "1", *sets), imagenet=False)
    assert batched["predictions"] == loop["predictions"] == single["predictions"]
    assert batched["ratta"] == loop["ratta"] == single["ratta"]
    assert batched["mean_sets_per_sample"] > 1
    assert batched["predictions"]["ratta"] != batched["predictions"]["zero_shot"]


def test_bad_inputs_name_the_problem(setup, extracted, tmp_path):
    with pytest.raises(ValueError, match="valid keys: .*dtd"):
        after_extract.run(after_args(setup, "--dataset", "dtdx"), imagenet=False)
    with pytest.raises(ValueError, match="valid keys: imagenet_1k"):
        after_extract.run(after_args(setup, imagenet=True), imagenet=True)
    with pytest.raises(ValueError, match=r"holds 4 views per image but --augmentation_size is 5"):
        after_extract.run(after_args(setup, "--augmentation_size", "5"), imagenet=False)
    bad = tmp_path / "descriptions"
    bad.mkdir()
    table = json.loads((setup["root"] / "descriptions" / "CuPL_prompts_dtd.json").read_text())
    del table["striped"], table["woven"]
    (bad / "CuPL_prompts_dtd.json").write_text(json.dumps(table))
    with pytest.raises(ValueError, match=r"CuPL_prompts_dtd.json: no descriptions for 2 classes: \['striped', 'woven'"):
        after_extract.run(after_args(setup, "--descriptions_dir", str(bad)), imagenet=False)
    db = tmp_path / "db"
    db.mkdir()
    with open(db / "LAION2B_dtd_aux_test_tiny", "wb") as handle:
        pickle.dump({"embedding": np.ones((30, 16), np.float32)}, handle)
    with pytest.raises(PermissionError, match="--trust_pickle"):
        after_extract.run(after_args(setup, "--db_root", str(db)), imagenet=False)
    with pytest.warns(UserWarning, match="not unit-norm"):
        after_extract.run(after_args(setup, "--db_root", str(db), "--trust_pickle"), imagenet=False)
    with open(db / "LAION2B_dtd_aux_test_tiny", "wb") as handle:
        pickle.dump({"embedding": np.ones((30, 24), np.float32)}, handle)
    with pytest.raises(ValueError, match="dimension 24 but the test embeddings have 16"):
        after_extract.run(after_args(setup, "--db_root", str(db), "--trust_pickle"), imagenet=False)
    ratta_build_db.main(["--from_embeddings", str(setup["root"] / "rows.npy"), "--dataset", "dtd",
                         "--net_name", "ViT-B/16", "--db_root", str(db)])
    os.replace(db / "LAION2B_dtd_aux_ViT-B_16.npz", db / "LAION2B_dtd_aux_test_tiny.npz")
    with pytest.raises(ValueError, match="DB built with 'ViT-B/16', but --net_name is 'test/tiny'"):
        after_extract.run(after_args(setup, "--db_root", str(db)), imagenet=False)
    missing = tmp_path / "data"
    (missing / "dtd").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="split_zhou_DescribableTextures.json: not found"):
        pre_extract.run(pre_args(setup, "--root", str(missing)), imagenet=False)


def test_build_db_from_images(setup, tmp_path):
    from PIL import Image

    images = tmp_path / "web"
    names = ["b/2.png", "a/x/1.jpg", "a/0.JPG", "c/3.webp", "c/4.bmp", "b/1.jpeg", "z.jpg"]
    for i, name in enumerate(names):
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), (30 * i, 10, 200 - 20 * i)).save(images / name)
    (images / "notes.txt").write_text("not an image")
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    argv = ["--image_root", str(images), "--dataset", "dtd", "--db_root", str(tmp_path / "db"), "--num_workers", "0",
            "--batch_size", "3", *setup["model"]]
    with pytest.raises(OSError, match="broken.jpg"):
        ratta_build_db.main(argv)
    out = ratta_build_db.main([*argv, "--skip_bad"])
    assert out.name == "LAION2B_dtd_aux_test_tiny"
    with open(out, "rb") as handle:
        record = pickle.load(handle)
    assert record["embedding"].shape == (7, 16) and record["embedding"].dtype == np.float16
    assert record["paths"] == sorted(names)
    np.testing.assert_allclose(np.linalg.norm(record["embedding"].astype(np.float32), axis=1), 1, atol=2e-3)
    loaded = load_db(out)
    assert loaded["source"].endswith(".npz") and loaded["net_name"] == "test/tiny"
    assert np.array_equal(loaded["embedding"], record["embedding"])


def test_build_db_from_embeddings_and_ivf(tmp_path, capsys):
    rows = np.random.default_rng(1).normal(size=(400, 8)).astype(np.float32) * 3
    np.save(tmp_path / "rows.npy", rows)
    out = ratta_build_db.main(["--from_embeddings", str(tmp_path / "rows.npy"), "--dataset", "fgvc_aircraft",
                               "--db_root", str(tmp_path), "--index", "ivf", "--nlist", "8", "--nprobe", "8"])
    emb = load_db(out)["embedding"].astype(np.float32)
    np.testing.assert_allclose(emb, rows / np.linalg.norm(rows, axis=1, keepdims=True), atol=1e-3)
    assert "recall@20 vs exact at nprobe 8: 1.0000" in capsys.readouterr().out
    ivf = VectorIndex.from_faiss_file(tmp_path / "LAION2B_fgvc_aircraft_aux_ViT-B_16.ivf.faiss", nprobe=8)
    queries = torch.from_numpy(emb[:5])
    assert torch.equal(ivf.search(queries, 10)[1], VectorIndex(emb, "torch").search(queries, 10)[1])


HELP_ALL = """
import contextlib, io, runpy, sys
for script in sys.argv[1:]:
    sys.argv = [script, "--help"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        runpy.run_path(script, run_name="__main__")
    print(script, "--net_name" in out.getvalue() and "(default" in out.getvalue())
"""


@pytest.mark.slow
def test_scripts_run_as_files():
    scripts = [f"ratta/{name}.py" for name in ("ratta_pre_extract", "ratta_pre_extract_imagenet", "ratta_after_extract",
                                               "ratta_after_extract_imagenet", "ratta_build_db")]
    result = subprocess.run([sys.executable, "-c", HELP_ALL, *scripts], cwd=REPO, capture_output=True, text=True,
                            check=True)
    assert result.stdout.split() == [word for script in scripts for word in (script, "True")]
