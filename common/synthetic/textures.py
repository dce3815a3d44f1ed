"""Synthetic texture classification in DTD's CoOp layout, web-like DB images, CuPL-style descriptions, and a tiny
CLIP trained briefly on texture image-caption pairs so that its zero-shot classifier works (RA-TTA demo/tests).

Each of the 47 DTD class names is bound to one (pattern, colour) pair out of 8 x 6; images draw the pattern with
random frequency, phase and shade. Test images carry a distribution shift (pixel noise and lower contrast); the
DB images are clean and varied, like images retrieved from the web.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

from common.clip import CLIP, TINY_CLIP, tokenize
from common.io import atomic_torch_save
from common.transforms import CLIP_MEAN, CLIP_STD

DTD_NAMES = (
    "banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed", "cracked", "crosshatched",
    "crystalline", "dotted", "fibrous", "flecked", "freckled", "frilly", "gauzy", "grid", "grooved", "honeycombed",
    "interlaced", "knitted", "lacelike", "lined", "marbled", "matted", "meshed", "paisley", "perforated", "pitted",
    "pleated", "polka-dotted", "porous", "potholed", "scaly", "smeared", "spiralled", "sprinkled", "stained",
    "stratified", "striped", "studded", "swirly", "veined", "waffled", "woven", "wrinkled", "zigzagged",
)
PATTERNS = ("horizontal bands", "vertical stripes", "diagonal stripes", "checkerboard squares", "round dots",
            "crossing grid lines", "zigzag lines", "concentric rings")
COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 70, 230), "yellow": (230, 210, 40),
           "magenta": (210, 50, 200), "cyan": (40, 210, 220)}
PRE_TEMPLATE = "a photo of a {}, which is a type of texture, or a type of pattern. "
TEMPLATES = ("a photo of a {}, a type of texture.", "a photo of the {}, a type of texture.")
IMAGE_CLASSES = tuple(range(0, len(DTD_NAMES), 3))
"""The 16 classes that have images (all 8 patterns twice, each colour 2-3 times); the other 31 names are in the
class list, the descriptions and the zero-shot classifier only, as distractors."""
TINY_CLIP_CONFIG = {**TINY_CLIP["vit"], "embed_dim": 32, "image_resolution": 32}
TRAIN_CONTEXT = 48
"""Training runs at this text length; the causal mask makes the saved 77-token model equal on shorter texts."""


def class_attributes(index: int) -> tuple[str, str]:
    """(pattern, colour) of class ``index``."""
    return PATTERNS[index % len(PATTERNS)], list(COLOURS)[index // len(PATTERNS)]


def render_texture(index: int, rng: random.Random, size: int = 48, noise: float = 0.0,
                   coverage: float = 1.0) -> Image.Image:
    """One image of class ``index``: its pattern in its colour on a dark background, with random geometry.

    With ``coverage`` < 1 the texture fills only a random rectangle of that area fraction; the rest is grey
    clutter, and ``noise`` adds pixel noise: the test-time shift of the demo."""
    pattern, colour = class_attributes(index)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    freq, phase = rng.uniform(3.0, 6.0), rng.uniform(0, 2 * np.pi)
    wave = {
        "horizontal bands": np.sin(2 * np.pi * freq * yy + phase),
        "vertical stripes": np.sin(2 * np.pi * freq * 1.6 * xx + phase),
        "diagonal stripes": np.sin(2 * np.pi * freq * (xx + yy) + phase),
        "checkerboard squares": np.sign(np.sin(2 * np.pi * freq * xx + phase) * np.sin(2 * np.pi * freq * yy)),
        "round dots": np.cos(2 * np.pi * freq * xx + phase) * np.cos(2 * np.pi * freq * yy + phase) - 0.4,
        "crossing grid lines": np.maximum(np.cos(2 * np.pi * freq * xx + phase),
                                          np.cos(2 * np.pi * freq * yy + phase)) - 0.8,
        "zigzag lines": np.sin(2 * np.pi * freq * (yy + 0.15 * np.abs(((xx * freq * 2) % 2) - 1)) + phase),
        "concentric rings": np.sin(2 * np.pi * freq * np.hypot(xx - rng.uniform(0.3, 0.7),
                                                               yy - rng.uniform(0.3, 0.7)) + phase),
    }[pattern]
    mask = (wave > 0).astype(np.float32)[..., None]
    shade = rng.uniform(0.75, 1.0)
    fg = np.array(COLOURS[colour], dtype=np.float32) * shade
    bg = np.full(3, rng.uniform(15, 60), dtype=np.float32)
    pixels = bg + (fg - bg) * mask
    if coverage < 1:
        gen = np.random.default_rng(rng.randrange(2**32))
        blocks = gen.uniform(40, 160, (size // 8 + 1, size // 8 + 1, 1)).repeat(8, 0).repeat(8, 1)[:size, :size]
        side_h = int(round(size * np.sqrt(coverage) * rng.uniform(0.8, 1.25)))
        side_h = min(size, max(4, side_h))
        side_w = min(size, max(4, int(round(size * size * coverage / side_h))))
        top, left = rng.randrange(size - side_h + 1), rng.randrange(size - side_w + 1)
        inside = np.zeros((size, size, 1), dtype=bool)
        inside[top:top + side_h, left:left + side_w] = True
        pixels = np.where(inside, pixels, np.broadcast_to(blocks, pixels.shape))
    if noise:
        pixels = pixels + np.random.default_rng(rng.randrange(2**32)).normal(0, noise, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def descriptions_for(name: str, index: int) -> list[str]:
    """Eight CuPL-style descriptions of class ``index``: pattern and colour, pattern only, colour only."""
    pattern, colour = class_attributes(index)
    return [
        f"A {name} texture shows {colour} {pattern}.",
        f"{colour} {pattern} repeat across a {name} surface.",
        f"The {name} pattern is made of {colour} {pattern} on a dark ground.",
        f"Look for {pattern} in {colour}.",
        f"A {name} texture is mostly {colour}.",
        f"Its {pattern} make it {name}.",
        f"{name} fabric with {colour} {pattern}.",
        f"A close view of {colour} {pattern}.",
    ]


def write_descriptions(path: str | Path) -> Path:
    """``CuPL_prompts_dtd.json``-style ``{class name: [description, ...]}`` for the 47 classes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = {name: descriptions_for(name, i) for i, name in enumerate(DTD_NAMES)}
    path.write_text(json.dumps(table, indent=1))
    return path


