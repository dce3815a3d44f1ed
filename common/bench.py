"""The benches' shared harness: warm-up, then interleaved rounds (A, B, A, B, ...) of each path, median and min-max
of each path's time per unit of work and of the ratios between paths, with the thread count and the machine's load
before and after, written to JSON (``bench/results/<name>.json`` by default)."""
from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from common.io import atomic_write_json

RESULTS = Path("bench/results")


def add_arguments(parser: argparse.ArgumentParser, name: str, rounds: int = 5, warmup: int | None = 1,
                  rounds_aliases: tuple[str, ...] = ()) -> None:
    """``--rounds`` (also spelled ``rounds_aliases``), ``--warmup`` (unless None) and ``--json`` (alias ``--out``)
    for bench ``name``."""
    parser.add_argument("--rounds", *rounds_aliases, dest="rounds", type=int, default=rounds,
                        help=f"timed rounds of each path (default {rounds})")
    if warmup is not None:
        parser.add_argument("--warmup", type=int, default=warmup,
                            help=f"untimed calls of each path first (default {warmup})")
    parser.add_argument("--json", "--out", dest="json", default=str(RESULTS / f"{name}.json"),
                        help=f"JSON results file (default {RESULTS / name}.json)")


def spread(values: list[float]) -> dict[str, float]:
    """Median, min and max of ``values``."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def format_spread(stats: dict[str, float], scale: float = 1.0, digits: int = 1, unit: str = "") -> str:
    """``median [min-max]unit`` with every value multiplied by ``scale``."""
    m, lo, hi = (round(stats[key] * scale, digits) for key in ("median", "min", "max"))
    return f"{m:.{digits}f}{unit} [{lo:.{digits}f}-{hi:.{digits}f}]"


class RandomStreams:
    """The global random state (Python ``random``, NumPy, torch CPU) of one path, swapped in while it runs, so that
    interleaved paths draw what each would draw if it ran alone."""

    def __init__(self):
        self.states = (random.getstate(), np.random.get_state(), torch.get_rng_state())

    @contextmanager
    def active(self) -> Iterator[None]:
        outer = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        self._set(self.states)
        try:
            yield
        finally:
            self.states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
            self._set(outer)

    @staticmethod
    def _set(states: tuple) -> None:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


class Bench:
    """One bench run: its cases, the thread count and the load average before (at creation) and after."""

    def __init__(self, name: str, args: argparse.Namespace):
        self.name, self.args = name, args
        self.cases: list[dict] = []
        self.load_before = os.getloadavg()

    def compare(self, label: str, paths: dict[str, Callable[[], Any]], units: dict[str, float],
                ratios: dict[str, tuple[str, str]], unit: str = "item", device: torch.device | None = None
                ) -> tuple[dict, dict[str, Any]]:
        """Time ``paths`` (name → call doing ``units[name]`` units of work) in interleaved rounds after warm-up.

        ``ratios``: name → (a, b), reported as the per-unit time of ``a`` over that of ``b`` in each round (so
        (original, ours) is our speed-up). Returns the case (also kept for the JSON file) and each path's output of
        its last round; add fields such as the output difference to the case.
        """
        for _ in range(self.args.warmup):
            for fn in paths.values():
                fn()
        _sync(device)
        seconds: dict[str, list[float]] = {name: [] for name in paths}
        outputs: dict[str, Any] = {}
        for _ in range(self.args.rounds):
            for name, fn in paths.items():
                start = time.perf_counter()
                outputs[name] = fn()
                _sync(device)
                seconds[name].append(time.perf_counter() - start)
        per_unit = {name: [s / units[name] for s in values] for name, values in seconds.items()}
        case = {"label": label, "unit": unit, "rounds": self.args.rounds, "warmup": self.args.warmup,
                "paths": {name: {"units_per_call": units[name], "seconds": seconds[name],
                                 "seconds_per_unit": spread(per_unit[name]),
                                 "units_per_second": spread([1 / s for s in per_unit[name]])} for name in paths},
                "ratios": {key: spread([x / y for x, y in zip(per_unit[a], per_unit[b])])
                           for key, (a, b) in ratios.items()}}
        self.cases.append(case)
        print(f"{label} ({self.args.rounds} rounds, median [min-max]):")
        for name, path in case["paths"].items():
            print(f"  {name:<12} {format_spread(path['seconds_per_unit'], 1000, 2, ' ms')} per {unit}, "
                  f"{format_spread(path['units_per_second'], 1, 1)} per second")
        for key, stats in case["ratios"].items():
            print(f"  {key:<12} {format_spread(stats, 1, 2, 'x')}")
        return case, outputs

    def finish(self, **extra: Any) -> dict:
        """Write the JSON file (cases, threads, load before/after, versions and ``extra``); return its content."""
        result = {"bench": self.name, "torch": torch.__version__, "threads": torch.get_num_threads(),
                  "cpus": os.cpu_count(), "machine": platform.machine(),
                  "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                  "load_before": self.load_before, "load_after": os.getloadavg(), **extra, "cases": self.cases}
        path = atomic_write_json(result, self.args.json, indent=2)
        print(f"threads {result['threads']}, load average (1, 5, 15 min) before "
              f"{', '.join(f'{v:.2f}' for v in result['load_before'])}, after "
              f"{', '.join(f'{v:.2f}' for v in result['load_after'])}; written to {path}")
        return result
