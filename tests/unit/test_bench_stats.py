"""The benchmark runner's statistics and target checks (pure functions; nothing is timed)."""

import pytest

from bench.core import Row, Summary, Target, median, p99, percentile, ratio
from bench.runner import markdown


def test_median_odd_and_even():
    assert median([3, 1, 2]) == 2
    assert median([4, 1, 3, 2]) == 2.5
    assert median([7]) == 7


def test_median_of_nothing_raises():
    with pytest.raises(ValueError):
        median([])


def test_p99_is_nearest_rank_never_below_what_was_seen():
    assert p99(list(range(1, 101))) == 99
    assert p99(list(range(1, 1001))) == 990
    # fewer than 100 samples: the p99 is the maximum
    assert p99([5, 1, 9, 3]) == 9
    assert p99([2.5]) == 2.5


def test_percentile_bounds():
    assert percentile([1, 2, 3, 4], 50) == 2
    assert percentile([1, 2, 3, 4], 100) == 4
    for q in (0, -1, 101):
        with pytest.raises(ValueError):
            percentile([1, 2], q)
    with pytest.raises(ValueError):
        percentile([], 50)


def test_ratio():
    assert ratio(1.0, 4.0) == 0.25
    assert ratio(None, 4.0) is None
    assert ratio(1.0, None) is None
    assert ratio(1.0, 0.0) is None


def test_summary_tail_follows_the_direction_of_better():
    samples = list(range(1, 201))
    lower = Summary.of(samples)
    assert lower is not None and lower.median == 100.5 and lower.tail == 198
    higher = Summary.of(samples, higher_is_better=True)
    assert higher is not None and higher.tail == 2  # the slow 1 % of a rate
    assert Summary.of([]) is None


def test_targets_on_median_and_tail():
    s = Summary.of([1.0, 1.0, 1.0, 5.0])
    assert s is not None
    assert Target("<=", 1.0).check(s) is True
    assert Target("<=", 4.0, "tail").check(s) is False
    assert Target(">=", 1.0).check(s) is True
    assert Target("<=", 1.0).check(None) is None


def test_row_met_and_merge():
    row = Row("k", "t", "ms", cellbox=[1.0, 2.0], targets=[Target("<=", 2.0)])
    assert row.met() is True
    row.merge(Row("k", "t", "ms", cellbox=[10.0, 10.0], jupyter=[3.0]))
    assert row.cellbox == [1.0, 2.0, 10.0, 10.0] and row.jupyter == [3.0]
    assert row.met() is False
    assert Row("k", "t", "ms", cellbox=[1.0]).met() is None  # no target
    assert Row("k", "t", "ms", targets=[Target("<=", 1.0)]).met() is None  # not measured


def test_markdown_has_one_line_per_row_and_the_ratio():
    meta = {"host": {"python": "3.11.7", "implementation": "CPython", "host": "h", "cpu": "c",
                     "cores": 2, "platform": "p", "date": "d", "loadavg": [0.1, 0.2, 0.3],
                     "versions": {"msgspec": "1"}},
            "command": "python -m bench", "loadavg_end": [0.1, 0.2, 0.3], "seconds": 1}
    rows = [Row("a", "alpha", "ms", cellbox=[1.0], jupyter=[4.0], targets=[Target("<=", 2.0)]),
            Row("b", "beta", "ms", cellbox=[3.0], jupyter_note="did not return within 5 s")]
    text = markdown(rows, meta)
    lines = [line for line in text.splitlines() if line.startswith("| alpha") or line.startswith("| beta")]
    assert len(lines) == 2
    assert "0.25×" in lines[0] and "| yes |" in lines[0]
    assert "did not return within 5 s" in lines[1]
