"""MLCL's CLIP precision: the original recipe on CUDA (weights rounded through fp16, stage-2 training features from
the fp16 CLIP), ``--clip-fp32`` for exact weights, fp32 on CPU always; checked on CPU with CUDA device objects and a
forced 'fp16' precision (CPU runs fp16 CLIP too)."""
from __future__ import annotations

import argparse
import json
import warnings

import pytest
import torch

from common.clip import build_model, tiny_clip_state_dict, write_tiny_clip
from common.features import cache_file
from common.synthetic.writers import write_shoes_raw
from mlcl import clip_fine_tune, combiner_train, models, prepare_shoes_data
from mlcl.data import clip_cache_key
from mlcl.models import (ImageEncoder, TextEncoder, build_clip, clip_precision, frozen_training_clip,
                         round_weights_to_fp16)

CUDA, CPU = torch.device("cuda"), torch.device("cpu")
HALVED = ("visual.conv1.weight", "transformer.resblocks.0.attn.in_proj_weight", "text_projection")
"""Tensors ``convert_weights`` halves; LayerNorm, BatchNorm, embeddings and logit_scale stay fp32."""
KEPT = ("ln_final.weight", "visual.bn1.weight", "token_embedding.weight", "positional_embedding", "logit_scale")


def fp32_clip(seed: int = 0) -> torch.nn.Module:
    state = tiny_clip_state_dict("rn", seed=seed)
    model = build_model(dict(state)).float()
    model.load_state_dict(state)
    return model.eval()


def test_precision_follows_device_and_flag():
    assert clip_precision(CUDA) == "fp16" and clip_precision(torch.device("cuda:1"), False) == "fp16"
    assert clip_precision(CUDA, clip_fp32=True) == "fp32"
    assert clip_precision(CPU) == "fp32" and clip_precision(CPU, clip_fp32=True) == "fp32"


def test_rounding_equals_loading_into_the_fp16_clip():
    """The original: ``clip.load`` on CUDA builds the fp16 model, the checkpoint is loaded into it, then
    ``.float()``. Ours: exact fp32 load, then ``round_weights_to_fp16``: the same values, all fp32."""
    state = tiny_clip_state_dict("rn", seed=1)
    original = build_model(dict(state))  # convert_weights inside: the fp16 layout
    assert original.dtype == torch.float16
    original.load_state_dict(state)
    original.float()
    ours = round_weights_to_fp16(fp32_clip(seed=1))
    for name, value in ours.state_dict().items():
        assert value.dtype == original.state_dict()[name].dtype and torch.equal(value, original.state_dict()[name]), name
    for name in HALVED:
        assert ours.state_dict()[name].dtype == torch.float32 and not torch.equal(ours.state_dict()[name], state[name])
        assert torch.equal(ours.state_dict()[name], state[name].half().float()), name
    for name in KEPT:
        assert torch.equal(ours.state_dict()[name], state[name]), name


def test_frozen_training_clip_is_fp16_only_in_the_fp16_precision():
    model = frozen_training_clip(fp32_clip(), "fp32")
    assert model.dtype == torch.float32 and ImageEncoder(model, CPU).compute == "fp32"
    model = frozen_training_clip(fp32_clip(), "fp16")
    assert model.dtype == torch.float16 and all(model.state_dict()[name].dtype == torch.float16 for name in HALVED)
    assert all(model.state_dict()[name].dtype == torch.float32 for name in KEPT)
    assert ImageEncoder(model, CUDA, amp=True).compute == "fp16" and TextEncoder(model, CPU).compute == "fp16"
    with torch.no_grad():  # CPU runs the fp16 model too; the encoders hand back fp32 features
        features = ImageEncoder(model, CPU)(torch.randn(2, 3, 64, 64))
        texts = TextEncoder(model, CPU)(["a red cube", "a blue ball"])
    assert features.dtype == texts.dtype == torch.float32 and features.shape == texts.shape == (2, 16)


