"""Who a job runs as: the policy of who may choose which user, and transient user ids.

Uses accounts every Debian-like system has: root (0), nobody (65534, group
nogroup), and the groups disk and shadow.
"""

from __future__ import annotations

import grp
import os
from pathlib import Path

import pytest

from jobworker.isolation.credentials import Credentials
from jobworker.isolation.errors import InvalidSpec
from jobworker.runner._users import IdRange, TransientUsers, UserPolicy
from jobworker.runner.defaults import TRANSIENT_IDS
from jobworker.runner.errors import CapacityExhausted, InvalidConfiguration, UserNotAllowed

TRANSIENT = UserPolicy.resolve(None, ())
NOBODY = Credentials.resolve("nobody")
JOB = "0b6e1c5c-6b0b-4c5b-9d3a-3d7b1f2a9c10"


def test_a_job_naming_nobody_gets_the_default_a_transient_user_unless_configured():
    assert TRANSIENT.choose("", anyone=False) is None
    fixed = UserPolicy.resolve("nobody", ())
    assert fixed.choose("", anyone=False) == NOBODY


@pytest.mark.parametrize("user", ["root", "0", "0:0", "nobody", "65534", "nobody:nogroup"])
def test_a_non_admin_may_not_name_users_the_operator_did_not_allow(user):
    with pytest.raises(UserNotAllowed, match=f"only an admin may run a job as {user} "):
        TRANSIENT.choose(user, anyone=False)


@pytest.mark.parametrize("user", ["nobody:0", "nobody:root", "nobody:disk", "nobody:shadow"])
def test_allowing_a_user_does_not_allow_it_with_another_group(user):
    policy = UserPolicy.resolve(None, ("nobody",))
    assert policy.choose("nobody", anyone=False) == NOBODY
    assert policy.choose("65534", anyone=False) == NOBODY  # the same account, as a number
    with pytest.raises(UserNotAllowed, match="others may run as the default user, nobody"):
        policy.choose(user, anyone=False)


@pytest.mark.parametrize("anyone", [False, True], ids=["non-admin", "admin"])
def test_a_configured_user_named_as_configured_is_not_looked_up_again(anyone):
    # What start resolved is returned itself: a lookup would make new credentials.
    policy = UserPolicy.resolve("nobody", ("nobody:nogroup", "root:disk"))
    assert policy.choose("nobody", anyone=anyone) is policy.default
    assert policy.choose("nobody:nogroup", anyone=anyone) is policy.allowed[0]
    assert policy.choose("root:disk", anyone=anyone) is policy.allowed[1]
    # Another spelling of an allowed account is looked up, and allowed as before.
    by_number = policy.choose("65534:nogroup", anyone=anyone)
    assert by_number == policy.allowed[0]
    assert by_number is not policy.allowed[0]


def test_only_the_exact_configured_text_skips_the_lookup():
    policy = UserPolicy.resolve(None, ("root:disk",))
    with pytest.raises(UserNotAllowed, match="only an admin may run a job as root "):
        policy.choose("root", anyone=False)
    with pytest.raises(InvalidSpec, match="no such group: disk "):
        policy.choose("root:disk ", anyone=False)  # not the configured text: looked up


def test_an_allowed_user_with_a_group_is_allowed_with_exactly_that_group():
    policy = UserPolicy.resolve(None, ("nobody:disk",))
    disk = grp.getgrnam("disk").gr_gid
    assert policy.choose("nobody:disk", anyone=False).gid == disk  # type: ignore[union-attr]
    with pytest.raises(UserNotAllowed):
        policy.choose("nobody", anyone=False)


def test_supplementary_groups_are_part_of_what_is_compared():
    # A fixed default and an allowed entry are compared with everything the job would
    # get: the same uid and gid with other supplementary groups is another identity.
    policy = UserPolicy.resolve("nobody", ())
    assert policy.default is not None
    assert policy.default.groups == tuple(os.getgrouplist("nobody", NOBODY.gid))
    other_groups = Credentials(
        name="nobody", uid=NOBODY.uid, gid=NOBODY.gid, groups=(NOBODY.gid, 6), home=NOBODY.home
    )
    assert other_groups != policy.default


