"""Generic test-time-adaptation pieces: LayerNorm-only training, entropy, SAM, gradient averaging over ranks."""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.distributed as dist
from torch import nn

from common.dist import get_world_size, is_dist


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of ``softmax(logits)`` along the last dim: ``-(softmax * log_softmax).sum(-1)``."""
    return -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)


def layernorm_parameters(module: nn.Module) -> tuple[list[nn.Parameter], list[str]]:
    """The ``weight``/``bias`` of every ``nn.LayerNorm`` inside ``module`` and their names (module order)."""
    params, names = [], []
    for module_name, sub in module.named_modules():
        if isinstance(sub, nn.LayerNorm):
            for param_name, param in sub.named_parameters(recurse=False):
                if param_name in ("weight", "bias"):
                    params.append(param)
                    names.append(f"{module_name}.{param_name}" if module_name else param_name)
    return params, names


def train_only(model: nn.Module, params: Iterable[nn.Parameter]) -> None:
    """Freeze every parameter of ``model`` except ``params``, and put it in eval mode (dropout/drop-path off)."""
    model.requires_grad_(False)
    for param in params:
        param.requires_grad_(True)
    model.eval()


def average_gradients(params: list[nn.Parameter]) -> None:
    """Replace each gradient by its mean over ranks (no-op in one process).

    A parameter that has no gradient on any rank keeps ``grad=None``, so optimisers still skip it.
    """
    if not is_dist() or get_world_size() == 1 or not params:
        return
    device = params[0].device
    present = torch.tensor([float(p.grad is not None) for p in params], device=device)
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params])
    flat = torch.cat([flat, present])
    dist.all_reduce(flat)
    offset = 0
    for index, param in enumerate(params):
        size = param.numel()
        if flat[-len(params) + index] > 0:
            param.grad = (flat[offset:offset + size] / get_world_size()).view_as(param).to(param.dtype)
        offset += size


class SAM(torch.optim.Optimizer):
    """Sharpness-aware minimisation around a base optimiser (Foret et al. 2021), as SAR uses it.

    ``first_step`` moves each parameter by ``rho * grad / ||grad||`` (non-adaptive); ``second_step`` moves it back
    and applies the base optimiser with the gradient taken at the perturbed point. As in davda54/sam, a parameter
    without a gradient at ``second_step`` is not moved back (it stays at the perturbed point) and the base
    optimiser skips it. The base optimiser shares the parameter groups; its state (e.g. AdamW moments) lives in
    ``base_optimizer.state``.
    """

    def __init__(self, params, base_optimizer: Callable[..., torch.optim.Optimizer], rho: float = 0.05, **kwargs):
        if rho < 0:
            raise ValueError(f"rho must be non-negative, got {rho}")
        super().__init__(params, dict(rho=rho, **kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        grad_norm = self._grad_norm()
        for group in self.param_groups:
            scale = group["rho"] / (grad_norm + 1e-12)
            for param in group["params"]:
                if param.grad is None:
                    continue
                step = param.grad * scale.to(param)
                param.add_(step)
                self.state[param]["e_w"] = step
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None and "e_w" in self.state[param]:
                    param.sub_(self.state[param].pop("e_w"))
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    def step(self, closure=None):  # noqa: D102 - SAM needs two forward passes; use first_step/second_step
        raise RuntimeError("SAM.step is not used; call first_step() and second_step() around a second forward")

    def _grad_norm(self) -> torch.Tensor:
        norms = [p.grad.norm(p=2) for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not norms:
            return torch.tensor(0.0)
        return torch.stack([norm.to(norms[0].device) for norm in norms]).norm(p=2)


def snapshot(params: Iterable[nn.Parameter]) -> list[torch.Tensor]:
    """Detached copies of ``params`` (to restore them later with ``restore``)."""
    return [param.detach().clone() for param in params]


@torch.no_grad()
def restore(params: Iterable[nn.Parameter], saved: list[torch.Tensor]) -> None:
    for param, value in zip(params, saved):
        param.copy_(value)
