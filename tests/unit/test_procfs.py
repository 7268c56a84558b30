"""procfs: recognising a process again by its start time, despite PID reuse."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobworker.isolation._procfs import open_pidfd, start_ticks
from tests import default_signals


def ticks_since_boot() -> float:
    return float(Path("/proc/uptime").read_text().split()[0]) * os.sysconf("SC_CLK_TCK")


def reaped_pid() -> int:
    """The PID of a process that has ended and been reaped."""
    pid = os.posix_spawnp("true", ["true"], {"PATH": os.defpath})
    os.waitpid(pid, 0)
    return pid


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    """A running child process that waits until its stdin closes."""
    proc = subprocess.Popen(
        default_signals.command("sh", "-c", "echo ready; read x"),  # ended by SIGTERM below
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    try:
        yield proc
    finally:
        proc.kill()
        proc.communicate()


def test_start_ticks_of_our_own_process():
    ticks = start_ticks(os.getpid())
    assert isinstance(ticks, int)
    assert 0 <= ticks <= ticks_since_boot() + 1
    assert start_ticks(os.getpid()) == ticks


def test_a_later_process_started_later(child):
    ours, theirs = start_ticks(os.getpid()), start_ticks(child.pid)
    assert ours is not None
    assert theirs is not None
    assert ours <= theirs <= ticks_since_boot() + 1


def test_start_ticks_with_a_hostile_command_name():
    # The command name may hold spaces and parentheses, e.g. "a) b (c d".
    script = 'printf "a) 1 2 (c d" > /proc/self/comm; echo ready; read x'
    proc = subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        assert Path(f"/proc/{proc.pid}/comm").read_text() == "a) 1 2 (c d\n"
        ticks = start_ticks(proc.pid)
        ours = start_ticks(os.getpid())
        assert ticks is not None
        assert ours is not None
        assert ours <= ticks <= ticks_since_boot() + 1
    finally:
        proc.kill()
        proc.communicate()


def test_start_ticks_of_a_process_that_is_gone():
    assert start_ticks(reaped_pid()) is None


def test_open_pidfd_of_the_right_process(child):
    ticks = start_ticks(child.pid)
    assert ticks is not None
    fd = open_pidfd(child.pid, ticks)
    assert fd is not None
    try:
        # The descriptor really is that process: a signal through it ends the child.
        signal.pidfd_send_signal(fd, signal.SIGTERM)
        assert child.wait(timeout=30) == -signal.SIGTERM
    finally:
        os.close(fd)


def test_open_pidfd_refuses_another_start_time(child):
    ticks = start_ticks(child.pid)
    assert ticks is not None
    before = open_fds()
    assert open_pidfd(child.pid, ticks + 1) is None
    assert open_pidfd(child.pid, ticks - 1) is None
    assert open_fds() == before  # the pidfd opened for the check was closed
    assert child.poll() is None


def test_open_pidfd_of_our_own_process():
    ticks = start_ticks(os.getpid())
    assert ticks is not None
    fd = open_pidfd(os.getpid(), ticks)
    assert fd is not None
    os.close(fd)


def test_open_pidfd_of_a_process_that_is_gone():
    assert open_pidfd(reaped_pid(), 0) is None


def test_open_pidfd_of_an_unreaped_zombie():
    # Dead but not yet waited for: still the same process, and a pidfd is how to wait for it.
    pid = os.posix_spawnp("true", ["true"], {"PATH": os.defpath})
    try:
        ticks = start_ticks(pid)
        assert ticks is not None
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        fd = open_pidfd(pid, ticks)
        assert fd is not None
        os.close(fd)
    finally:
        os.waitpid(pid, 0)
