"""The host's capacity and what all jobs together may take, from a stand-in /proc."""

from __future__ import annotations

from pathlib import Path

from jobworker.isolation.capacity import HostCapacity


def fake_proc(root: Path, *, memory_kib: int, pid_max: int, threads_max: int) -> Path:
    (root / "sys" / "kernel").mkdir(parents=True)
    (root / "meminfo").write_text(
        f"MemTotal:       {memory_kib} kB\nMemFree:        1234 kB\nMemAvailable:   99 kB\n"
    )
    (root / "sys" / "kernel" / "pid_max").write_text(f"{pid_max}\n")
    (root / "sys" / "kernel" / "threads-max").write_text(f"{threads_max}\n")
    return root


def test_the_lower_of_pid_max_and_threads_max_is_the_kernels_task_limit(tmp_path: Path):
    proc = fake_proc(tmp_path, memory_kib=4 << 20, pid_max=32768, threads_max=30000)
    capacity = HostCapacity.read(proc)
    assert capacity == HostCapacity(memory_bytes=4 << 30, tasks=30000)


def test_jobs_together_leave_a_tenth_and_at_least_a_floor_to_the_service():
    big = HostCapacity(memory_bytes=64 << 30, tasks=4194304)
    assert big.jobs_memory_bytes == (64 << 30) - (64 << 30) // 10
    assert big.jobs_tasks == 4194304 - 419430
    small = HostCapacity(memory_bytes=1 << 30, tasks=4096)
    assert small.jobs_memory_bytes == (1 << 30) - (256 << 20)
    assert small.jobs_tasks == 4096 - 1024


def test_a_jobs_default_pids_limit_is_15_percent_like_systemds():
    assert HostCapacity(memory_bytes=1 << 30, tasks=32768).default_job_tasks == 4915
