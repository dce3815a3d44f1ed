"""The Re-ranking authors' files and the scripts that read or write them: top-K files pickled under NumPy 1.x,
empty or truncated top-K files, read-only output folders found before the work, and recalls above K measured on the
final list (re-ranked top K, then stage-1 ranks K+1..)."""
import pickle
import pickletools
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from common.io import CheckpointError
from reranking_cir import cirr_test_submission, cirr_test_submission_stage2, validate, validate_stage2
from reranking_cir.stage2_reranking import Reranked, stage2_metrics
from reranking_cir.topk import TopK, TopKError, load_topk, read_topk, save_topk

# pickle.dumps({"sorted_index_names": names[[[1, 2, 3], [3, 0, 2]]][:, :2], "index_names": [...], "split": "test1"},
# protocol=2) under NumPy 1.26.4 (names = np.array(["img0", ..., "img3"])): the test1 layout of the original
# cirr_test_submission.py, as the authors' NumPy 1.x wrote it (torch.save pickles a tensor-free dict the same way).
NUMPY1_TEST1_PICKLE = bytes.fromhex(
    "80027d7100285812000000736f727465645f696e6465785f6e616d65737101636e756d70792e636f72652e6d756c746961727261790a5f"
    "7265636f6e7374727563740a7102636e756d70790a6e6461727261790a71034b00857104635f636f646563730a656e636f64650a710558"
    "0100000062710658060000006c6174696e31710786710852710987710a52710b284b014b024b0286710c636e756d70790a64747970650a"
    "710d58020000005534710e898887710f527110284b0358010000003c71114e4e4e4b104b044b08747112628968055840000000690000006d"
    "0000006700000031000000690000006d0000006700000032000000690000006d0000006700000033000000690000006d00000067000000"
    "300000007113680786711452711574711662580b000000696e6465785f6e616d657371175d7118285804000000696d673071195804000000"
    "696d6731711a5804000000696d6732711b5804000000696d6733711c65580500000073706c6974711d58050000007465737431711e752e")
NAMES = [f"img{i}" for i in range(4)]


