"""Where the TLS and CA directories are when nobody says: flag, environment, then per user."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobworker.cli import _defaults as defaults


@pytest.mark.parametrize(
    ("find", "variable", "leaf"),
    [(defaults.tls_dir, "JOBWORKER_TLS_DIR", "tls"), (defaults.ca_dir, "JOBWORKER_CA_DIR", "ca")],
)
def test_flag_then_environment_then_the_default_of_each_user(find, variable, leaf):
    environ = {variable: "/env", "HOME": "/home/bob"}
    assert find(Path("/flag"), environ, euid=0) == Path("/flag")
    assert find(None, environ, euid=0) == Path("/env")
    assert find(None, {variable: ""}, euid=0) == Path(f"/etc/jobworker/{leaf}")
    assert find(None, {"HOME": "/home/bob"}, euid=1000) == Path(
        f"/home/bob/.config/jobworker/{leaf}"
    )
    assert find(None, {"HOME": "/h", "XDG_CONFIG_HOME": "/x"}, euid=1000) == Path(
        f"/x/jobworker/{leaf}"
    )


def test_the_ca_directory_is_not_the_tls_directory():
    assert defaults.ca_dir(None, {}, euid=0) != defaults.tls_dir(None, {}, euid=0)
    assert defaults.ca_dir(None, {"HOME": "/h"}, euid=1) != defaults.tls_dir(
        None, {"HOME": "/h"}, euid=1
    )