def test_encoder_compute_modes():
    model = fp32_clip()
    assert ImageEncoder(model, CUDA, amp=True).compute == "autocast"
    assert ImageEncoder(model, CPU, amp=True).compute == "fp32"  # autocast is CUDA only
    assert ImageEncoder(model, CUDA).compute == "fp32" and TextEncoder(model, CUDA).compute == "fp32"


def clip_args(tmp_path, **extra) -> argparse.Namespace:
    clip_file = write_tiny_clip(tmp_path / "clip.pt", kind="rn")
    return argparse.Namespace(clip_model_name=str(clip_file), allow_download=False, clip_download_root=None,
                              trust_checkpoints=False, clip_fp32=False, cache_dir=None, transform="targetpad",
                              target_ratio=1.25, **extra)


def test_build_clip_is_exact_on_cpu_and_rounded_in_fp16(tmp_path, monkeypatch):
    args = clip_args(tmp_path)
    checkpoint = write_tiny_clip(tmp_path / "tuned.pt", kind="rn", seed=3, fmt="checkpoint")
    tuned = torch.load(checkpoint, weights_only=True)["CLIP"]
    model, info = build_clip(args, CPU, checkpoint)
    assert info["precision"] == "fp32" and model.dtype == torch.float32
    for name, value in model.state_dict().items():
        assert torch.equal(value, tuned[name]), name  # CPU: exact, as clip.load on CPU
    monkeypatch.setattr(models, "clip_precision", lambda device, clip_fp32=False: "fp16")  # as on CUDA
    model, info = build_clip(args, CPU, checkpoint)
    assert info["precision"] == "fp16" and model.dtype == torch.float32
    for name in HALVED:
        assert torch.equal(model.state_dict()[name], tuned[name].half().float()), name
    for name in KEPT:
        assert torch.equal(model.state_dict()[name], tuned[name]), name


def test_feature_cache_key_holds_the_precision(tmp_path):
    args = clip_args(tmp_path)
    args.cache_dir = str(tmp_path / "cache")
    model = fp32_clip()

    def key(device: torch.device, clip_fp32: bool = False, amp: bool = False) -> dict:
        args.clip_fp32 = clip_fp32
        return clip_cache_key(args, None, 64, ImageEncoder(model, device, amp), what="gallery")

    assert (key(CUDA)["precision"], key(CUDA, clip_fp32=True)["precision"], key(CPU)["precision"]) == (
        "fp16", "fp32", "fp32")
    assert cache_file(args.cache_dir, key(CUDA)) != cache_file(args.cache_dir, key(CUDA, clip_fp32=True))
    assert key(CUDA, amp=True)["compute"] == "autocast" and key(CUDA)["compute"] == "fp32"
    assert cache_file(args.cache_dir, key(CUDA, amp=True)) != cache_file(args.cache_dir, key(CUDA))
    half = frozen_training_clip(fp32_clip(), "fp16")
    assert clip_cache_key(args, None, 64, TextEncoder(half, CUDA), what="train captions")["compute"] == "fp16"


