"""The authorization table: every method the server exposes, for every role."""

from __future__ import annotations

import pytest

from jobworker.api._policy import METHOD_PERMISSIONS, Caller
from jobworker.api.roles import Role
from jobworker.v1 import jobworker_pb2

SERVICE = jobworker_pb2.DESCRIPTOR.services_by_name["JobService"]
WRITES = {"StartJob", "StopJob", "RemoveJob"}


def test_every_rpc_of_the_schema_is_in_the_table() -> None:
    declared = {f"/{SERVICE.full_name}/{method.name}" for method in SERVICE.methods}
    assert declared <= set(METHOD_PERMISSIONS)


@pytest.mark.parametrize("method", [m.name for m in SERVICE.methods])
@pytest.mark.parametrize("role", list(Role))
def test_readers_only_read_writers_and_admins_also_write(role: Role, method: str) -> None:
    allowed = Caller(user="u", role=role).may(f"/{SERVICE.full_name}/{method}")
    assert allowed == (role is not Role.READER or method not in WRITES)


@pytest.mark.parametrize("role", list(Role))
def test_a_method_missing_from_the_table_is_refused_to_everyone(role: Role) -> None:
    assert not Caller(user="u", role=role).may("/jobworker.v1.JobService/DeleteEverything")


@pytest.mark.parametrize("role", list(Role))
def test_health_and_reflection_are_open_to_every_role(role: Role) -> None:
    caller = Caller(user="u", role=role)
    assert caller.may("/grpc.health.v1.Health/Check")
    assert caller.may("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")


def test_only_an_admin_sees_other_users_jobs() -> None:
    for role in (Role.READER, Role.WRITER):
        caller = Caller(user="bob", role=role)
        assert caller.sees("bob")
        assert not caller.sees("carol")
        assert caller.owner_filter == "bob"
    admin = Caller(user="root", role=Role.ADMIN)
    assert admin.sees("carol")
    assert admin.owner_filter is None


def test_only_an_admin_may_run_jobs_as_anyone() -> None:
    # Which users the others may choose is the runner's policy (tests/unit/runner/test_users.py).
    assert Caller(user="carol", role=Role.ADMIN).is_admin
    assert not Caller(user="bob", role=Role.WRITER).is_admin
    assert not Caller(user="alice", role=Role.READER).is_admin
