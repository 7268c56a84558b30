"""The user and groups a job's command runs as, resolved from the passwd and group databases.

A user is written as ``systemd-run --uid``/``docker run --user`` take it: ``USER``
or ``USER:GROUP``, each a name or a number. A named user gets its primary group
and its supplementary groups, and its home directory as HOME, as login would
give them. A number that the passwd database does not know needs its group
spelled out: falling back to group 0 (root), as runc and docker do, would
quietly grant the root group's files.

Resolution happens in the service, off its event loop (NSS lookups may talk to
a directory server): the job's first process only applies the numbers, since a
lookup has no place between clone and exec.

A *transient* user (``Credentials.transient``) is not looked up at all: the
service makes one up per job from a reserved range of ids, like systemd's
``DynamicUser=``, so that two jobs never share a uid. The host's databases do
not know it, which is what ``listed`` says: a job with its own mount namespace
is then shown an /etc/passwd and /etc/group that name it.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass

from jobworker.isolation.errors import InvalidSpec

_MAX_ID = 2**32 - 2  # (uid_t)-1 means "unchanged" to the kernel
_MAX_ID_DIGITS = len(str(_MAX_ID))


@dataclass(frozen=True)
class Credentials:
    """Who a job runs as; ``name`` is the user name, or the number when it has none."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str
    listed: bool = True
    """Whether the host's passwd database names this user (a transient user it does not)."""

    @classmethod
    def resolve(cls, text: str) -> Credentials:
        """``USER`` or ``USER:GROUP`` as the caller wrote it; raises InvalidSpec("user")."""
        user_text, has_group, group_text = text.partition(":")
        if "\0" in text or not user_text or (has_group and not group_text):
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

    @classmethod
    def transient(cls, name: str, uid: int, home: str) -> Credentials:
        """A user of one job only: its own uid, a group of the same number and no other."""
        return cls(name=name, uid=uid, gid=uid, groups=(uid,), home=home, listed=False)

    def account_lines(self) -> tuple[str, str]:
        """The passwd and group lines that name this user, for a job's own view of /etc."""
        return (
            f"{self.name}:x:{self.uid}:{self.gid}:jobworker transient user:{self.home}:/bin/sh\n",
            f"{self.name}:x:{self.gid}:\n",
        )

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
    digits = text.lstrip("0") or "0"
    # Compared by length first: int() of thousands of digits is slow, or refused.
    if len(digits) > _MAX_ID_DIGITS or int(digits) > _MAX_ID:
        shown = text if len(text) <= 20 else text[:20] + "..."
        raise InvalidSpec("user", f"{kind} {shown} is out of range (0 to {_MAX_ID})")
    return int(digits)
