"""The benches' harness (common/bench.py): interleaved rounds after warm-up, per-round ratios with median and
range, the JSON file, the flags, and per-path random streams."""
import argparse
import json
import random

import numpy as np
import torch

from common import bench
from common.bench import Bench, RandomStreams, add_arguments, format_spread, spread


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def harness_args(tmp_path, rounds=3, warmup=1) -> argparse.Namespace:
    return argparse.Namespace(rounds=rounds, warmup=warmup, json=str(tmp_path / "results" / "x.json"))


def test_rounds_interleave_after_warmup_and_ratios_are_per_round(tmp_path, monkeypatch):
    clock, calls = FakeClock(), []
    monkeypatch.setattr(bench.time, "perf_counter", clock)
    durations = {"a": iter([9, 2.0, 3.0, 2.0]), "b": iter([9, 1.0, 1.0, 0.5])}

    def path(name):
        def call():
            calls.append(name)
            clock.now += next(durations[name])
            return name
        return call

    run = Bench("x", harness_args(tmp_path))
    case, outputs = run.compare("case", {"a": path("a"), "b": path("b")}, {"a": 1, "b": 2}, {"a/b": ("a", "b")})
    assert calls == ["a", "b"] * 4
    assert outputs == {"a": "a", "b": "b"}
    assert case["paths"]["a"]["seconds"] == [2.0, 3.0, 2.0]
    assert case["paths"]["b"]["seconds_per_unit"] == {"median": 0.5, "min": 0.25, "max": 0.5}
    assert case["ratios"]["a/b"] == {"median": 6.0, "min": 4.0, "max": 8.0}  # per round: 4, 6, 8


def test_json_holds_cases_threads_and_load(tmp_path):
    run = Bench("x", harness_args(tmp_path, rounds=2, warmup=0))
    run.compare("case", {"only": lambda: None}, {"only": 4}, {})
    result = run.finish(device="cpu")
    written = json.loads((tmp_path / "results" / "x.json").read_text())
    assert written == json.loads(json.dumps(result))
    assert written["threads"] == torch.get_num_threads() and written["device"] == "cpu"
    assert len(written["load_before"]) == len(written["load_after"]) == 3
    assert written["cases"][0]["paths"]["only"]["units_per_call"] == 4


def test_flags_keep_the_old_spellings():
    parser = argparse.ArgumentParser()
    add_arguments(parser, "demo_bench", rounds=4, rounds_aliases=("--epochs",))
    assert parser.parse_args([]).json.endswith("bench/results/demo_bench.json")
    args = parser.parse_args(["--epochs", "7", "--out", "o.json"])
    assert (args.rounds, args.json, args.warmup) == (7, "o.json", 1)


def test_spread_and_format():
    stats = spread([3.0, 1.0, 2.0, 10.0])
    assert stats == {"median": 2.5, "min": 1.0, "max": 10.0}
    assert format_spread(stats, 1000, 0, " ms") == "2500 ms [1000-10000]"


def draws() -> list:
    return [random.random(), float(np.random.rand()), float(torch.rand(()))]


def test_interleaved_paths_draw_as_if_alone():
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    first, second = RandomStreams(), RandomStreams()
    alone = [draws() for _ in range(3)]
    outside = draws()
    interleaved = {0: [], 1: []}
    for _ in range(3):
        for key, streams in enumerate((first, second)):
            with streams.active():
                interleaved[key].append(draws())
    assert interleaved[0] == interleaved[1] == alone
    assert draws() != outside  # the outer stream went on where it was, untouched by the paths
