"""stages.ground.clock: wall and CPU seconds, and how busy the rest of the machine was meanwhile."""

from __future__ import annotations

import pytest

from stages.ground import clock


def test_the_others_load_is_the_machines_minus_this_process():
    # 2 cores, 10 s: the machine was busy 1,500 of 2,000 ticks (1.5 cores); this process used 8 CPU s (0.8).
    assert clock.other_cores_busy((1_000, 10_000), (2_500, 12_000), 10.0, 8.0, 2) == pytest.approx(0.7)


def test_never_below_zero_when_ticks_and_process_time_disagree_a_little():
    assert clock.other_cores_busy((0, 0), (100, 200), 1.0, 1.2, 2) == 0.0


@pytest.mark.parametrize("before, after, wall", [(None, (1, 2), 1.0), ((1, 2), None, 1.0), ((1, 2), (1, 2), 1.0),
                                                 ((0, 0), (1, 2), 0.0)])
def test_unknown_when_proc_stat_says_nothing(before, after, wall):
    assert clock.other_cores_busy(before, after, wall, 0.5, 2) is None


def test_proc_stat_is_read_as_busy_and_total_ticks(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 5 50 800 20 3 2 1 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    monkeypatch.setattr(clock, "PROC_STAT", stat)
    assert clock._busy_and_total_ticks() == (161, 981)  # idle + iowait = 820 of 981
    monkeypatch.setattr(clock, "PROC_STAT", tmp_path / "missing")
    assert clock._busy_and_total_ticks() is None


def test_a_stopwatch_records_what_every_timing_holds(monkeypatch):
    took = clock.Stopwatch().took()
    assert took.seconds >= 0 and took.cpu_seconds >= 0
    assert set(took.record()) == {"seconds", "cpu_seconds", "other_cores_busy"}
    monkeypatch.setattr(clock, "PROC_STAT", clock.Path("/nonexistent/stat"))
    assert clock.Stopwatch().took().record()["other_cores_busy"] is None