@pytest.fixture(scope="module")
def shoes(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("precision")
    write_shoes_raw(root / "data", {"train": 8, "eval": 6}, {"train": 8, "eval": 4}, n_cross_split=0, seed=1)
    prepare_shoes_data.main(["--data-root", str(root / "data")])
    clip_file = write_tiny_clip(root / "clip_rn.pt", kind="rn")
    args = ["--dataset", "Shoes", "--data-root", str(root / "data"), "--clip-model-name", str(clip_file),
            "--num-workers", "0", "--device", "cpu", "--num-epochs", "1", "--batch-size", "4",
            "--output-root", str(root / "out")]
    return {"root": root, "args": args}


def record_encoders(monkeypatch) -> list[tuple[str, str, bool]]:
    """(encoder kind, compute, amp) of every CLIP encoder call, in order."""
    calls = []
    for cls in (ImageEncoder, TextEncoder):
        original = cls.__call__

        def spy(self, inputs, _original=original, _kind=cls.__name__):
            calls.append((_kind, self.compute, getattr(self, "amp", False)))
            return _original(self, inputs)

        monkeypatch.setattr(cls, "__call__", spy)
    return calls


@pytest.mark.parametrize("forced", [None, "fp16"])
def test_stage2_features_follow_the_precision(shoes, monkeypatch, forced):
    """Default on CPU: fp32 everywhere. 'fp16' (the CUDA default): validation galleries and texts from the fp32
    model first, then every training feature (image table, captions, augmented view) from the fp16 CLIP, with no
    autocast; the precision is recorded in the hyper-parameters."""
    if forced:
        monkeypatch.setattr(models, "clip_precision", lambda device, clip_fp32=False: forced)
    calls = record_encoders(monkeypatch)
    name = f"stage2_{forced or 'default'}"
    combiner_train.main([*shoes["args"], "--projection-dim", "32", "--hidden-dim", "64", "--clip-bs", "3",
                         "--run-name", name])
    params = json.loads((shoes["root"] / "out" / "dev-models-combiner" / name / "training_hyperparameters.json")
                        .read_text())
    assert params["clip_precision"] == (forced or "fp32") and "upstream_ckpt_load" not in params
    computes = [compute for _, compute, _ in calls]
    if not forced:
        assert set(computes) == {"fp32"}
        return
    first_fp16 = computes.index("fp16")
    assert first_fp16 > 0 and set(computes[:first_fp16]) == {"fp32"} and set(computes[first_fp16:]) == {"fp16"}
    assert {kind for kind, _, _ in calls[:first_fp16]} == {"ImageEncoder", "TextEncoder"}  # validation
    assert {kind for kind, _, _ in calls[first_fp16:]} == {"ImageEncoder", "TextEncoder"}  # training
    assert not any(amp for _, _, amp in calls[first_fp16:])


def test_stage1_frozen_table_under_autocast_in_fp16(shoes, monkeypatch):
    """--encoder text: the original encodes the frozen image features under autocast at every step, so the table
    is computed with autocast in the 'fp16' precision (a no-op on CPU) and without it under --clip-fp32."""
    monkeypatch.setattr(models, "clip_precision", lambda device, clip_fp32=False: "fp32" if clip_fp32 else "fp16")
    calls = record_encoders(monkeypatch)
    for flags, amp in (([], True), (["--clip-fp32"], False)):
        calls.clear()
        clip_fine_tune.main([*shoes["args"], "--encoder", "text", *flags])
        table_calls = [call for call in calls if call[0] == "ImageEncoder" and call[2]]
        assert bool(table_calls) == amp


DEVICES = [CPU, *([CUDA] if torch.cuda.is_available() else [])]


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_build_clip_equals_the_original_load(tmp_path, device):
    """``clip.load`` (fp16 on CUDA, fp32 on CPU), the fine-tuned checkpoint loaded into it, then ``.float()``, as
    every original script does, gives our default CLIP exactly; on CUDA ``--clip-fp32`` keeps the checkpoint exact."""
    import clip

    args = clip_args(tmp_path)
    checkpoint = write_tiny_clip(tmp_path / "tuned.pt", kind="rn", seed=3, fmt="checkpoint")
    tuned = torch.load(checkpoint, weights_only=True)["CLIP"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # clip.load tries torch.jit.load first
        original, _ = clip.load(args.clip_model_name, device=device, jit=False)
    original.load_state_dict(tuned)
    expected = original.float().state_dict()
    model, info = build_clip(args, device, checkpoint)
    assert info["precision"] == ("fp16" if device.type == "cuda" else "fp32")
    for name, value in model.state_dict().items():
        assert value.dtype == expected[name].dtype and torch.equal(value, expected[name]), name
    args.clip_fp32 = True
    model, info = build_clip(args, device, checkpoint)
    assert info["precision"] == "fp32"
    for name, value in model.state_dict().items():
        assert torch.equal(value.cpu(), tuned[name]), name
