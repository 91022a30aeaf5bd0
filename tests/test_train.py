"""The train stage's own logic that needs no TensorFlow: the cost line it prints before training."""

from __future__ import annotations

import pytest

from stages.train import cost_line, duration, last_seconds_per_epoch


@pytest.mark.parametrize("seconds, text", [(0.4, "0 s"), (89, "89 s"), (90, "2 min"), (89 * 60, "89 min"),
                                           (90 * 60, "1.5 h"), (1000 * 50 * 4.4, "61.1 h")])
def test_duration(seconds, text):
    assert duration(seconds) == text


def test_the_cost_line_multiplies_epochs_seeds_and_the_last_measured_time():
    line = cost_line("base", 50, 1719, 1000, 4.38)
    assert line == ("train@base: up to 50 epoch(s) × 1,719 steps × 1,000 seed(s); about 60.8 h at most, at the "
                    "last run's 4.38 CPU s/epoch (reports/timings/base.train.json)")


def test_without_an_earlier_run_the_cost_line_says_there_is_no_estimate():
    assert cost_line("base", 1, 1719, 1, None) == (
        "train@base: up to 1 epoch(s) × 1,719 steps × 1 seed(s); no time estimate yet "
        "(no usable reports/timings/base.train.json from an earlier run)")


@pytest.mark.parametrize("content, expected", [
    (None, None),
    ('{"seconds": 9.1, "seconds_per_epoch": 9.1, "cpu_seconds_per_epoch": 4.38}', 4.38),
    ('{"seconds_per_epoch": 4.38}', None),  # wall time alone: a loaded machine inflates it
    ('{"cpu_seconds_per_epoch": NaN}', None),
    ('{"cpu_seconds_per_epoch": 0}', None),
    ("{half a file", None),
])
def test_the_last_measured_time_comes_from_a_trustworthy_timings_file_or_not_at_all(tmp_path, monkeypatch,
                                                                                    content, expected):
    monkeypatch.chdir(tmp_path)
    if content is not None:
        (tmp_path / "reports" / "timings").mkdir(parents=True)
        (tmp_path / "reports" / "timings" / "base.train.json").write_text(content)
    assert last_seconds_per_epoch("base") == expected
