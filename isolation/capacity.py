"""How much the host has, and how much of it all jobs together may take.

Without a limit on all jobs together, jobs that set no limits of their own (a
fork bomb, a memory hog) can exhaust the kernel's tasks or the machine's
memory, and then the service itself can no longer fork a shim or answer a
call: one job wedges everyone. So the parent of every job's group, ``jobs/``,
gets limits below the machine's, leaving a reserve to the service and its
helpers in ``supervisor/``, which is outside ``jobs/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MEMORY_RESERVE_MIN = 256 << 20
"""Memory kept from jobs for the service, its helpers and the rest of the host, at least."""
TASKS_RESERVE_MIN = 1024
DEFAULT_JOB_TASKS_PERCENT = 15
"""A job's pids limit when nobody sets one: systemd's DefaultTasksMax for services."""


@dataclass(frozen=True)
class HostCapacity:
    """The machine's memory and the most tasks (processes and threads) its kernel allows."""

    memory_bytes: int
    tasks: int

    @classmethod
    def read(cls, proc: Path = Path("/proc")) -> HostCapacity:
        """From /proc/meminfo and the kernel's pid_max and threads-max, whichever is lower."""
        memory = 0
        for line in (proc / "meminfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == "MemTotal":
                memory = int(value.split()[0]) * 1024
        kernel = proc / "sys" / "kernel"
        tasks = min(int((kernel / name).read_text()) for name in ("pid_max", "threads-max"))
        return cls(memory_bytes=memory, tasks=tasks)

    @property
    def jobs_memory_bytes(self) -> int:
        """What all jobs together may use: the memory less a tenth, and at least 256 MiB, kept."""
        return self.memory_bytes - max(MEMORY_RESERVE_MIN, self.memory_bytes // 10)

    @property
    def jobs_tasks(self) -> int:
        """Tasks all jobs together may have: the kernel's limit less a tenth (at least 1024)."""
        return self.tasks - max(TASKS_RESERVE_MIN, self.tasks // 10)

    @property
    def default_job_tasks(self) -> int:
        """One job's pids limit when nobody sets one, like systemd's DefaultTasksMax (15%)."""
        return self.tasks * DEFAULT_JOB_TASKS_PERCENT // 100
