"""How many jobs one ListJobs page holds: bounds of the contract that clients page by.

A page is built in one SQL query and sent in one message, so its size is bounded; the CLI
asks for the largest page to list in as few round trips as it can.
"""

from __future__ import annotations

from jobworker.runner.errors import InvalidRequest

DEFAULT_PAGE_SIZE = 100
"""A request's page size when it names none (0)."""

MAX_PAGE_SIZE = 1000


def page_size(requested: int) -> int:
    """The page size a request asked for, or ``InvalidRequest`` naming the field."""
    if requested < 0 or requested > MAX_PAGE_SIZE:
        raise InvalidRequest("page_size", f"must be between 0 and {MAX_PAGE_SIZE}")
    return requested or DEFAULT_PAGE_SIZE