def _globals(data: bytes) -> set[str]:
    return {arg.replace(" ", ".") for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


def _replace_pickle(path: Path, change) -> Path:
    """Rewrite the ``data.pkl`` of a torch zip file with ``change(bytes) -> bytes``, every other member kept."""
    with zipfile.ZipFile(path) as archive:
        members = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in members:
            archive.writestr(name, change(data) if name.endswith("/data.pkl") else data)
    return path


def as_numpy1(data: bytes) -> bytes:
    """A NumPy 2 pickle as NumPy 1.x writes it: the same bytes with ``numpy.core`` for ``numpy._core``."""
    return data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def test_the_numpy1_rewrite_gives_numpy1_bytes():
    """What NumPy 1.26 really writes equals a NumPy 2 pickle with the module renamed (so the fixtures below hold)."""
    names = np.array(NAMES)
    today = pickle.dumps({"sorted_index_names": names[[[1, 2, 3], [3, 0, 2]]][:, :2], "index_names": NAMES,
                          "split": "test1"}, protocol=2)
    assert as_numpy1(today) == NUMPY1_TEST1_PICKLE
    assert _globals(NUMPY1_TEST1_PICKLE) == {"numpy.core.multiarray._reconstruct", "numpy.ndarray", "numpy.dtype",
                                             "_codecs.encode"}


def test_a_test1_topk_pickled_under_numpy1_loads(tmp_path):
    path = tmp_path / "cirr_top_200_test1.pt"
    torch.save({"split": "placeholder"}, path)
    _replace_pickle(path, lambda _: NUMPY1_TEST1_PICKLE)
    topk = read_topk(path)
    assert topk.split == "test1" and topk.index_names == NAMES and topk.labels is None
    assert topk.sorted_index_names.dtype == np.dtype("<U4")
    assert topk.sorted_index_names.tolist() == [["img1", "img2"], ["img3", "img0"]]


def test_a_val_topk_with_tensors_pickled_under_numpy1_loads_to_the_same_arrays(tmp_path):
    order = np.array([[1, 2, 3], [3, 0, 2], [0, 1, 3]])
    labels = torch.tensor([[False, True, False], [False, False, False], [True, False, False]])
    original = TopK(np.asarray(NAMES)[order], NAMES, "val", ["img2", "img1", "img0"], labels,
                    torch.tensor([[False, True, False, False, False]] * 3))
    path = save_topk(original, tmp_path / "cirr_top_3_val.pt")
    _replace_pickle(path, as_numpy1)
    with zipfile.ZipFile(path) as archive:
        names = _globals(next(archive.read(name) for name in archive.namelist() if name.endswith("/data.pkl")))
    assert "numpy.core.multiarray._reconstruct" in names and not any("numpy._core" in name for name in names)
    back = read_topk(path)
    assert np.array_equal(back.sorted_index_names, original.sorted_index_names)
    assert back.sorted_index_names.dtype == original.sorted_index_names.dtype
    assert torch.equal(back.labels, labels) and torch.equal(back.group_labels, original.group_labels)
    assert back.target_names == original.target_names and back.index_names == NAMES and back.split == "val"


@pytest.mark.parametrize("cut, reason", [(0, "the file is empty"), (0.5, "truncated")])
def test_an_empty_or_truncated_topk_is_reported_as_such(tmp_path, cut, reason):
    path = save_topk(TopK(np.asarray(NAMES)[[[1, 2], [3, 0]]], NAMES, "test1"), tmp_path / "cirr_top_2_test1.pt")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(CheckpointError) as caught:
        load_topk(path, k=2, split="test1", index_names=NAMES, n_queries=2)
    message = str(caught.value)
    assert message.startswith(f"{path}: corrupt or not a torch top-K file (") and reason in message
    assert "EOFError" not in message


# --------------------------------------------------------------------------------------------- recalls above K


def _fiq_result(name: str, labels: torch.Tensor, scores: torch.Tensor) -> Reranked:
    topk = TopK(np.full(labels.shape, "x"), ["x"], "val", ["x"] * len(labels), labels, dress_type=name)
    return Reranked(SimpleNamespace(name=name), topk, scores.shape[1], scores, None)


def test_recalls_above_k_read_stage1_ranks_after_the_reranked_top_k():
    """K = 20 of a 60-column file. Stage-1 target columns: 30, 5, 15, 55, none. Stage 2 moves row 1's target to the
    front and row 2's to the back of the top 20. Final positions: 30, 0, 19, 55, miss -> R@10 = 1/5, R@50 = 3/5
    (the original measured R@50 on the 20 re-ranked columns: 2/5)."""
    labels = torch.zeros(5, 60, dtype=torch.bool)
    for row, column in enumerate([30, 5, 15, 55]):
        labels[row, column] = True
    scores = torch.zeros(5, 20)
    scores[1, 5] = 1.0
    scores[2] = 1.0
    scores[2, 15] = 0.0
    result = _fiq_result("dress", labels, scores)
    assert result.final_labels.float().argmax(1).tolist()[:4] == [30, 0, 19, 55]
    assert result.labels.shape == (5, 20)  # the Figure-8 tensor stays the top K
    metrics = stage2_metrics([result])
    assert metrics["dress_recall_at10"] == pytest.approx(20.0)
    assert metrics["dress_recall_at50"] == pytest.approx(60.0)
    assert metrics["average_recall"] == pytest.approx(40.0)


def test_cirr_recall_at50_above_k():
    """CIRR, K = 2 of a 55-column file; targets at stage-1 columns 1, 40, 52: R@1 = 1/3 after re-ranking (row 0's
    target moves to the front), R@50 = 2/3 (the original: R@50 = R@2 = 1/3)."""
    labels = torch.zeros(3, 55, dtype=torch.bool)
    labels[0, 1], labels[1, 40], labels[2, 52] = True, True, True
    scores = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    members = torch.arange(6).repeat(3, 1)
    query_set = SimpleNamespace(name="cirr", members_idx=members, reference_idx=torch.zeros(3, dtype=torch.long),
                                target_idx=torch.ones(3, dtype=torch.long))
    topk = TopK(np.full(labels.shape, "x"), ["x"], "val", ["x"] * 3, labels)
    metrics = stage2_metrics([Reranked(query_set, topk, 2, scores, torch.zeros(3, 5))])
    assert metrics["recall_at1"] == pytest.approx(100 / 3)
    assert metrics["recall_at10"] == pytest.approx(100 / 3)
    assert metrics["recall_at50"] == pytest.approx(200 / 3)
    assert metrics["group_recall_at1"] == pytest.approx(100.0)


def test_a_topk_file_too_narrow_for_r50_is_refused(tmp_path):
    gallery = [f"img{i}" for i in range(61)]
    order = torch.stack([torch.arange(1, 61), torch.arange(60)])
    topk = TopK(np.asarray(gallery)[order[:, :20].numpy()], gallery, "val", ["img1", "img0"],
                torch.zeros(2, 20, dtype=torch.bool))
    topk.labels[0, 0] = True
    path = save_topk(topk, tmp_path / "cirr_top_20_val.pt")
    kwargs = dict(k=20, split="val", index_names=gallery, n_queries=2)
    with pytest.raises(TopKError, match="cirr_top_20_val.pt: holds the stage-1 top 20 per query, but R@50 .* needs "
                                        "the top 50; write the file with validate.py --save-topk --k 50"):
        load_topk(path, **kwargs, target_names=["img1", "img0"])
    assert load_topk(path, **kwargs).width == 20  # test1 files (no targets, no recalls) may be narrow
    small = save_topk(TopK(topk.sorted_index_names, gallery[:21], "val", ["img1", "img0"], topk.labels),
                      tmp_path / "whole.pt")
    assert load_topk(small, k=20, split="val", index_names=gallery[:21], n_queries=2,
                     target_names=["img1", "img0"]).width == 20  # the whole ranking (reference left out)


# ------------------------------------------------------------------------------- read-only folders, before the work


@pytest.fixture
def no_heavy_work(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the models were built before the output folder was checked")

    for module in (validate, validate_stage2, cirr_test_submission, cirr_test_submission_stage2):
        monkeypatch.setattr(module, "build_models", refuse)


def _run_folder(root: Path) -> Path:
    (root / "saved_models").mkdir(parents=True)
    (root / "saved_models" / "blip_mean.pt").write_bytes(b"PK\x03\x04")
    return root


def test_validate_save_topk_into_a_read_only_run_fails_first(tmp_path, read_only, no_heavy_work):
    run = _run_folder(tmp_path / "stage1")
    read_only(run)
    with pytest.raises(PermissionError, match=f"--save-topk .*cannot create files in {run}"):
        validate.main(["--dataset", "CIRR", "--stage1-path", str(run), "--save-topk", "--device", "cpu",
                       "--metrics-json", str(tmp_path / "m.json")])
    read_only(run / "saved_models")
    with pytest.raises(PermissionError, match=f"--metrics-json .*cannot create files in {run / 'saved_models'}"):
        validate.main(["--dataset", "CIRR", "--stage1-path", str(run), "--device", "cpu"])


def test_validate_stage2_outputs_are_checked_first(tmp_path, read_only, no_heavy_work):
    run = _run_folder(tmp_path / "run")
    locked = read_only(tmp_path / "locked")
    common = ["--dataset", "cirr", "--stage1-path", str(run), "--stage2-path", str(run), "--top-k-path", "x.pt",
              "--device", "cpu"]
    with pytest.raises(PermissionError, match="--save-labels"):
        validate_stage2.main([*common, "--metrics-json", str(tmp_path / "m.json"),
                              "--save-labels", str(locked / "labels.pt")])
    with pytest.raises(PermissionError, match="--metrics-json"):
        validate_stage2.main([*common, "--metrics-json", str(locked / "m.json")])


def test_both_submissions_check_their_folders_first(tmp_path, read_only, no_heavy_work):
    run = _run_folder(tmp_path / "run")
    root = tmp_path / "out"
    read_only(root / "submission" / "CIRR")
    stage1 = ["--submission-name", "s", "--stage1-path", str(run), "--device", "cpu"]
    with pytest.raises(PermissionError, match=f"--output-root .*cannot create files in {root / 'submission/CIRR'}"):
        cirr_test_submission.main([*stage1, "--output-root", str(root)])
    with pytest.raises(PermissionError, match="--output-root"):
        cirr_test_submission_stage2.main([*stage1, "--stage2-path", str(run), "--top-k-path", "x.pt",
                                          "--output-root", str(root)])
    read_only(run)
    with pytest.raises(PermissionError, match=f"--save-topk .*cannot create files in {run}"):
        cirr_test_submission.main([*stage1, "--output-root", str(tmp_path / "free"), "--save-topk"])


def test_dataset_help_states_the_case_rule(capsys):
    for module in (validate, validate_stage2):
        parser = module.build_parser()
        assert "in any letter case" in " ".join(parser.format_help().split())
        with pytest.raises(SystemExit):
            parser.parse_args(["--dataset", "shoes"])
        assert "case-insensitive" in capsys.readouterr().err
