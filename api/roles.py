"""The roles a client can have, and the first admin: names the command line shows too.

Kept apart from the certificate code so that the authorization table and the command
line's choices read the names without loading any cryptography.
"""

from __future__ import annotations

import enum


class Role(enum.Enum):
    """What a client may do; carried in its certificate as ``urn:jobworker:role:<value>``."""

    READER = "reader"
    WRITER = "writer"
    ADMIN = "admin"


FIRST_ADMIN = "admin"
"""The user of the admin certificate ``jobworker certs init`` issues, which clients use
unless told otherwise."""
