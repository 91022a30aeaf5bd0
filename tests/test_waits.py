"""The harness's bounded wait on a subprocess's output: it returns at the event, and fails with what it saw,
the whole process group killed, when the event never comes or the process ends first."""

from __future__ import annotations

import subprocess
import time

import pytest
from harness import kill_group, read_until

# A shell whose child holds the output pipe open for ten minutes, as the stage a `dvc repro` runs does.
HOLDS_THE_PIPE = "sleep 600 & echo started; echo ready; wait"
WATCHDOG_S = 2


def start(script: str) -> subprocess.Popen:
    return subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def test_it_returns_the_lines_up_to_the_event():
    proc = start(HOLDS_THE_PIPE)
    try:
        assert read_until(proc, lambda line: line == "ready\n", "ready", WATCHDOG_S) == ["started\n", "ready\n"]
    finally:
        kill_group(proc)


def test_a_process_that_never_prints_the_event_is_killed_with_its_children_and_fails_the_test():
    proc = start(HOLDS_THE_PIPE)
    started = time.monotonic()
    with pytest.raises(pytest.fail.Exception) as failed:
        read_until(proc, lambda line: line == "never\n", "'never' line", WATCHDOG_S)
    # The pipe closed long before the sleep's ten minutes: the watchdog killed the sleep too.
    assert time.monotonic() - started < 300
    assert proc.poll() is not None
    message = str(failed.value)
    assert "no 'never' line within 2 s: killed" in message and "started\nready\n" in message


def test_a_process_that_ends_before_the_event_fails_the_test_with_its_exit_status():
    with pytest.raises(pytest.fail.Exception, match="exited 3 before the event; its output:\nbye"):
        read_until(start("echo bye; exit 3"), lambda line: False, "the event", 60)
