"""The limits a job gets: what it asks for, else the server's default, never above its maximum.

An operator sharing a host between teams sets a default for jobs that ask for
nothing (without one, a job's fork bomb or memory hog has only the limit on all
jobs together, see ``jobworker.isolation.capacity``) and a maximum nobody may
exceed. Where there is a maximum but no default, a job that asks for nothing
gets the maximum: it may never run unlimited. A request above a maximum is
refused, naming the limit, rather than quietly lowered.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from jobworker.isolation.limits import Limits
from jobworker.runner.errors import InvalidConfiguration, InvalidRequest

_FIELDS = (("cpu_cores", "cpu", "cores"), ("memory_bytes", "memory", "bytes"), ("pids", "pids", ""))
"""Limits field, the name requests and errors use for it, and its unit."""


@dataclass(frozen=True)
class LimitPolicy:
    """The server's default and maximum of each limit; a field that is None sets nothing."""

    defaults: Limits
    maximum: Limits

    def __post_init__(self) -> None:
        for field, name, unit in _FIELDS:
            default, most = getattr(self.defaults, field), getattr(self.maximum, field)
            if default is not None and most is not None and default > most:
                raise InvalidConfiguration(
                    f"the default {name} limit ({_amount(default, unit)}) is above the maximum "
                    f"({_amount(most, unit)})"
                )

    def apply(self, requested: Limits) -> Limits:
        """The limits a job asking for ``requested`` gets; ``InvalidRequest`` above a maximum.

        Only the values are filled in here; whether they are valid at all is checked
        with the rest of the job (``JobSpec.validate``).
        """
        chosen = {}
        for field, name, unit in _FIELDS:
            asked, most = getattr(requested, field), getattr(self.maximum, field)
            if asked is None:
                default = getattr(self.defaults, field)
                chosen[field] = default if default is not None else most
                continue
            if most is not None and _number(asked) and asked > most:
                maximum = _amount(most, unit)
                raise InvalidRequest(
                    name, f"{_amount(asked, unit)} is above the server's maximum of {maximum}"
                )
            chosen[field] = asked
        swap, most = requested.memory_swap_bytes, self.maximum.memory_bytes
        if swap is not None and most is not None and _number(swap) and swap > most:
            # Swap is memory the host pays for on disk: no more of it than of memory.
            raise InvalidRequest(
                "memory_swap", f"{swap} bytes is above the server's maximum memory of {most} bytes"
            )
        return replace(requested, **chosen)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _amount(value: float, unit: str) -> str:
    return f"{value:g} {unit}".strip() if isinstance(value, float) else f"{value} {unit}".strip()
