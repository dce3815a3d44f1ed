"""The one base class of errors a user fixes by changing an input (a file, a folder, a flag).

``common.runtime.run_main`` prints such an error as one line, ``<script>: error: <message>``, and exits with status
1; any other exception keeps its traceback, since it is a bug to report. ``VLR_TRACEBACK=1`` shows the traceback of
input errors too."""
from __future__ import annotations


class InputError(Exception):
    """Bad input whose message names the file or flag and what was expected."""


class InvalidValue(InputError, ValueError):
    """A flag value, or a name given on the command line, that the script cannot use (an unknown dataset, a batch
    size the processes cannot share)."""


INPUT_ERRORS: tuple[type[BaseException], ...] = (
    InputError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError,
)
"""What ``run_main`` reports as one line: ``InputError`` and the operating system's errors about a path."""
