"""Where things are when nobody says.

Chosen so that, on one host, ``jobworker certs init``, then ``jobworker server``,
then ``jobworker run -- echo hi`` work with no flags.

The TLS directory is ``$JOBWORKER_TLS_DIR`` if set, else ``/etc/jobworker/tls`` for
root (where a system service looks) and ``$XDG_CONFIG_HOME/jobworker/tls`` (usually
``~/.config/jobworker/tls``) for anyone else, whose client certificates are their own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

SERVER_ENV = "JOBWORKER_SERVER"
TLS_DIR_ENV = "JOBWORKER_TLS_DIR"

DEFAULT_SERVER = "localhost:50051"
"""Where the client connects and the server listens by default: loopback only."""
DEFAULT_STATE_DIR = Path("/var/lib/jobworker")
SYSTEM_TLS_DIR = Path("/etc/jobworker/tls")
DEFAULT_CLIENT = "admin"
"""The client certificate used unless --cert says otherwise: the one ``certs init`` makes."""


def tls_dir(
    given: Path | None, environ: Mapping[str, str] | None = None, euid: int | None = None
) -> Path:
    """The TLS directory: ``given``, else the environment, else the default for this user."""
    if given is not None:
        return given
    environ = os.environ if environ is None else environ
    if environ.get(TLS_DIR_ENV):
        return Path(environ[TLS_DIR_ENV])
    if (os.geteuid() if euid is None else euid) == 0:
        return SYSTEM_TLS_DIR
    config = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME", "~")) / ".config")
    return Path(config).expanduser() / "jobworker" / "tls"
