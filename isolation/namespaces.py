"""Which Linux namespaces a job gets.

The default isolates everything: a job sees only its own processes, mounts,
hostname and IPC objects, and has no network but a loopback interface that is
up. Each can be switched off; ``net=False`` is the usual one, for jobs that
need the host's network.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from jobworker.isolation.errors import InvalidSpec

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class Namespaces:
    """One flag per namespace; True means the job gets a fresh one."""

    pid: bool = True
    mount: bool = True
    net: bool = True
    uts: bool = True
    ipc: bool = True

    @classmethod
    def none(cls) -> Namespaces:
        """Share every namespace with the host (cgroup limits still apply)."""
        return cls(pid=False, mount=False, net=False, uts=False, ipc=False)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The namespace names a caller may switch, in a stable order."""
        return tuple(f.name for f in fields(cls))

    def enabled(self) -> tuple[str, ...]:
        """The names of the namespaces this job gets."""
        return tuple(name for name in self.names() if getattr(self, name))

    def validate(self) -> None:
        """Refuse combinations the kernel cannot honour cleanly."""
        if self.pid and not self.mount:
            # /proc must be remounted for the new PID namespace to be visible, and
            # doing that without a private mount namespace would hide the host's /proc.
            raise InvalidSpec("namespaces", "the pid namespace needs the mount namespace too")

    def unshare_flags(self) -> int:
        """clone(2) flags for the namespaces created by unshare in the job's first process.

        The PID namespace is absent on purpose: the job's parent creates the first
        process in it (a clone flag), so that this process becomes PID 1. The network namespace is
        absent too: it is prepared in advance with loopback up and joined with setns.
        """
        flags = 0
        if self.mount:
            flags |= CLONE_NEWNS
        if self.uts:
            flags |= CLONE_NEWUTS
        if self.ipc:
            flags |= CLONE_NEWIPC
        return flags
