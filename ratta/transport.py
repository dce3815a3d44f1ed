"""Entropic OT between test views and retrieved images, one problem per retrieved set.

``sinkhorn_plans`` solves many problems at once with POT's batched solver (``ot.batch.solve_batch``) and gives the
plans that per-problem ``ot.sinkhorn(a, b, M, reg, numItermax, stopThr)`` (POT's ``sinkhorn_knopp``, used by
RA-TTA:ratta_after_extract.py) returns:

- ``sinkhorn_knopp`` updates the column scaling first and tests the column marginal; ``solve_batch`` updates the row
  scaling first and tests the row marginal. Solving the transposed problem (``M.T`` with ``a`` and ``b`` swapped)
  makes the two sequences of plans equal.
- ``sinkhorn_knopp`` tests every 10th iteration and stops each problem on its own; ``solve_batch`` stops the whole
  batch once its largest error is below ``tol``. The problems are therefore solved in stages with ``max_iter`` =
  1, 11, 21, ... (each from scratch, on the problems still running) and each problem is accepted after the stage
  whose last iterate is the one ``sinkhorn_knopp`` would have tested and accepted.

Not reproduced: ``sinkhorn_knopp``'s revert-and-stop on nan/inf scalings, which needs fp16 inputs to trigger.
"""
from __future__ import annotations

import numpy as np
import ot
import torch
from ot.batch import solve_batch


def _stages(num_iter_max: int) -> list[int]:
    stages = list(range(1, num_iter_max + 1, 10))
    if stages[-1] != num_iter_max:
        stages.append(num_iter_max)
    return stages


def sinkhorn_plans(a: torch.Tensor, b: torch.Tensor, cost: torch.Tensor, reg: float = 0.1,
                   num_iter_max: int = 100, stop_thr: float = 1e-2) -> torch.Tensor:
    """Plans [P, n, m] of P problems with source marginals ``a`` [P, n], targets ``b`` [P, m], costs [P, n, m].

    Equal to ``ot.sinkhorn`` run on each problem (see the module docstring). Computed in the dtype of ``cost``.
    """
    if num_iter_max < 1:
        raise ValueError(f"num_iter_max must be >= 1, got {num_iter_max}")
    plans = torch.zeros_like(cost)
    todo = torch.arange(cost.shape[0], device=cost.device)
    stages = _stages(num_iter_max)
    for stage, max_iter in enumerate(stages):
        if todo.numel() == 0:
            break
        result = solve_batch(cost[todo].transpose(1, 2), reg, a=b[todo], b=a[todo], max_iter=max_iter,
                             tol=stop_thr, method="log_sinkhorn", grad="detach")
        plan = result.plan.transpose(1, 2)
        if stage == len(stages) - 1:
            done = torch.ones_like(todo, dtype=torch.bool)
        else:
            done = torch.linalg.vector_norm(plan.sum(dim=1) - b[todo], dim=1) < stop_thr
        plans[todo[done]] = plan[done]
        todo = todo[~done]
    return plans


def sinkhorn_distance_reference(a: np.ndarray, b: np.ndarray, cost: np.ndarray, reg: float = 0.1,
                                num_iter_max: int = 100, stop_thr: float = 1e-2) -> tuple[np.ndarray, float]:
    """One problem through ``ot.sinkhorn`` as RA-TTA:ratta_after_extract.py calls it: (plan, sum(plan * cost))."""
    plan = ot.sinkhorn(a, b, cost, reg, numItermax=num_iter_max, stopThr=stop_thr)
    return plan, (plan * cost).sum()
