"""_protocol: a job's filesystem view survives its wire form; a malformed one is refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobworker.isolation._protocol import ProcessSetup
from jobworker.isolation.errors import MalformedMessage
from jobworker.isolation.filesystem import Bind, Filesystem, Tmpfs

VIEW = Filesystem(
    read_only=True,
    tmpfs=(Tmpfs("/tmp", 64 << 20), Tmpfs("/work", None)),
    binds=(Bind("/srv/data", "/data", read_only=True), Bind("/srv/é \u2603")),
    rootfs="/srv/root",
)


@pytest.mark.parametrize("view", [VIEW, Filesystem()], ids=["full", "default"])
def test_a_view_survives_its_wire_form(view: Filesystem) -> None:
    setup = ProcessSetup(argv=("true",), env={}, filesystem=view)
    assert ProcessSetup.from_dict(json.loads(json.dumps(setup.to_dict()))) == setup


def wire(change: dict[str, Any], inside: str | None = None) -> dict[str, Any]:
    data = ProcessSetup(argv=("true",), env={}, filesystem=VIEW).to_dict()
    target = data["filesystem"] if inside is None else data["filesystem"][inside][0]
    target.update(change)
    return data


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (wire({"read_only": 1}), "filesystem: read_only is not true or false"),
        (wire({"tmpfs": {}}), "filesystem: tmpfs is not a list"),
        (wire({"binds": [[]]}), "bind: not a JSON object"),
        (wire({"size_bytes": "1M"}, inside="tmpfs"), "tmpfs: size_bytes is not an integer"),
        (wire({"size_bytes": True}, inside="tmpfs"), "tmpfs: size_bytes is not an integer"),
        (wire({"source": None}, inside="binds"), "bind: source is not a string"),
        (wire({"mode": "rw"}, inside="binds"), "bind: unknown fields mode"),
        (wire({"rootfs": 7}), "filesystem: rootfs is not a string"),
        (wire({"overlay": True}), "filesystem: unknown fields overlay"),
    ],
)
def test_a_malformed_view_is_refused(data: dict[str, Any], reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        ProcessSetup.from_dict(data)


def test_a_setup_without_a_view_is_malformed() -> None:
    data = ProcessSetup(argv=("true",), env={}).to_dict()
    del data["filesystem"]
    with pytest.raises(MalformedMessage, match="no filesystem"):
        ProcessSetup.from_dict(data)
