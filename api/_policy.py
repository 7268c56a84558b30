"""Who may call what: the single authorization table of the API.

Roles nest: a writer can do what a reader can, an admin what a writer can, on
every user's jobs. Which jobs a caller can *see* is decided here too, so that
unary and streaming calls apply exactly the same rule.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from jobworker.api.roles import Role


class Permission(enum.Enum):
    """What a call does to jobs."""

    READ = "read"
    WRITE = "write"


_SERVICE = "/jobworker.v1.JobService/"

METHOD_PERMISSIONS: dict[str, Permission] = {
    _SERVICE + "StartJob": Permission.WRITE,
    _SERVICE + "StopJob": Permission.WRITE,
    _SERVICE + "GetJob": Permission.READ,
    _SERVICE + "ListJobs": Permission.READ,
    _SERVICE + "StreamJobOutput": Permission.READ,
    _SERVICE + "RemoveJob": Permission.WRITE,
    "/grpc.health.v1.Health/Check": Permission.READ,
    "/grpc.health.v1.Health/Watch": Permission.READ,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": Permission.READ,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": Permission.READ,
}
"""Every method the server exposes. A method missing here is refused to everyone."""

_GRANTS = {
    Role.READER: {Permission.READ},
    Role.WRITER: {Permission.READ, Permission.WRITE},
    Role.ADMIN: {Permission.READ, Permission.WRITE},
}


@dataclass(frozen=True)
class Caller:
    """An authenticated client: the user name and role from its certificate."""

    user: str
    role: Role

    def may(self, method: str) -> bool:
        """Whether this caller's role allows calling ``method`` at all."""
        permission = METHOD_PERMISSIONS.get(method)
        return permission is not None and permission in _GRANTS[self.role]

    def sees(self, owner: str) -> bool:
        """Whether jobs of ``owner`` exist for this caller (others answer NOT_FOUND)."""
        return self.role is Role.ADMIN or owner == self.user

    @property
    def owner_filter(self) -> str | None:
        """Whose jobs a listing shows: the caller's own, or everyone's for an admin."""
        return None if self.role is Role.ADMIN else self.user

    @property
    def is_admin(self) -> bool:
        """Whether the caller's jobs may use what is kept for admins.

        Running as any user (others get the server's default or allowed users), showing
        host paths to a job, adding capabilities or lifting the syscall filter: which
        options those are is the runner's policy (``StartRequest.by_admin``).
        """
        return self.role is Role.ADMIN
