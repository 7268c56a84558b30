"""The user and groups a job's command runs as, resolved from the passwd and group databases.

A user is written as ``systemd-run --uid``/``docker run --user`` take it: ``USER``
or ``USER:GROUP``, each a name or a number. A named user gets its primary group
and its supplementary groups, and its home directory as HOME, as login would
give them. A number that the passwd database does not know needs its group
spelled out: falling back to group 0 (root), as runc and docker do, would
quietly grant the root group's files.

Resolution happens in the service (at each start, or once for the service's
default user): the job's first process only applies the numbers (NSS lookups
may talk to a directory server, which has no place between clone and exec).
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass

from jobworker.isolation.errors import InvalidSpec

_MAX_ID = 2**32 - 2  # (uid_t)-1 means "unchanged" to the kernel


@dataclass(frozen=True)
class Credentials:
    """Who a job runs as; ``name`` is the user name, or the number when it has none."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str

    @classmethod
    def resolve(cls, text: str) -> Credentials:
        """``USER`` or ``USER:GROUP`` as the caller wrote it; raises InvalidSpec("user")."""
        user_text, has_group, group_text = text.partition(":")
        if not user_text or (has_group and not group_text):
            raise InvalidSpec("user", f"{text!r} is not USER or USER:GROUP")
        entry = _passwd_entry(user_text)
        if has_group:
            gid = _group_id(group_text)
        elif entry is not None:
            gid = entry.pw_gid
        else:
            raise InvalidSpec(
                "user",
                f"uid {user_text} has no passwd entry, so it has no group: "
                f"give one, as {user_text}:GID",
            )
        if entry is None:
            return cls(name=user_text, uid=int(user_text), gid=gid, groups=(gid,), home="/")
        groups = tuple(os.getgrouplist(entry.pw_name, gid))
        return cls(entry.pw_name, entry.pw_uid, gid, groups, entry.pw_dir or "/")

    @property
    def is_root(self) -> bool:
        """Whether the job would run with uid 0, which means all of root's powers."""
        return self.uid == 0


def _passwd_entry(user: str) -> pwd.struct_passwd | None:
    """The user's passwd entry; None for a number that has none."""
    if _is_number(user):
        uid = _number(user, "uid")
        try:
            return pwd.getpwuid(uid)
        except KeyError:
            return None
    try:
        return pwd.getpwnam(user)
    except KeyError:
        raise InvalidSpec("user", f"no such user: {user}") from None


def _group_id(group: str) -> int:
    if _is_number(group):
        return _number(group, "gid")
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise InvalidSpec("user", f"no such group: {group}") from None


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdecimal()  # not "١٢٣", which int() would also read


def _number(text: str, kind: str) -> int:
    number = int(text)
    if number > _MAX_ID:
        raise InvalidSpec("user", f"{kind} {text} is out of range (0 to {_MAX_ID})")
    return number
