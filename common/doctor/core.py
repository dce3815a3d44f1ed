"""``check_dataset``: one dataset copy against what the papers used, without loading a model."""
from __future__ import annotations

from pathlib import Path

from common.doctor.images import missing_images, undecodable_images
from common.doctor.registry import DATASETS
from common.doctor.report import DatasetReport
from common.errors import InputError
from common.io import PathLike

EXPECT = ("published", "listed")
"""``published``: counts must equal the papers' sizes; ``listed``: only what the annotation files list must be there
(synthetic or partial copies, e.g. the demo's)."""
SHOWN_DIFFERENCES = 3
"""Count differences named in the --expect listed fact; the JSON report's counts and published values hold all."""


def check_name(name: str) -> str:
    """``name`` lower-cased; InputError listing the registered names when it is not one."""
    if name.lower() not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return name.lower()


def is_present(name: str, data_root: PathLike) -> bool:
    """Whether ``data_root`` holds any part of dataset ``name``."""
    return DATASETS[check_name(name)].find(Path(data_root).expanduser()) is not None


def compare_counts(report: DatasetReport) -> None:
    """Published mode: a check per published count; listed mode: the differences as one fact."""
    differing = []
    for key, published in DATASETS[report.name].published.items():
        found = report.counts.get(key)
        if found is None:
            continue
        wanted = f"{published.value:,}" + (" or more" if published.at_least else "")
        report.published[key] = {"value": published.value, "at_least": published.at_least,
                                 "source": published.source}
        if report.expect == "published":
            report.add(key, published.matches(found), wanted if published.at_least else published.value, found,
                       f"this copy differs from the published release ({published.source})")
        elif not published.matches(found):
            differing.append(f"{key} {found:,} vs {wanted}")
    if differing:
        shown = "; ".join(differing[:SHOWN_DIFFERENCES])
        more = f"; and {len(differing) - SHOWN_DIFFERENCES} more" if len(differing) > SHOWN_DIFFERENCES else ""
        report.facts.append(f"not compared with the published sizes under --expect listed: {shown}{more}")


def check_images(report: DatasetReport, folder: Path, images: list[Path], decode: bool,
                 workers: int | None) -> None:
    """Checks that every listed image exists and, with ``decode``, decodes."""
    missing = missing_images(images)
    report.missing_files += missing
    fix = f"get the {len(missing):,} missing files (listed in --missing-list), e.g. {missing[0]}" if missing else ""
    report.add("listed images present", not missing, len(images), len(images) - len(missing), fix)
    explain = DATASETS[report.name].explain
    if missing and explain is not None:
        explain(report, folder, missing)
    if decode:
        absent = set(missing)
        present = [path for path in images if str(path) not in absent]
        report.undecodable += undecodable_images(present, workers, desc=f"decoding {report.name}")
        report.add("listed images decode", not report.undecodable, len(present), len(present) - len(report.undecodable),
                   f"re-download the {len(report.undecodable):,} damaged files (listed in --missing-list), e.g. "
                   f"{report.undecodable[0]}" if report.undecodable else "")


def check_dataset(name: str, data_root: Path, decode: bool = False, workers: int | None = None,
                  expect: str = "published") -> DatasetReport:
    """Check the copy of ``name`` under ``data_root``: layout, annotation counts (against the published sizes unless
    ``expect='listed'``), listed images present and, with ``decode``, decodable (``workers`` threads).

    Never raises for a bad copy (everything wrong is a failed check); raises InputError for an unknown ``name`` or
    ``expect``. The names are those registered (``DATASETS``): the papers' own datasets once doctor.py's
    ``load_paper_datasets`` ran.
    """
    spec = DATASETS[check_name(name)]
    if expect not in EXPECT:
        raise InputError(f"unknown expectation {expect!r}; valid values: {', '.join(EXPECT)}")
    root = Path(data_root).expanduser()
    folder = spec.find(root)
    report = DatasetReport(spec.name, folder or root, expect)
    if folder is None:
        report.add("dataset folder", False, spec.where(root), "absent",
                   f"put {spec.name} under {root} or pass the --data-root that holds it")
        return report
    images = spec.survey(report, folder)
    compare_counts(report)
    if images:
        check_images(report, folder, images, decode, workers)
    return report


def check_all(data_root: Path, names: tuple[str, ...] = (), decode: bool = False, workers: int | None = None,
              expect: str = "published") -> list[DatasetReport]:
    """``check_dataset`` for each of ``names`` and every other dataset present under ``data_root``; a dataset that
    is absent and not named gets a report with ``present=False`` (not a failure)."""
    named = {check_name(name) for name in names}
    reports = []
    for name in DATASETS:
        if name in named or is_present(name, data_root):
            reports.append(check_dataset(name, data_root, decode, workers, expect))
        else:
            reports.append(DatasetReport(name, Path(data_root).expanduser(), expect, present=False))
    return reports
