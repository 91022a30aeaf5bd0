"""The errors a user can fix. cli.run prints each as one line, `error: <message>`, and exits 1 (2 for a UsageError)."""

from __future__ import annotations

import errno
import reprlib
from typing import Any

# Failures that the user fixes outside this project: free space, permissions, a read-only mount.
# cli.run turns an OSError with one of these into one line naming the file (see resource_message).
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
NO_PERMISSION = frozenset({errno.EACCES, errno.EPERM})
RESOURCE_ERRNOS = DISK_FULL | NO_PERMISSION | {errno.EROFS}


MAX_SHOWN = 60  # characters of a bad value a message quotes
_SHORT = reprlib.Repr()  # (Python 3.12 takes these as arguments; 3.10 does not)
_SHORT.maxlevel, _SHORT.maxtuple, _SHORT.maxlist, _SHORT.maxdict = 3, 6, 6, 4
_SHORT.maxstring = _SHORT.maxother = MAX_SHOWN


def shown(value: Any) -> str:
    """A value as a message quotes it: its repr cut to MAX_SHOWN characters (a long list costs no more than a short
    one), every character past ASCII escaped, so that a look-alike shows: '\\u0430', not 'а'."""
    text = _SHORT.repr(value).encode("ascii", "backslashreplace").decode("ascii")
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 1] + "…"


class StageError(Exception):
    """A problem the user can fix; its message says how."""


class UsageError(StageError):
    """Arguments a script does not take; its message gives the usage. cli.run prints it and exits 2, as argparse and a
    params.yaml error do."""


def resource_message(err: OSError) -> str:
    """One line for a disk-full, permission or read-only error: which file, and what to do."""
    where = f"{err.filename}: " if err.filename else ""
    if err.errno in DISK_FULL:
        return f"{where}no space left on the device: free some space there, then rerun"
    if err.errno in NO_PERMISSION:
        return f"{where}permission denied: let this user read and write it and its folder, then rerun"
    return f"{where}read-only file system: run the pipeline where it can write, then rerun"


def memory_message(err: MemoryError) -> str:
    detail = f" ({err})" if str(err) else ""
    return (f"out of memory{detail}: close other programs, or make the archs or batch sizes in params.yaml "
            "smaller, then rerun")
