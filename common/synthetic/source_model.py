"""A tiny BLIP retrieval model fine-tuned with the image-text contrastive (ITC) loss on clean synthetic Karpathy
data: the offline stand-in for BLIP's released fine-tuned retrieval files (``model_base_retrieval_coco.pth``).

Only the ITC path is trained (ViT, text-mode MED, ``vision_proj``, ``text_proj``, ``temp``). The file still holds
every ``BlipRetrieval`` key: ``itm_head`` keeps its random initialisation, the momentum copies equal the trained
online weights, and the queues are the constructor's random unit vectors (``idx_queue`` -100, ``ptr_queue`` 0).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from common.blip import BlipRetrieval, MedConfig, ViTConfig, build_blip_tokenizer, tokenize
from common.data.paths import dataset_dir
from common.data.retrieval import build_retrieval_eval
from common.io import PathLike, atomic_torch_save
from common.runtime import seed_everything
from common.synthetic.writers import read_scenes
from common.transforms import blip_eval_transform

TEXT_LENGTH = 35
"""BLIP retrieval pads and truncates every caption to 35 tokens (``padding='max_length'``)."""
TEXT_MIXING_STD = 0.2
WARMUP_STEPS = 30
WEIGHT_DECAY = 0.05
QUEUE_SIZE = 8
"""Length of the (unused, random) ITC queues in the file; BLIP's released retrieval files hold 57,600 entries."""


def itc_loss(image_features: torch.Tensor, text_features: torch.Tensor, temp: torch.Tensor) -> torch.Tensor:
    """BLIP's ITC loss for a batch whose row i of both L2-normalised feature matrices is one pair: the mean of the
    image→text and text→image cross-entropies of the similarities divided by ``temp``."""
    logits = image_features @ text_features.t() / temp
    targets = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


def widen_text_mixing_init(model: BlipRetrieval, std: float = TEXT_MIXING_STD) -> None:
    """Re-draw the text encoder's self-attention ``value`` and ``output.dense`` weights from N(0, std²).

    BERT's N(0, 0.02²) suits width 768. At a tiny width the post-LN ``[CLS]`` token then hears the other tokens
    only through a product of two near-zero matrices, and ITC stalls for hundreds of steps at matching backgrounds.
    """
    for name, module in model.text_encoder.named_modules():
        if name.endswith((".attention.self.value", ".attention.output.dense")):
            torch.nn.init.normal_(module.weight, std=std)


def load_clean_split(data_root: PathLike, dataset: str, image_size: int,
                     held_out: PathLike | None = None) -> tuple[torch.Tensor, list[str], list[list[int]]]:
    """The images of a synthetic Karpathy set under ``data_root`` as one tensor ``[N, 3, S, S]`` (BLIP eval
    transform), the cleaned captions, and image id → caption ids.

    ``held_out``: another synthetic data root; images whose scene also occurs there are left out (with their
    captions), so that a model trained here never saw an evaluation scene.
    """
    root = dataset_dir(dataset, data_root)
    split = build_retrieval_eval(dataset, root / f"{dataset}_annotations", root / f"{dataset}_image",
                                 blip_eval_transform(image_size))
    keep = list(range(len(split.images)))
    if held_out is not None:
        scenes, excluded = read_scenes(root), set(read_scenes(dataset_dir(dataset, held_out)).values())
        keep = [index for index in keep if scenes[split.ann.images[index]] not in excluded]
    images = torch.stack([split.images[index][0] for index in keep])
    texts, img2txt = [], []
    for index in keep:
        img2txt.append(list(range(len(texts), len(texts) + len(split.ann.img2txt[index]))))
        texts += [split.ann.texts[text_id] for text_id in split.ann.img2txt[index]]
    return images, texts, img2txt


def train_tiny_blip_itc(
    data_root: PathLike,
    out_path: PathLike,
    *,
    vit: ViTConfig,
    med: MedConfig,
    tokenizer_dir: PathLike,
    image_size: int,
    embed_dim: int,
    dataset: str = "coco",
    held_out: PathLike | None = None,
    steps: int = 400,
    batch_size: int = 32,
    lr: float = 5e-4,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Train a tiny ``BlipRetrieval`` with ITC on the clean images and captions of ``data_root`` (minus the scenes
    of ``held_out``, see ``load_clean_split``) and write ``{'model': state_dict}`` in BLIP's retrieval layout to
    ``out_path``.

    Each step draws ``batch_size`` distinct images and one of their captions each (so a row's only positive is its
    own pair, as BLIP's ``idx``-based targets give), clamps ``temp`` to [0.001, 0.5] as BLIP does, and takes an
    AdamW step (weight decay 0.05; linear warm-up over 30 steps, then cosine decay). Dropout is off (it only slows
    a model this small down) and the text mixing weights start wider (``widen_text_mixing_init``).
    Returns the first step's loss, the mean loss of the last 10 steps, the steps, images, captions and seconds.
    """
    start = time.perf_counter()
    seed_everything(seed)
    device = torch.device(device)
    images, texts, img2txt = load_clean_split(data_root, dataset, image_size, held_out)
    input_ids, attention_mask = tokenize(build_blip_tokenizer(tokenizer_dir), texts, padding="max_length",
                                         max_length=TEXT_LENGTH, truncation=True)
    no_dropout = med.replace(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BlipRetrieval(vit, no_dropout, image_size, embed_dim=embed_dim, queue_size=QUEUE_SIZE)
    widen_text_mixing_init(model)
    model = model.to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                  weight_decay=WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / WARMUP_STEPS) * 0.5 * (1 + math.cos(math.pi * step / steps)))
    losses = []
    for _ in range(steps):
        image_ids = torch.randperm(len(images))[:batch_size]
        text_ids = torch.tensor([img2txt[i][torch.randint(len(img2txt[i]), ()).item()] for i in image_ids.tolist()])
        with torch.no_grad():
            model.temp.clamp_(0.001, 0.5)
        loss = itc_loss(model.encode_image(images[image_ids].to(device)),
                        model.encode_text(input_ids[text_ids].to(device), attention_mask[text_ids].to(device)),
                        model.temp)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    with torch.no_grad():
        model.temp.clamp_(0.001, 0.5)
    model.copy_params()
    atomic_torch_save({"model": {key: value.cpu() for key, value in model.state_dict().items()}}, Path(out_path))
    return {"loss_first": losses[0], "loss_last": sum(losses[-10:]) / len(losses[-10:]), "steps": steps,
            "images": len(images), "texts": len(texts), "seconds": time.perf_counter() - start}
