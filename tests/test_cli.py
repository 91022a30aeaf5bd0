"""How a stage process ends: clean exit codes, and skipping the interpreter teardown safely."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT


def run_stage_code(body: str) -> subprocess.CompletedProcess:
    code = "from stages.lib.cli import run\nfrom stages.lib.schema import ParamsError\n" + body
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_skipping_the_teardown_still_flushes_what_main_printed():
    result = run_stage_code(
        "import atexit\n"
        "atexit.register(lambda: print('teardown ran'))\n"
        "def main(argv):\n"
        "    print('outputs written', end='')\n"  # no newline: only an explicit flush gets it out
        "    print('and a warning', end='', file=__import__('sys').stderr)\n"
        "run(main, skip_teardown=True)\n"
        "print(' after run')\n")
    assert result.returncode == 0
    assert result.stdout == "outputs written"  # nothing after run(), and atexit skipped
    assert result.stderr == "and a warning"


def test_without_skipping_the_teardown_runs():
    result = run_stage_code(
        "import atexit\n"
        "atexit.register(lambda: print('teardown ran'))\n"
        "run(lambda argv: None)\n")
    assert result.returncode == 0 and result.stdout == "teardown ran\n"


def test_errors_keep_their_exit_codes_when_the_teardown_is_skipped():
    result = run_stage_code(
        "def main(argv):\n"
        "    raise ParamsError(['params.yaml: x: bad (got 1; expected 2)'])\n"
        "run(main, skip_teardown=True)\n")
    assert result.returncode == 2
    assert result.stderr == "params.yaml: x: bad (got 1; expected 2)\n"


def test_a_full_disk_is_one_line_naming_the_file():
    result = run_stage_code(
        "import errno\n"
        "def main(argv):\n"
        "    raise OSError(errno.ENOSPC, 'No space left on device', 'reports/metrics/base.json')\n"
        "run(main)\n")
    assert result.returncode == 1
    assert result.stderr == ("error: reports/metrics/base.json: no space left on the device: free some space there, "
                             "then rerun\n")


@pytest.mark.parametrize("code, message", [
    ("EACCES", "permission denied: let this user read and write it and its folder, then rerun"),
    ("EPERM", "permission denied: let this user read and write it and its folder, then rerun"),
    ("EROFS", "read-only file system: run the pipeline where it can write, then rerun"),
    ("EDQUOT", "no space left on the device: free some space there, then rerun"),
])
def test_permission_and_read_only_errors_are_one_line_naming_the_file(code, message):
    result = run_stage_code(
        "import errno\n"
        "def main(argv):\n"
        f"    raise OSError(errno.{code}, 'as the OS says it', 'reports/report.md')\n"
        "run(main)\n")
    assert result.returncode == 1
    assert result.stderr == f"error: reports/report.md: {message}\n"


def test_out_of_memory_is_one_line():
    result = run_stage_code(
        "import numpy as np\n"
        "def main(argv):\n"
        "    np.empty(2**62, np.uint8)\n"
        "run(main)\n")
    assert result.returncode == 1
    assert result.stderr.startswith("error: out of memory (Unable to allocate 4.00 EiB for an array"), result.stderr
    assert result.stderr.endswith("make the archs or batch sizes in params.yaml smaller, then rerun\n")


def test_other_os_errors_still_propagate():
    result = run_stage_code(
        "def main(argv):\n"
        "    open('/', 'w')\n"  # IsADirectoryError: a bug, not a resource the user lacks
        "run(main)\n")
    assert result.returncode == 1 and "Traceback" in result.stderr and "IsADirectoryError" in result.stderr
