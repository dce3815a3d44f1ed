"""RA-TTA scripts on bad input and interruption: required flags, outputs checked before the work, empty or truncated
files named as such, and Ctrl-C / SIGTERM during pre-extraction (one line; the same command continues)."""
import os
import pickle
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from common.clip import write_tiny_clip
from common.io import CheckpointError, MalformedFileError
from common.synthetic.textures import write_dtd
from ratta import after_extract, pre_extract, ratta_build_db
from ratta.embeddings import load_embeddings
from ratta.retrieval import VectorIndex
from ratta.vector_db import load_db

AS = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ratta_robust")
    write_dtd(root / "data", test_per_class=1, train_per_class=1, classes=tuple(range(6)))
    weights = write_tiny_clip(root / "clip.pt", kind="vit")
    return {"root": root, "model": ["--net_name", "test/tiny", "--weights", str(weights), "--device", "cpu"]}


def pre_argv(setup, save_dir: Path, *extra) -> list[str]:
    return ["--root", str(setup["root"] / "data"), "--dataset", "dtd", "--augmentation_size", str(AS),
            "--save_dir", str(save_dir), "--num_workers", "0", "--chunk_size", "2", *setup["model"], *extra]


# ----------------------------------------------------------------------------------------------- required flags


@pytest.mark.parametrize("parser, missing", [
    (pre_extract.build_parser(False), "--root, --dataset"),
    (pre_extract.build_parser(True), "--root, --dataset"),
    (after_extract.build_parser(False), "--db_root, --dataset"),
    (after_extract.build_parser(True), "--db_root, --dataset"),
    (ratta_build_db.build_parser(), "--dataset"),
])
def test_required_flags_are_argparse_errors(parser, missing, capsys):
    with pytest.raises(SystemExit) as stop:
        parser.parse_args([])
    assert stop.value.code == 2
    assert f"the following arguments are required: {missing}" in capsys.readouterr().err


def test_build_db_needs_one_source_and_net_name_help_lists_the_names(capsys):
    with pytest.raises(SystemExit) as stop:
        ratta_build_db.build_parser().parse_args(["--dataset", "dtd"])
    assert stop.value.code == 2
    assert "one of the arguments --image_root --from_embeddings is required" in capsys.readouterr().err
    text = " ".join(pre_extract.build_parser(False).format_help().split())
    assert "one of RN50, RN101, RN50x4, RN50x16, RN50x64, ViT-B/32, ViT-B/16, ViT-L/14, ViT-L/14@336px" in text
    assert "with --weights any label works" in text


# ------------------------------------------------------------------------------ outputs checked before the work


def refuse(*args, **kwargs):
    raise AssertionError("the work started before the outputs were checked")


def test_build_db_checks_db_root_before_encoding(tmp_path, read_only, monkeypatch):
    monkeypatch.setattr(ratta_build_db, "encode_folder", refuse)
    locked = read_only(tmp_path / "db")
    (tmp_path / "web").mkdir()
    with pytest.raises(PermissionError, match=f"^--db_root {locked}: cannot create files in {locked} "):
        ratta_build_db.main(["--image_root", str(tmp_path / "web"), "--dataset", "dtd", "--db_root", str(locked)])


def test_pre_extract_checks_save_dir_first(setup, tmp_path, read_only, monkeypatch):
    monkeypatch.setattr(pre_extract, "load_model", refuse)
    monkeypatch.setenv("VLR_TRACEBACK", "1")  # the error itself, not run_main's one line
    locked = read_only(tmp_path / "emb")
    with pytest.raises(PermissionError, match=f"^--save_dir {locked}/test_tiny/0: cannot create files in {locked} "):
        pre_extract.main(False, pre_argv(setup, locked))


def test_after_extract_checks_log_and_results_json_first(tmp_path, read_only, monkeypatch):
    monkeypatch.setattr(after_extract, "load_db", refuse)
    monkeypatch.setenv("VLR_TRACEBACK", "1")  # the error itself, not run_main's one line
    base = ["--db_root", str(tmp_path), "--dataset", "dtd", "--device", "cpu"]
    locked = read_only(tmp_path / "locked")
    with pytest.raises(PermissionError, match=f"^--output_dir {locked}/ViT-B_16: cannot create files in {locked} "):
        after_extract.main(False, [*base, "--output_dir", str(locked)])
    logs = ["--output_dir", str(tmp_path / "logs")]
    with pytest.raises(PermissionError, match=f"^--results_json {locked}: cannot create files in {locked} "):
        after_extract.main(False, [*base, *logs, "--results_json", str(locked / "r.json")])
    with pytest.raises(IsADirectoryError, match=f"^--results_json {tmp_path}: is a folder, expected a file name"):
        after_extract.main(False, [*base, *logs, "--results_json", str(tmp_path)])


