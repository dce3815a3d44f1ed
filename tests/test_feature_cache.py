"""The ``--cache-dir`` key of Bi-BLIP4CIR's frozen features: a second run with the same checkpoint and
preprocessing reads the entry; another checkpoint, transform, split or stage-I text encoder encodes again."""
import shutil

import pytest
import torch
from torch.utils.data import Dataset

from bi_blip4cir import validate
from bi_blip4cir.features import encode_image_table, encode_text_table

CPU = torch.device("cpu")


class Images(Dataset):
    """(name, 'image') pairs; the image is a 3-vector."""

    def __init__(self):
        self.x = torch.arange(12, dtype=torch.float32).reshape(4, 3)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        return f"img{index}", self.x[index]


class Counting(torch.nn.Module):
    """A frozen 'encoder' that counts the items it encodes; ``scale`` tells two checkpoints apart."""

    def __init__(self, scale=1.0):
        super().__init__()
        self.scale, self.items = scale, 0

    def forward(self, batch):
        self.items += len(batch)
        if isinstance(batch, torch.Tensor):
            return batch * self.scale
        return torch.tensor([[float(len(text)) * self.scale] for text in batch])


@pytest.fixture
def checkpoints(tmp_path):
    """Two 'checkpoint' files with different contents, and a copy of the first under another name."""
    first, second, copy = tmp_path / "a.pth", tmp_path / "b.pth", tmp_path / "copy_of_a.pth"
    first.write_bytes(b"weights A")
    second.write_bytes(b"weights B")
    shutil.copy(first, copy)
    return first, second, copy


def parse(tmp_path, checkpoint, *extra):
    return validate.build_parser().parse_args(["--dataset", "CIRR", "--combining-function", "sum",
                                               "--blip-pretrained-path", str(checkpoint), "--cache-dir",
                                               str(tmp_path / "cache"), "--num-workers", "0", *extra])


def encode(args, encoder, split="val"):
    return encode_image_table(encoder, Images(), CPU, args, root="/data", split=split, dress_types=())


def test_same_key_reads_the_entry_and_any_change_encodes_again(tmp_path, checkpoints):
    first, second, copy = checkpoints
    encoder = Counting()
    features, names = encode(parse(tmp_path, first), encoder)
    assert encoder.items == 4 and names == ["img0", "img1", "img2", "img3"]
    assert len(list((tmp_path / "cache").glob("features_*.pt"))) == 1

    stale = Counting(scale=-1.0)  # would give other features: a hit must return the stored ones
    cached, cached_names = encode(parse(tmp_path, first), stale)
    assert stale.items == 0 and cached_names == names and torch.equal(cached, features)
    encode(parse(tmp_path, copy), stale)  # the key holds the file's hash, not its path
    assert stale.items == 0

    for args, split in [(parse(tmp_path, second), "val"),  # another checkpoint
                        (parse(tmp_path, first, "--transform", "squarepad"), "val"),
                        (parse(tmp_path, first, "--target-ratio", "1.5"), "val"),
                        (parse(tmp_path, first, "--input-dim", "224"), "val"),
                        (parse(tmp_path, first), "test1")]:
        fresh = Counting(scale=2.0)
        changed, _ = encode(args, fresh, split)
        assert fresh.items == 4, (args.blip_pretrained_path, args.transform, args.target_ratio, split)
        assert torch.equal(changed, 2 * features)
    assert len(list((tmp_path / "cache").glob("features_*.pt"))) == 6


def test_text_table_is_keyed_by_the_stage1_checkpoint(tmp_path, checkpoints):
    first, second, _ = checkpoints
    texts = ["a", "bb", "ccc"]
    encoder = Counting()
    features = encode_text_table(encoder, texts, CPU, parse(tmp_path, first, "--blip-model-path", str(first)))
    assert encoder.items == 3 and features.flatten().tolist() == [1.0, 2.0, 3.0]
    encode_text_table(encoder, texts, CPU, parse(tmp_path, first, "--blip-model-path", str(first)))
    assert encoder.items == 3
    encode_text_table(encoder, texts, CPU, parse(tmp_path, first, "--blip-model-path", str(second)))
    assert encoder.items == 6
    encode_text_table(encoder, texts, CPU, parse(tmp_path, first))  # the pre-trained text encoder
    assert encoder.items == 9


def test_no_cache_dir_encodes_every_time(tmp_path, checkpoints):
    args = validate.build_parser().parse_args(["--dataset", "CIRR", "--combining-function", "sum",
                                               "--blip-pretrained-path", str(checkpoints[0]), "--num-workers", "0"])
    encoder = Counting()
    encode(args, encoder)
    encode(args, encoder)
    assert encoder.items == 8 and not (tmp_path / "cache").exists()
