"""How a stage process ends: clean exit codes, and skipping the interpreter teardown safely."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from harness import ROOT, wait_for

from stages.ground.errors import UsageError
from stages.plumbing.cli import refuse


def run_stage_code(body: str) -> subprocess.CompletedProcess:
    code = "from stages.plumbing.cli import run\nfrom stages.lib.schema import ParamsError\n" + body
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


def test_outside_dvc_an_interruption_names_what_this_run_had_already_replaced(tmp_path):
    result = run_stage_code(
        "from pathlib import Path\n"
        "from stages.ground.atomic import write_text\n"
        f"out = Path({str(tmp_path)!r})\n"
        "def main(argv):\n"
        "    write_text(out / 'a.csv', 'new')\n"
        "    raise KeyboardInterrupt\n"
        "run(main)\n")
    assert result.returncode == 130
    assert result.stderr == (f"interrupted: this run had replaced {tmp_path}/a.csv; the other outputs are as they "
                             "were before it; rerun `dvc repro`\n")


def test_under_dvc_a_failure_says_which_outputs_dvc_removed_and_how_to_get_each_back():
    result = subprocess.run(
        [sys.executable, "-c", "from stages.plumbing.cli import run\nfrom stages.ground.errors import StageError\n"
         "def main(argv):\n    raise StageError('data/prepared/x_train.npy is damaged: rebuild it')\nrun(main)\n"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(ROOT), "DVC_STAGE": "train@zz9"})
    assert result.returncode == 1
    first, second = result.stderr.splitlines()
    assert first == "error: data/prepared/x_train.npy is damaged: rebuild it"
    assert second == (
        "`dvc repro` removed train@zz9's outputs before running it, so models/zz9, reports/train/zz9.json, "
        "reports/history/zz9.csv are missing: `dvc checkout train@zz9` restores models/zz9, reports/train/zz9.json "
        "from the cache and `git checkout -- reports/history/zz9.csv` the committed results, or fix the cause and "
        "rerun `dvc repro`")


def test_outputs_under_dvc_names_only_what_is_missing():
    from pathlib import Path

    from stages.plumbing.cli import outputs_under_dvc

    present = {Path("reports/lr_range/base.csv")}
    text = outputs_under_dvc("lr_range@base", [Path("reports/lr_range/base.csv")], exists=present.__contains__)
    assert text == ("`dvc repro` removed lr_range@base's outputs before running it (reports/lr_range/base.csv was "
                    "written anew), so reports/lr_range/base.json is missing: "
                    "`git checkout -- reports/lr_range/base.json` the committed results, or fix the cause and rerun "
                    "`dvc repro`")
    assert "had written all its outputs" in outputs_under_dvc("split", [], exists=lambda path: True)
    assert "`dvc checkout mine` restores the cached ones" in outputs_under_dvc("mine", [])


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


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_prints_the_usage_instead_of_running_main(flag):
    result = subprocess.run([sys.executable, "-c", "from stages.plumbing.cli import run\n"
                             "def main(argv):\n    raise SystemExit('main ran')\n"
                             "run(main, usage='usage: python -m scripts.x [--dry-run]')\n", flag],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "usage: python -m scripts.x [--dry-run]\n", "")


SCRIPT = ("from stages.plumbing.cli import ArgumentParser, run\n"
          "from stages.ground.errors import UsageError\n"
          "def count(text):\n"
          "    if not text.isdigit():\n"
          "        raise UsageError(f'-n takes a count (got {text!r})')\n"
          "    return int(text)\n"
          "def main(argv):\n"
          "    parser = ArgumentParser('usage: python -m scripts.x [-n N] [--dry-run] [target ...]')\n"
          "    parser.add_argument('-n', type=count, default=1)\n"
          "    parser.add_argument('--dry-run', action='store_true')\n"
          "    parser.add_argument('targets', nargs='*')\n"
          "    print(parser.parse(argv))\n"
          "run(main)\n")


@pytest.mark.parametrize("argv, line", [
    (["--now"], "error: usage: python -m scripts.x [-n N] [--dry-run] [target ...] (got '--now')"),
    (["a", "-n"], "error: usage: python -m scripts.x [-n N] [--dry-run] [target ...] (-n takes a value)"),
    (["--dry-run=yes"], "error: usage: python -m scripts.x [-n N] [--dry-run] [target ...] (--dry-run takes no value)"),
    (["-n", "two"], "error: -n takes a count (got 'two')"),
])
def test_a_script_refuses_bad_arguments_in_one_line_and_exits_2(argv, line):
    result = subprocess.run([sys.executable, "-c", SCRIPT, *argv], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", line + "\n")


def test_options_and_other_arguments_come_in_any_order():
    result = subprocess.run([sys.executable, "-c", SCRIPT, "a", "--dry-run", "b", "-n3"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (0, "{'n': 3, 'dry_run': True, 'targets': ['a', 'b']}\n")


PARENT = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], env={**__import__("os").environ, "DVC_STAGE": "x@y"},
                         stderr=open(sys.argv[2], "w"))
print(child.pid, flush=True)
sys.stdin.readline()  # until the test says: end now, leaving the child behind
"""
STAND_IN = """
from pathlib import Path
from stages.plumbing.cli import run
def main(argv):
    Path({ready!r}).write_text("ready")
    __import__("threading").Event().wait(600)  # as a stage at work: it ends only when stopped
run(main)
"""


def test_a_stage_started_by_dvc_ends_when_dvc_ends(tmp_path):
    """SIGTERM to DVC alone (not its process group) ends DVC: the stage gets SIGTERM too, and cleans up as on
    Ctrl-C."""
    ready, err = tmp_path / "ready", tmp_path / "stderr"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, STAND_IN.format(ready=str(ready)), str(err)], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8")
    child = int(parent.stdout.readline())
    wait_for(ready.exists, "the stand-in stage to start")
    parent.kill()  # as SIGKILL or a SIGTERM to it alone ends DVC
    parent.wait(timeout=60)
    wait_for(lambda: not Path(f"/proc/{child}").exists() or Path(f"/proc/{child}/status").read_text().find(
        "State:\tZ") >= 0, "the stage to end with its parent")
    assert "x@y" in err.read_text(encoding="utf-8")  # Ctrl-C's message, naming the stage


@pytest.mark.parametrize("module", ["stages.download", "stages.train", "stages.evidence.long", "stages.evaluate"])
def test_help_says_what_a_stage_does_instead_of_running_it(module):
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                          encoding="utf-8", timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("Stage "), done.stdout + done.stderr
    assert "no architecture named" not in done.stdout + done.stderr


def test_a_refusal_quotes_what_it_got_cut_short():
    err = refuse("usage: python -m scripts.x", ["--now", "x" * 100_000], "no arguments")
    assert isinstance(err, UsageError)
    assert str(err).startswith("usage: python -m scripts.x: no arguments (got '--now xxx") and len(str(err)) < 120
