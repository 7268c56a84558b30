"""How many output streams callers may hold open: per user, and in total.

Each follower holds a file descriptor and an inotify watch in the service for as
long as it follows, which can be as long as its job runs. Without a bound, one
caller opening followers in a loop would use up the service's descriptors, and
then every start would fail for everyone. Past a bound the call is refused at
once with RESOURCE_EXHAUSTED naming the limit, as Nomad and Kubernetes refuse
log streams past theirs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from jobworker.api.errors import TooManyStreams

DEFAULT_MAX_STREAMS = 1024
DEFAULT_MAX_STREAMS_PER_USER = 128


class StreamSlots:
    """Counts open streams; ``hold`` takes one for the length of a stream, or refuses."""

    def __init__(
        self, total: int = DEFAULT_MAX_STREAMS, per_user: int = DEFAULT_MAX_STREAMS_PER_USER
    ) -> None:
        self.total = total
        self.per_user = per_user
        self._open: Counter[str] = Counter()

    @contextmanager
    def hold(self, user: str) -> Iterator[None]:
        """One stream for ``user`` while the block runs; ``TooManyStreams`` if none is left."""
        if self._open[user] >= self.per_user:
            raise TooManyStreams(
                f"{user} already has {self.per_user} output streams open, the limit per user; "
                "close one first"
            )
        if self._open.total() >= self.total:
            raise TooManyStreams(
                f"the server already has {self.total} output streams open, its limit; "
                "try again later"
            )
        self._open[user] += 1
        try:
            yield
        finally:
            self._open[user] -= 1
            if not self._open[user]:
                del self._open[user]

    def open_streams(self, user: str | None = None) -> int:
        """How many streams are open now, of ``user`` or of everyone."""
        return self._open.total() if user is None else self._open[user]
