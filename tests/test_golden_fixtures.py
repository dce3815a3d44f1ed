"""tests/fixtures/golden/README.md lists every golden data file with its SHA-256, and the files still match."""
import hashlib
import re
from pathlib import Path

GOLDEN = Path(__file__).parent / "fixtures" / "golden"


def test_every_golden_file_is_listed_with_its_hash():
    listed = dict((path, digest) for digest, path in re.findall(r"^([0-9a-f]{64})  (\S+)$",
                                                                (GOLDEN / "README.md").read_text(), re.M))
    present = {str(path.relative_to(GOLDEN)) for path in GOLDEN.rglob("*")
               if path.is_file() and path.name != "README.md"}
    assert set(listed) == present
    for name, digest in listed.items():
        assert hashlib.sha256((GOLDEN / name).read_bytes()).hexdigest() == digest, name