def write_dtd(root: str | Path, test_per_class: int = 6, train_per_class: int = 1, seed: int = 0,
              noise: float = 20.0, coverage: float = 0.35, classes: tuple[int, ...] = IMAGE_CLASSES) -> Path:
    """``<root>/dtd/images/<class>/*.jpg`` and ``split_zhou_DescribableTextures.json`` (train/val/test); in test
    images the texture covers only ``coverage`` of the area among clutter, with pixel ``noise``."""
    base = Path(root) / "dtd"
    rng = random.Random(seed)
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    for label, name in enumerate(DTD_NAMES):
        folder = base / "images" / name
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(train_per_class + test_per_class if label in classes else 0):
            key = "train" if j < train_per_class else "test"
            shifted = key == "test"
            image = render_texture(label, rng, noise=noise if shifted else 0.0, coverage=coverage if shifted else 1)
            relpath = f"{name}/{name}_{j:04d}.jpg"
            image.save(base / "images" / relpath, quality=92)
            split[key].append([relpath, label, name])
    split["val"] = list(split["train"])
    (base / "split_zhou_DescribableTextures.json").write_text(json.dumps(split))
    return base


def write_web_images(root: str | Path, per_class: int = 20, seed: int = 1) -> Path:
    """Clean, varied images per class under ``<root>/<class>/`` (the class folders are not used as labels)."""
    root = Path(root)
    rng = random.Random(seed)
    for label, name in enumerate(DTD_NAMES):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            render_texture(label, rng, size=rng.choice((40, 48, 64))).save(folder / f"web_{j:04d}.jpg", quality=90)
    return root


def _caption(rng: random.Random, index: int) -> str:
    name = DTD_NAMES[index]
    choice = rng.random()
    if choice < 0.3:
        return rng.choice(TEMPLATES).format(name)
    description = rng.choice(descriptions_for(name, index))
    return PRE_TEMPLATE.format(name) + description if choice < 0.6 else description


def train_tiny_texture_clip(path: str | Path, steps: int = 200, lr: float = 1e-3, seed: int = 0,
                            pool_per_class: int = 12, classes: tuple[int, ...] = IMAGE_CLASSES) -> dict:
    """Train the tiny CLIP contrastively on (clean, randomly cropped image, caption) pairs of ``classes``, each
    class twice per batch (soft targets over same-class pairs), and save its state dict (loadable by
    ``common.clip.load_clip``). Images come from a pool rendered once; captions vary per step. The token
    embedding stays at its random init (the rest learns to read it), which keeps steps cheap."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _train(path, steps, lr, seed, pool_per_class, classes)


def _train(path: str | Path, steps: int, lr: float, seed: int, pool_per_class: int, classes: tuple[int, ...]
           ) -> dict:
    start = time.perf_counter()
    rng = random.Random(seed)
    model = CLIP(**{**TINY_CLIP_CONFIG, "context_length": TRAIN_CONTEXT}).float()
    model.token_embedding.weight.requires_grad_(False)
    size = TINY_CLIP_CONFIG["image_resolution"]
    crop = T.Compose([T.RandomResizedCrop(size, scale=(0.25, 1.0)), T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])
    pool = {i: [render_texture(i, rng, size=64) for _ in range(pool_per_class)] for i in classes}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.01)
    losses = []
    model.train()
    for _ in range(steps):
        labels = rng.sample(classes * 2, 2 * len(classes))
        images = torch.stack([crop(rng.choice(pool[i])) for i in labels])
        texts = tokenize([_caption(rng, i) for i in labels], context_length=TRAIN_CONTEXT)
        image_f = F.normalize(model.encode_image(images), dim=-1)
        text_f = F.normalize(model.encode_text(texts), dim=-1)
        logits = model.logit_scale.exp() * image_f @ text_f.T
        same = torch.tensor(labels)[:, None] == torch.tensor(labels)[None, :]
        target = same.float() / same.sum(dim=1, keepdim=True)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        model.logit_scale.fill_(np.log(100))
    state = model.eval().state_dict()
    extra = state["positional_embedding"].new_zeros(TINY_CLIP_CONFIG["context_length"] - TRAIN_CONTEXT,
                                                    state["positional_embedding"].shape[1])
    state["positional_embedding"] = torch.cat([state["positional_embedding"], extra])
    atomic_torch_save(state, path)
    return {"loss_first": losses[0], "loss_last": float(np.mean(losses[-20:])), "steps": steps,
            "seconds": time.perf_counter() - start}
