"""What a job may do beyond its uid: its capabilities, its syscall filter, no_new_privs.

A job run as root keeps ``DEFAULT_CAPABILITIES``, Docker's default set: enough for
what root usually does inside a container (chown, setuid to other users, bind a low
port, chroot, kill), nothing that reaches the host beyond it (no CAP_SYS_ADMIN, so
no mount; no CAP_SYS_MODULE, CAP_SYS_TIME, CAP_SYS_PTRACE, CAP_NET_ADMIN...). A job
run as any other user has no capability at all: every set, the bounding set
included, is empty, so not even a setuid-root or file-capability program gives any
back. ``cap_drop`` takes from the default set; ``cap_add`` adds to it, for a root
job only: a non-root job with a capability would need ambient capabilities, which
jobworker does not hand out.

Capabilities are written as the kernel's names, ``CAP_NET_ADMIN``, or as Docker and
bubblewrap also take them, ``net_admin``; ``ALL`` means every one.
"""

from __future__ import annotations

from dataclasses import dataclass

from jobworker.isolation.errors import InvalidSpec

CAPABILITIES = {
    name: number
    for number, name in enumerate(
        (
            "CHOWN",
            "DAC_OVERRIDE",
            "DAC_READ_SEARCH",
            "FOWNER",
            "FSETID",
            "KILL",
            "SETGID",
            "SETUID",
            "SETPCAP",
            "LINUX_IMMUTABLE",
            "NET_BIND_SERVICE",
            "NET_BROADCAST",
            "NET_ADMIN",
            "NET_RAW",
            "IPC_LOCK",
            "IPC_OWNER",
            "SYS_MODULE",
            "SYS_RAWIO",
            "SYS_CHROOT",
            "SYS_PTRACE",
            "SYS_PACCT",
            "SYS_ADMIN",
            "SYS_BOOT",
            "SYS_NICE",
            "SYS_RESOURCE",
            "SYS_TIME",
            "SYS_TTY_CONFIG",
            "MKNOD",
            "LEASE",
            "AUDIT_WRITE",
            "AUDIT_CONTROL",
            "SETFCAP",
            "MAC_OVERRIDE",
            "MAC_ADMIN",
            "SYSLOG",
            "WAKE_ALARM",
            "BLOCK_SUSPEND",
            "AUDIT_READ",
            "PERFMON",
            "BPF",
            "CHECKPOINT_RESTORE",
        )
    )
}
"""Every capability by its number (linux/capability.h), without the CAP_ prefix."""

DEFAULT_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "NET_RAW",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
"""What a root job keeps unless told otherwise: Docker's default set."""


def capability_name(text: str, field: str) -> str:
    """The canonical name (``NET_ADMIN``) of a capability as a caller wrote it, or ``ALL``."""
    name = text.strip().upper().removeprefix("CAP_")
    if name != "ALL" and name not in CAPABILITIES:
        raise InvalidSpec(
            field, f"unknown capability {text!r} (e.g. CAP_NET_ADMIN, net_admin, ALL)"
        )
    return name


@dataclass(frozen=True)
class Privileges:
    """What a job asked for; ``validate`` checks it, ``capabilities`` says what it gets."""

    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    seccomp: bool = True
    """False: no syscall filter at all (``--seccomp=unconfined``)."""
    no_new_privs: bool = False
    """Asked for a root job too; a job run as another user always has it."""

    @property
    def widened(self) -> bool:
        """Whether this grants more than the defaults, which only an admin may ask for."""
        return bool(self.cap_add) or not self.seccomp

    def validate(self) -> None:
        """Refuse unknown capability names; raises InvalidSpec naming the field."""
        for name in self.cap_add:
            capability_name(name, "cap_add")
        for name in self.cap_drop:
            capability_name(name, "cap_drop")

    def check_user(self, *, root: bool) -> None:
        """Refuse capabilities to add to a job that does not run as root."""
        if self.cap_add and not root:
            raise InvalidSpec(
                "cap_add", "capabilities can be added only to a job run as root (--user root)"
            )

    def capabilities(self, *, root: bool) -> frozenset[int]:
        """The numbers of the capabilities the job's command holds: none unless it is root."""
        if not root:
            return frozenset()
        adds = {capability_name(text, "cap_add") for text in self.cap_add}
        drops = {capability_name(text, "cap_drop") for text in self.cap_drop}
        # As Docker reads them: ALL first, then single names; a name dropped is dropped.
        if "ALL" in adds:
            kept = set(CAPABILITIES)
        elif "ALL" in drops:
            kept = set()
        else:
            kept = set(DEFAULT_CAPABILITIES)
        kept = (kept | adds) - drops - {"ALL"}
        return frozenset(CAPABILITIES[name] for name in kept)
