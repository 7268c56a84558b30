"""Pages of a job listing, and the token that continues one.

A listing goes in the order jobs were created, ties broken by id, and each page
ends at a job: the next one starts after that job's ``(created_at, id)``, a key
the database looks up in an index. Jobs removed or started between two pages
therefore neither skip nor repeat any other job, as counting an offset would,
and a page costs the same however many records there are.

The token is opaque to clients: URL-safe base64 of a small versioned JSON array.
It is not signed, and need not be: it only says where to resume, and the owner
filter comes from the caller, never from the token, so a forged token shows no
job that the caller could not list anyway.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from jobworker.runner.errors import InvalidRequest
from jobworker.runner.records import JobRecord

_VERSION = 1
_MAX_TOKEN_LENGTH = 1024
"""Far above any real token; refused unread beyond it (deeply nested JSON overflows the parser)."""


@dataclass(frozen=True)
class Position:
    """Where a listing stopped: after the job with this id, created at this time.

    ``created_at`` is the text the database orders by, as stored; it is never parsed,
    so a listing can go past a damaged record too.
    """

    created_at: str
    job_id: str

    def token(self) -> str:
        """The opaque token that resumes a listing here."""
        text = json.dumps([_VERSION, self.created_at, self.job_id], separators=(",", ":"))
        return base64.urlsafe_b64encode(text.encode()).decode()

    @classmethod
    def from_token(cls, token: str) -> Position:
        """Inverse of ``token``; ``InvalidRequest("page_token")`` for anything else."""
        if len(token) <= _MAX_TOKEN_LENGTH:
            try:
                decoded = json.loads(base64.b64decode(token, altchars=b"-_", validate=True))
            except ValueError:  # binascii.Error, UnicodeDecodeError and JSONDecodeError alike
                decoded = None
            match decoded:
                case [version, str(created_at), str(job_id)] if version == _VERSION:
                    return cls(created_at, job_id)
        raise InvalidRequest("page_token", "not a page token from an earlier ListJobs call")


@dataclass(frozen=True)
class JobPage:
    """One page of a listing; ``next_token`` is empty on the last one."""

    records: tuple[JobRecord, ...]
    next_token: str
