"""Every demo pipeline's summary entry lists the commands it ran, and its commands.sh replays them."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import demo
from common.demo import DemoContext, run_script

REPO = Path(__file__).resolve().parent.parent
WRITE = "import os, pathlib, sys; pathlib.Path(sys.argv[1]).write_text(os.environ['DEMO_MARK'] + ' ' + sys.argv[2])"


def fake_pipeline(target: Path):
    def run(ctx: DemoContext) -> dict:
        ctx.clear(target / "stale")
        run_script(ctx, ["-c", WRITE, str(target / "first.txt"), "a b"], cwd=REPO)
        run_script(ctx.__class__(**{**vars(ctx), "env": {"DEMO_MARK": "two"}}), ["-c", WRITE, "second.txt", "c"],
                   cwd=target)
        return {"command": ["x.py"], "metrics": {}, "baseline_metrics": {}, "outputs": {}, "seconds": 0.0}
    return run


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_commands_are_recorded_and_commands_sh_replays_them(tmp_path):
    target = tmp_path / "work"
    (target / "stale").mkdir(parents=True)
    ctx = DemoContext(out=tmp_path / "out", data=tmp_path, weights=tmp_path, python=sys.executable,
                      env={"DEMO_MARK": "one"})
    entry = demo.run_pipeline(ctx, "fake", fake_pipeline(target))
    assert entry["command"] == ["x.py"]
    assert entry["commands"] == [["-c", WRITE, str(target / "first.txt"), "a b"], ["-c", WRITE, "second.txt", "c"]]
    assert (target / "first.txt").read_text() == "one a b" and (target / "second.txt").read_text() == "two c"
    assert not (target / "stale").exists()

    script = tmp_path / "out" / "fake" / "commands.sh"
    assert script.stat().st_mode & 0o111
    for name in ("first.txt", "second.txt"):
        (target / name).unlink()
    (target / "stale").mkdir()
    subprocess.run(["bash", str(script)], cwd=REPO, check=True, env={"PATH": "/usr/bin:/bin"})
    assert not (target / "stale").exists()
    assert (target / "first.txt").read_text() == "one a b" and (target / "second.txt").read_text() == "two c"


def test_commands_sh_is_written_up_to_a_failing_command(tmp_path):
    def failing(ctx: DemoContext) -> dict:
        run_script(ctx, ["-c", "pass"], cwd=REPO)
        run_script(ctx, ["-c", "raise SystemExit(3)"], cwd=REPO)
        return {}

    ctx = DemoContext(out=tmp_path, data=tmp_path, weights=tmp_path)
    with pytest.raises(RuntimeError, match="demo step failed"):
        demo.run_pipeline(ctx, "broken", failing)
    lines = (tmp_path / "broken" / "commands.sh").read_text().splitlines()
    assert lines[-2:] == ["\"$PYTHON\" -c pass", "\"$PYTHON\" -c 'raise SystemExit(3)'"]
