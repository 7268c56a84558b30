"""Parsing sizes, durations and counts as people type them on a command line.

Sizes: a number with an optional unit, ``K``, ``M``, ``G``, ``T`` (powers of
1024, as systemd and docker read them) or ``Ki``, ``Mi``, ``Gi``, ``Ti``, any
case, with an optional trailing ``B``: ``64M``, ``1.5G``, ``512Mi``, ``4096``.
Durations: a number with ``ms``, ``s``, ``m``, ``h`` or ``d`` (a bare number is
seconds), or several added up as systemd writes them: ``500ms``, ``5s``, ``1.5m``,
``7d``, ``1h30m``, ``2m 30s``.

Each parser raises ``argparse.ArgumentTypeError`` with a message that shows a
valid example, so argparse reports it as a usage error naming the option.
Decimal arithmetic keeps ``1.5G`` exact. ``size_argument`` and ``duration_argument``
write a value back as one would type it, for ``--help`` to show defaults defined elsewhere.
"""

from __future__ import annotations

import argparse
import re
from decimal import Decimal, InvalidOperation

from jobworker.runner.defaults import MAX_TIME_LIMIT_SECONDS

_NUMBER = r"(?P<number>[0-9]+(?:\.[0-9]+)?|\.[0-9]+)"
_SIZE = re.compile(_NUMBER + r"\s*(?:(?P<unit>[kmgt])i?)?b?", re.I)
_SIZE_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
_DURATION = re.compile(_NUMBER + r"\s*(?P<unit>ms|s|m|h|d|)", re.I)
_DURATION_PART = re.compile(_NUMBER + r"\s*(?P<unit>ms|s|m|h|d)\s*", re.I)
_COUNT = re.compile(r"[0-9]+")
_DURATION_UNITS = {
    "ms": Decimal("0.001"), "s": Decimal(1), "": Decimal(1), "m": Decimal(60), "h": Decimal(3600),
    "d": Decimal(86400),
}  # fmt: skip
FOREVER = "forever"


def parse_size(text: str) -> int:
    """A size in bytes: ``64M``, ``1.5G``, ``512Mi``, ``4096``."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size; use a number of bytes or K, M, G, T (e.g. 64M, 1.5G, 512Mi)"
        )
    value = Decimal(match["number"]) * 1024 ** _SIZE_UNITS[(match["unit"] or "").lower()]
    if value != value.to_integral_value():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of bytes")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a size must be more than 0")
    return int(value)


def parse_size_or_zero(text: str) -> int:
    """A size as ``parse_size`` reads it, or ``0``: where none at all is a choice."""
    return 0 if text.strip() == "0" else parse_size(text)


def parse_size_or_none(text: str) -> int | None:
    """A size as ``parse_size`` reads it, or ``none`` (None): no limit."""
    if text.strip().lower() == "none":
        return None
    try:
        return parse_size(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size; use a number of bytes or K, M, G, T (e.g. 1G), or none"
        ) from None


def parse_duration(text: str) -> float:
    """A duration in seconds: ``500ms``, ``5s``, ``1.5m``, ``1h30m``; a bare number is seconds."""
    match = _DURATION.fullmatch(text.strip())
    if match:
        return float(Decimal(match["number"]) * _DURATION_UNITS[match["unit"].lower()])
    total, position, stripped = Decimal(0), 0, text.strip()
    while stripped and (part := _DURATION_PART.match(stripped, position)):
        total += Decimal(part["number"]) * _DURATION_UNITS[part["unit"].lower()]
        position = part.end()
        if position == len(stripped):
            return float(total)
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a duration; use a number with ms, s, m, h or d "
        "(e.g. 500ms, 5s, 2m, 1h30m)"
    )


def parse_time_limit(text: str) -> float:
    """A time limit: a duration more than 0 and at most a year, e.g. ``90s``, ``1h30m``."""
    seconds = parse_duration(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a time limit must be more than 0s")
    if seconds > MAX_TIME_LIMIT_SECONDS:
        raise argparse.ArgumentTypeError(f"{text!r}: a time limit may be at most a year (365d)")
    return seconds


def parse_duration_or_forever(text: str) -> float | None:
    """A duration as ``parse_duration`` reads it, or ``forever`` (None)."""
    if text.strip().lower() == FOREVER:
        return None
    try:
        return parse_duration(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration; use a number with ms, s, m, h or d (e.g. 12h, 7d), "
            f"or {FOREVER}"
        ) from None


def parse_cores(text: str) -> float:
    """A number of CPU cores, more than 0: ``0.5``, ``2``."""
    try:
        cores = Decimal(text.strip())
    except InvalidOperation:
        cores = Decimal(-1)
    if not cores.is_finite() or cores <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of CPU cores (e.g. 0.5, 2)")
    return float(cores)


def parse_count(text: str) -> int:
    """A whole number more than 0: ``100``."""
    if not _COUNT.fullmatch(text.strip()) or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number more than 0")
    return int(text)


def parse_id_range(text: str) -> tuple[int, int]:
    """An inclusive range of user ids: ``FIRST-LAST``, e.g. ``1879048192-1879113727``."""
    first, dash, last = text.strip().partition("-")
    if not (dash and _COUNT.fullmatch(first) and _COUNT.fullmatch(last)):
        raise argparse.ArgumentTypeError(f"{text!r} is not a range of ids FIRST-LAST")
    if not 0 < int(first) <= int(last) <= 2**32 - 2:
        raise argparse.ArgumentTypeError(
            f"{text!r}: ids go from 1 to {2**32 - 2}, and FIRST may not exceed LAST"
        )
    return int(first), int(last)


def size_argument(size: int) -> str:
    """``size`` as one would type it, in the largest whole unit: ``64M``, ``1G``."""
    for unit, power in (("T", 4), ("G", 3), ("M", 2), ("K", 1)):
        if size and size % 1024**power == 0:
            return f"{size // 1024**power}{unit}"
    return str(size)


def duration_argument(seconds: float) -> str:
    """``seconds`` as one would type it, in the largest whole unit: ``7d``, ``500ms``."""
    exact = Decimal(str(seconds))
    for unit in ("d", "h", "m", "s", "ms"):
        count = exact / _DURATION_UNITS[unit]
        if exact and count == count.to_integral_value():
            return f"{int(count)}{unit}"
    return f"{exact.normalize():f}s"
