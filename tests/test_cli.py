"""How a stage process ends: clean exit codes, and skipping the interpreter teardown safely."""

from __future__ import annotations

import subprocess
import sys

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
