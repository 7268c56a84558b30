"""``run``'s privilege flags, the request they make, and how ``status`` shows them."""

from __future__ import annotations

import pytest

from jobworker.cli import _render as render
from jobworker.cli._errors import UsageError
from jobworker.cli._parser import build
from jobworker.cli._request import start_request
from jobworker.v1 import jobworker_pb2 as pb


def request(*options: str) -> pb.StartJobRequest:
    return start_request(build().parse_args(["run", *options, "--", "true"]))


def test_no_flag_leaves_the_privileges_unset() -> None:
    assert not request().HasField("privileges")


def test_every_flag_reaches_the_request() -> None:
    made = request(
        "--cap-add", "net_admin", "--cap-add", "CAP_SYS_TIME", "--cap-drop", "ALL",
        "--seccomp", "unconfined", "--no-new-privs",
    )  # fmt: skip
    assert made.privileges == pb.Privileges(
        cap_add=["net_admin", "CAP_SYS_TIME"],
        cap_drop=["ALL"],
        seccomp_unconfined=True,
        no_new_privs=True,
    )


def test_an_unknown_seccomp_mode_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="invalid choice: 'off'"):
        request("--seccomp", "off")


def test_status_json_shows_what_was_asked() -> None:
    job = pb.Job(id="j", command="true", privileges=pb.Privileges(cap_drop=["CHOWN"]))
    assert render.job_json(job)["privileges"] == {
        "cap_add": [],
        "cap_drop": ["CHOWN"],
        "seccomp": "default",
        "no_new_privs": False,
    }
