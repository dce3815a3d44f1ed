"""The data doctor: a dataset copy checked against what the papers used (layout, published counts, listed images
present and decodable), without loading a model. ``python doctor.py --help`` is its command line.

``DATASETS`` is the registry. Importing ``common.doctor.layouts`` registers the datasets whose readers live in
``common.data``; each paper registers its own in ``<paper>/doctor.py`` (``register_dataset``, with the survey helpers
below), which the top-level doctor.py imports."""
from common.doctor.core import EXPECT, check_all, check_dataset, is_present
from common.doctor.counts import PUBLISHED, Published
from common.doctor.layouts import READ_ERRORS, read_failed, read_karpathy, require
from common.doctor.registry import DATASETS, DatasetSpec, Survey, register_dataset
from common.doctor.report import Check, DatasetReport

__all__ = ["DATASETS", "EXPECT", "PUBLISHED", "READ_ERRORS", "Check", "DatasetReport", "DatasetSpec", "Published",
           "Survey", "check_all", "check_dataset", "is_present", "read_failed", "read_karpathy", "register_dataset",
           "require"]
