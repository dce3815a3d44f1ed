"""Worker for tests/test_bi_blip4cir_dist.py: one Bi-BLIP4CIR stage-I and one stage-II training step on a fixed
global batch of 4 CIRR triplets, in one process or split over the processes of torchrun (gloo on CPU).

Each process takes a contiguous block of the global batch, as the scripts' steps expect (their targets are
gathered in rank order). Modules are in eval mode, so dropout is off and both runs compute the same function.
``python ddp_bi_blip4cir_step.py VOCAB_DIR OUT.pt`` writes, from process 0, every process's loss parts and the
(DDP-averaged) gradients.
"""
import random
import sys
from pathlib import Path

import torch

from bi_blip4cir.clip_fine_tune import stage1_step
from bi_blip4cir.combiner_train import stage2_step
from common.blip import BlipTextEncoder, build_blip_tokenizer
from common.blip.tiny import tiny_med_config, write_tiny_vocab
from common.cir.combiner import Combiner
from common.cir.frozen import FrozenImages, FrozenTexts
from common.dist import DistInfo, all_gather_object, cleanup, init_distributed
from common.training.loop import data_parallel

DIM = 16
CAPTIONS = ["make the circle red", "remove the blue square", "add a green dog", "make it less red"]
REFERENCE_ROWS = [0, 1, 2, 3]
TARGET_ROWS = [4, 5, 1, 0]  # two targets are other triplets' references


def marked(caption: str, forward: bool) -> str:
    return f" [{'FORWARD' if forward else 'BACKWARD'}] {caption}"


def global_batch() -> tuple:
    """(reference rows, target rows, forward captions, backward captions) of the 4 triplets."""
    return (torch.tensor(REFERENCE_ROWS), torch.tensor(TARGET_ROWS), [marked(c, True) for c in CAPTIONS],
            [marked(c, False) for c in CAPTIONS])


def shard(batch: tuple, rank: int, world_size: int) -> tuple:
    size = len(batch[2]) // world_size
    rows = slice(rank * size, (rank + 1) * size)
    return tuple(field[rows] for field in batch)


def tiny_text_encoder(vocab_dir: Path) -> BlipTextEncoder:
    tokenizer = build_blip_tokenizer(write_tiny_vocab(vocab_dir, extra_words=("circle", "square", "add", "remove")))
    torch.manual_seed(0)
    encoder = BlipTextEncoder(tiny_med_config(len(tokenizer), encoder_width=32), tokenizer, embed_dim=DIM,
                              encoder_width=32)
    for name, parameter in encoder.named_parameters():
        if "crossattention" in name:
            parameter.requires_grad_(False)  # as clip_fine_tune.py: never run in text mode
    return encoder.eval()


def gradients(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in module.named_parameters() if p.grad is not None}


def run_steps(vocab_dir: Path, dist: DistInfo) -> dict:
    """Both steps on this process's block of the global batch; returns its loss parts and gradients."""
    generator = torch.Generator().manual_seed(1)
    image_table = torch.randn(6, DIM, generator=generator)
    batch = shard(global_batch(), dist.rank, dist.world_size)
    images = FrozenImages(None, dist.device, image_table)

    encoder = tiny_text_encoder(vocab_dir)
    model = data_parallel(encoder, dist)  # held until backward: a collected DDP wrapper no longer syncs
    loss, parts, size = stage1_step(batch, random.Random(0), name="cirr", images=images, model=model, weight=0.1,
                                    dist=dist, amp=False)
    loss.backward()
    stage1 = {"loss": loss.item(), "forward": parts["forward"].item(), "reversed": parts["reversed"].item(),
              "size": size, "grads": gradients(encoder)}

    strings = [marked(c, forward) for c in CAPTIONS for forward in (True, False)]
    texts = FrozenTexts(None, strings, torch.randn(len(strings), DIM, generator=generator))
    torch.manual_seed(2)
    combiner = Combiner(DIM, 32, 64).eval()
    model = data_parallel(combiner, dist)
    loss, parts, size = stage2_step(batch, random.Random(0), name="cirr", images=images, texts=texts, model=model,
                                    weight=0.1, dist=dist, amp=False)
    loss.backward()
    stage2 = {"loss": loss.item(), "forward": parts["forward"].item(), "reversed": parts["reversed"].item(),
              "size": size, "grads": gradients(combiner)}
    return {"stage1": stage1, "stage2": stage2}


def main(vocab_dir: str, out_path: str) -> None:
    dist = init_distributed("cpu")
    result = run_steps(Path(vocab_dir) / f"rank{dist.rank}", dist)
    per_rank = all_gather_object({stage: {k: v for k, v in values.items() if k != "grads"}
                                  for stage, values in result.items()})
    if dist.is_main:
        torch.save({"world_size": dist.world_size, "per_rank": per_rank,
                    "grads": {stage: values["grads"] for stage, values in result.items()}}, out_path)
    cleanup()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
