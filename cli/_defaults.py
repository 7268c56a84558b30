"""Where things are when nobody says.

Chosen so that, on one host, ``jobworker certs init``, then ``jobworker server``,
then ``jobworker run -- echo hi`` work with no flags.

The TLS directory is ``$JOBWORKER_TLS_DIR`` if set, else ``/etc/jobworker/tls`` for
root (where a system service looks) and ``$XDG_CONFIG_HOME/jobworker/tls`` (usually
``~/.config/jobworker/tls``) for anyone else, whose client certificates are their own.
The CA directory, which holds the CA's private key and which the server never reads, is
found the same way: ``$JOBWORKER_CA_DIR``, ``/etc/jobworker/ca`` or
``$XDG_CONFIG_HOME/jobworker/ca``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from jobworker.api.roles import FIRST_ADMIN

SERVER_ENV = "JOBWORKER_SERVER"
TLS_DIR_ENV = "JOBWORKER_TLS_DIR"
CA_DIR_ENV = "JOBWORKER_CA_DIR"

DEFAULT_SERVER = "localhost:50051"
"""Where the client connects and the server listens by default: loopback only."""
DEFAULT_STATE_DIR = Path("/var/lib/jobworker")
SYSTEM_TLS_DIR = Path("/etc/jobworker/tls")
SYSTEM_CA_DIR = Path("/etc/jobworker/ca")
DEFAULT_CLIENT = FIRST_ADMIN
"""The client certificate used unless --cert says otherwise: the one ``certs init`` makes."""


def tls_dir(
    given: Path | None, environ: Mapping[str, str] | None = None, euid: int | None = None
) -> Path:
    """The TLS directory: ``given``, else the environment, else the default for this user."""
    return _directory(given, TLS_DIR_ENV, SYSTEM_TLS_DIR, environ, euid)


def ca_dir(
    given: Path | None, environ: Mapping[str, str] | None = None, euid: int | None = None
) -> Path:
    """The CA directory: ``given``, else the environment, else the default for this user."""
    return _directory(given, CA_DIR_ENV, SYSTEM_CA_DIR, environ, euid)


def _directory(
    given: Path | None,
    variable: str,
    system: Path,
    environ: Mapping[str, str] | None,
    euid: int | None,
) -> Path:
    """``given``, ``$variable``, ``system`` for root, or its namesake in the user's config."""
    if given is not None:
        return given
    environ = os.environ if environ is None else environ
    if environ.get(variable):
        return Path(environ[variable])
    if (os.geteuid() if euid is None else euid) == 0:
        return system
    config = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME", "~")) / ".config")
    return Path(config).expanduser() / "jobworker" / system.name