def test_an_admin_may_name_anyone_even_root():
    assert TRANSIENT.choose("root", anyone=True) == Credentials.resolve("root")
    assert TRANSIENT.choose("nobody:disk", anyone=True).gid == grp.getgrnam("disk").gr_gid  # type: ignore[union-attr]


def test_an_unknown_user_is_invalid_for_everyone():
    with pytest.raises(InvalidSpec, match="no such user"):
        TRANSIENT.choose("no-such-user-here", anyone=True)
    with pytest.raises(InvalidSpec, match="no such user"):
        UserPolicy.resolve(None, ("nobody",)).choose("no-such-user-here", anyone=False)


def test_a_configured_user_that_does_not_exist_is_a_configuration_error():
    with pytest.raises(InvalidConfiguration, match="no such user: no-such-user-here"):
        UserPolicy.resolve("no-such-user-here", ())
    with pytest.raises(InvalidConfiguration, match="no such group: nope-group"):
        UserPolicy.resolve(None, ("nobody:nope-group",))


def test_transient_users_get_their_own_ids_in_turn_round_the_range(tmp_path: Path):
    users = TransientUsers(IdRange(70000, 70002), tmp_path)
    first = users.allocate(JOB)
    assert first == Credentials(
        name="job-0b6e1c5c",
        uid=70000,
        gid=70000,
        groups=(70000,),
        home=str(tmp_path / JOB),
        listed=False,
    )
    assert [users.allocate(JOB).uid for _ in range(2)] == [70001, 70002]
    with pytest.raises(CapacityExhausted, match="all 3 transient user ids"):
        users.allocate(JOB)
    users.release(70001)
    users.release(70000)
    # Not the lowest free id but the next one round: a uid comes back as late as it can.
    assert users.allocate(JOB).uid == 70000
    assert users.allocate(JOB).uid == 70001


def test_ids_kept_across_a_restart_are_skipped_and_handing_out_continues(tmp_path: Path):
    users = TransientUsers(IdRange(70000, 70009), tmp_path)
    users.keep(70005)
    users.keep(12345)  # not transient: ignored
    users.continue_after(70004)
    assert users.allocate(JOB).uid == 70006
    assert users.in_use == 2
    users.continue_after(70009)
    assert users.allocate(JOB).uid == 70000


def test_the_default_transient_range_is_free_on_this_host():
    IdRange(*TRANSIENT_IDS).check_unused()


def test_a_range_that_an_account_uses_is_refused():
    with pytest.raises(InvalidConfiguration, match=r"user nobody \(65534\).*--transient-ids"):
        IdRange(65000, 66000).check_unused()
    with pytest.raises(InvalidConfiguration, match=r"group root \(0\)"):
        IdRange(0, 0).check_unused()


def test_a_range_that_overlaps_subordinate_ids_is_refused(tmp_path: Path):
    subuid = tmp_path / "subuid"
    subuid.write_text("alice:100000:65536\nbroken line\n")
    with pytest.raises(InvalidConfiguration, match="subuid entry alice:100000:65536"):
        IdRange(165535, 170000).check_unused(subordinate_files=(subuid,))
    IdRange(165536, 170000).check_unused(subordinate_files=(subuid, tmp_path / "missing"))


def test_a_transient_user_is_named_in_the_jobs_own_passwd_and_group_lines(tmp_path: Path):
    user = TransientUsers(IdRange(70000, 70000), tmp_path).allocate(JOB)
    passwd, group = user.account_lines()
    assert (
        passwd == f"job-0b6e1c5c:x:70000:70000:jobworker transient user:{tmp_path / JOB}:/bin/sh\n"
    )
    assert group == "job-0b6e1c5c:x:70000:\n"
