"""What the data doctor finds about one dataset copy: named checks, missing and undecodable files, facts."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SHOWN_FAILURES = 8
"""Failed checks printed in full by ``DatasetReport.summary``; the rest are counted."""
COUNT_FIX = ("this copy is not the released one (each size's source: the JSON report); "
             "--expect listed checks a synthetic or partial copy")


@dataclass
class Check:
    """One comparison: ``expected`` against ``found`` (numbers or short texts), and the fix when it fails."""

    name: str
    ok: bool
    expected: Any = None
    found: Any = None
    fix: str = ""

    def line(self) -> str:
        """``FAIL <name>: expected X, found Y -> fix`` (``ok   <name>: Y`` when it passes)."""
        if self.ok:
            return f"ok   {self.name}: {_text(self.found)}"
        text = f"FAIL {self.name}: expected {_text(self.expected)}, found {_text(self.found)}"
        return f"{text}\n     fix: {self.fix}" if self.fix else text


def _text(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


@dataclass
class DatasetReport:
    """The doctor's answer for one dataset under one root. ``ok`` holds only when every check passed."""

    name: str
    root: Path
    expect: str = "published"
    present: bool = True
    checks: list[Check] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)
    undecodable: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    published: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Count name -> ``{"value": published size, "source": where it is from}``."""

    @property
    def ok(self) -> bool:
        return self.present and bool(self.checks) and all(check.ok for check in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    def add(self, name: str, ok: bool, expected: Any = None, found: Any = None, fix: str = "") -> Check:
        """Append a check and return it."""
        check = Check(name, bool(ok), expected, found, fix)
        self.checks.append(check)
        return check

    def summary(self) -> str:
        """A few lines a person reads in ten seconds: the verdict, each failed check with its fix, the counts that
        have a published size, the facts."""
        if not self.present:
            return f"{self.name}: absent under {self.root}"
        total = f"{len(self.checks)} check{'s' if len(self.checks) > 1 else ''}"
        verdict = f"OK ({total})" if self.ok else f"PROBLEMS ({len(self.failed)} of {total} failed)"
        lines = [f"{self.name} at {self.root}: {verdict} [--expect {self.expect}]"]
        lines += self._failure_lines() + self._count_lines()
        lines += [f"  note: {fact}" for fact in self.facts]
        return "\n".join(lines)

    def _failure_lines(self) -> list[str]:
        """Each failed check that is not a count, with its fix (at most SHOWN_FAILURES)."""
        other = [check for check in self.failed if check.name not in self.published]
        lines = [f"  {check.line()}".replace("\n", "\n  ") for check in other[:SHOWN_FAILURES]]
        if len(other) > SHOWN_FAILURES:
            lines.append(f"  ... and {len(other) - SHOWN_FAILURES} more failed checks (see the JSON report)")
        return lines

    def _count_lines(self) -> list[str]:
        """The differing counts on one line with one fix, else the counts that have a published size."""
        differing = [check for check in self.failed if check.name in self.published]
        if differing:
            return ["  FAIL counts differ from the published sizes: " + ", ".join(
                f"{check.name} {_text(check.found)} (published {_text(check.expected)})" for check in differing),
                f"       fix: {COUNT_FIX}"]
        shown = {name: self.counts[name] for name in self.published if name in self.counts} or self.counts
        return ["  counts: " + ", ".join(f"{name} {_text(value)}" for name, value in shown.items())] if shown else []

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (paths as strings)."""
        data = asdict(self)
        data["root"] = str(self.root)
        data["ok"] = self.ok
        return data
