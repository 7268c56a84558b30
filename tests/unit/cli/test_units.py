"""Sizes, durations and counts as typed on the command line."""

from __future__ import annotations

import argparse

import pytest

from jobworker.cli._units import (
    duration_argument,
    parse_cores,
    parse_count,
    parse_duration,
    parse_duration_or_forever,
    parse_size,
    size_argument,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4096", 4096),
        ("1K", 1024),
        ("64M", 64 << 20),
        ("64m", 64 << 20),
        ("512Mi", 512 << 20),
        ("512MiB", 512 << 20),
        ("64MB", 64 << 20),
        ("1.5G", 3 << 29),
        ("1.5Gi", 3 << 29),
        ("2T", 2 << 40),
        (" 10M ", 10 << 20),
        (".5K", 512),
    ],
)
def test_sizes_are_powers_of_1024(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "M", "12X", "-5M", "0", "0M", "1.5", "1e3", "64 Mx", "10i"])
def test_bad_sizes_are_refused_with_an_example(text):
    with pytest.raises(argparse.ArgumentTypeError, match=r"size|bytes|more than 0"):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5s", 5.0),
        ("500ms", 0.5),
        ("1.5m", 90.0),
        ("2h", 7200.0),
        ("3", 3.0),
        ("0s", 0.0),
        ("7d", 604800.0),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "5x", "-1s", "5 sec", "1w", "forever"])
def test_bad_durations_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "seconds"), [("forever", None), ("Forever", None), ("12h", 43200.0), ("0", 0.0)]
)
def test_durations_or_forever(text, seconds):
    assert parse_duration_or_forever(text) == seconds


@pytest.mark.parametrize("text", ["", "never", "-1d", "7 days"])
def test_bad_durations_or_forever_say_both_forms(text):
    with pytest.raises(argparse.ArgumentTypeError, match=r"e\.g\. 12h, 7d\), or forever"):
        parse_duration_or_forever(text)


def test_cores_and_counts():
    assert parse_cores("0.5") == 0.5
    assert parse_count("100") == 100
    for bad in ("0", "-1", "abc", "nan", "inf"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_cores(bad)
    for bad in ("0", "-1", "1.5", "²", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_count(bad)


@pytest.mark.parametrize("size", [1 << 30, 64 << 20, 3 << 40, 1536, 1000, 1])
def test_a_size_is_written_as_it_is_typed(size: int) -> None:
    text = size_argument(size)
    assert parse_size(text) == size
    assert len(text) <= len(str(size))


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(7 * 86400.0, "7d"), (10.0, "10s"), (90.0, "90s"), (3600.0, "1h"), (0.5, "500ms"),
     (0.0, "0s"), (1.2345, "1.2345s")],
)  # fmt: skip
def test_a_duration_is_written_as_it_is_typed(seconds: float, text: str) -> None:
    assert duration_argument(seconds) == text
    assert parse_duration(text) == seconds
