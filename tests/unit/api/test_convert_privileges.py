"""Privileges between the protobuf messages and the runner's types, both ways."""

from __future__ import annotations

from jobworker.api import _convert as convert
from jobworker.runner.records import Privileges
from jobworker.v1 import jobworker_pb2 as pb
from tests.records import a_record


def test_an_unset_message_means_the_defaults_and_admin_rights_come_from_the_caller() -> None:
    start = convert.start_request(pb.StartJobRequest(command="x"), by_admin=False)
    assert start.privileges == Privileges()
    assert not start.by_admin
    admin = convert.start_request(pb.StartJobRequest(command="x"), by_admin=True)
    assert admin.by_admin


def test_privileges_go_to_the_runner_and_come_back_in_the_job() -> None:
    message = pb.Privileges(
        cap_add=["net_admin"], cap_drop=["ALL"], seccomp_unconfined=True, no_new_privs=True
    )
    start = convert.start_request(
        pb.StartJobRequest(command="x", privileges=message), by_admin=True
    )
    assert start.privileges == Privileges(
        cap_add=("net_admin",), cap_drop=("ALL",), seccomp=False, no_new_privs=True
    )
    record = a_record(
        owner="admin",
        user="root",
        privileges=start.privileges,
    )
    assert convert.job(record).privileges == message