# ---------------------------------------------------------------------------- empty and truncated files named


def cut(path: Path, keep: float) -> Path:
    path.write_bytes(path.read_bytes()[:int(path.stat().st_size * keep)])
    return path


def test_empty_or_truncated_embeddings_are_named(tmp_path):
    path = tmp_path / "dtd.pth"
    torch.save([(torch.ones(1, 4), torch.ones(AS, 4), torch.zeros(1, dtype=torch.long))] * 3, path)
    cut(path, 0.6)
    with pytest.raises(CheckpointError, match=f"^{path}: corrupt or not a torch test-embedding file .*truncated"):
        load_embeddings(path, AS)
    cut(path, 0)
    with pytest.raises(CheckpointError, match=f"^{path}: .*0 bytes on disk; the file is empty"):
        load_embeddings(path, AS)


def test_damaged_chunk_says_how_to_redo_it(setup, tmp_path):
    args = pre_extract.build_parser(False).parse_args(pre_argv(setup, tmp_path / "emb"))
    assert pre_extract.run(args, imagenet=False, max_new_chunks=1) is None
    chunk = tmp_path / "emb" / "test_tiny" / "0" / "dtd.pth.partial" / "chunk_000000.pt"
    cut(chunk, 0)
    with pytest.raises(CheckpointError, match=f"^{chunk}: .*the file is empty.* Delete {chunk} and run the same "
                                              f"command again"):
        pre_extract.run(args, imagenet=False)


@pytest.mark.parametrize("suffix", [".npz", ".npy", ""])
def test_empty_or_truncated_db_files_are_named(tmp_path, suffix):
    db = tmp_path / "LAION2B_dtd_aux_test_tiny"
    path = db.with_name(db.name + suffix)
    rows = np.ones((30, 8), np.float16)
    with open(path, "wb") as handle:
        if suffix == ".npz":
            np.savez(handle, embedding=rows)
        elif suffix == ".npy":
            np.save(handle, rows)
        else:
            pickle.dump({"embedding": rows}, handle, protocol=4)
    cut(path, 0.5)
    with pytest.raises(MalformedFileError,
                       match=f"^{path}: truncated, damaged or not a DB file .* on disk; .*rebuild it"):
        load_db(db, trust_pickle=True)
    cut(path, 0)
    with pytest.raises(MalformedFileError, match=f"^{path}: the DB file is empty \\(0 bytes\\); download it again"):
        load_db(db, trust_pickle=True)


def test_empty_faiss_index_is_named(tmp_path):
    (tmp_path / "db.ivf.faiss").write_bytes(b"")
    with pytest.raises(MalformedFileError,
                       match="db.ivf.faiss: cannot read the faiss index \\(empty, 0 bytes on disk\\)"):
        VectorIndex.from_faiss_file(tmp_path / "db.ivf.faiss")


# ------------------------------------------------------------------------------------------- Ctrl-C and SIGTERM


def test_ctrl_c_and_sigterm_stop_with_one_line_and_the_same_command_continues(setup, tmp_path, monkeypatch, capsys):
    reference = pre_extract.run(pre_extract.build_parser(False).parse_args(pre_argv(setup, tmp_path / "ref")), False)
    argv = pre_argv(setup, tmp_path / "emb")
    partial = tmp_path / "emb" / "test_tiny" / "0" / "dtd.pth.partial"
    encode = pre_extract.encode_chunk
    handler = signal.getsignal(signal.SIGTERM)
    for stop, status, done in (("Ctrl-C", 130, 2), ("SIGTERM", 143, 4)):
        calls = []

        def interrupted(*args, stop=stop, calls=calls):
            calls.append(1)
            if len(calls) == 2:  # the second new chunk of this run
                if stop == "SIGTERM":
                    os.kill(os.getpid(), signal.SIGTERM)
                raise KeyboardInterrupt
            return encode(*args)

        monkeypatch.setattr(pre_extract, "encode_chunk", interrupted)
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            pre_extract.main(False, argv)
        assert exit_.value.code == status
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert err.strip().splitlines() == [f"stopped by {stop}: {done} of 6 images done, kept in {partial}/; run the "
                                            f"same command again to continue"]
        assert signal.getsignal(signal.SIGTERM) == handler
    monkeypatch.setattr(pre_extract, "encode_chunk", encode)
    pre_extract.main(False, argv)
    assert not partial.exists()
    for a, b in zip(load_embeddings(reference), load_embeddings(partial.with_name("dtd.pth"))):
        assert torch.equal(a, b)
