"""Fixtures shared by the unit tests: fake /sys trees standing in for the kernel's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


def _add_block_device(
    sys_root: Path, name: str, majmin: str, *, partition_of: str | None = None
) -> None:
    """Lay out one block device the way sysfs does.

    Disks live in ``devices/virtual/block/<disk>/`` and partitions in a
    sub-directory of their disk; ``dev/block/MAJ:MIN`` is a relative symlink to
    the device's directory, which holds ``dev`` (and ``partition`` for a partition).
    """
    devices = sys_root / "devices" / "virtual" / "block"
    directory = devices / partition_of / name if partition_of else devices / name
    directory.mkdir(parents=True)
    (directory / "dev").write_text(f"{majmin}\n")
    if partition_of:
        (directory / "partition").write_text(f"{name[-1]}\n")
    links = sys_root / "dev" / "block"
    links.mkdir(parents=True, exist_ok=True)
    target = Path("..", "..", directory.relative_to(sys_root))
    (links / majmin).symlink_to(target, target_is_directory=True)


AddBlockDevice = Callable[..., None]


@pytest.fixture
def add_block_device() -> AddBlockDevice:
    """``add_block_device(sys_root, name, "MAJ:MIN", partition_of=disk_name)``."""
    return _add_block_device


@pytest.fixture
def fake_sys(tmp_path: Path) -> Path:
    """A /sys with disk sda (8:0) and its partition sda1 (8:1), disk sdb (8:16), CPUs 0-3."""
    sys_root = tmp_path / "sys"
    (sys_root / "devices" / "system" / "cpu").mkdir(parents=True)
    (sys_root / "devices" / "system" / "cpu" / "online").write_text("0-3\n")
    _add_block_device(sys_root, "sda", "8:0")
    _add_block_device(sys_root, "sda1", "8:1", partition_of="sda")
    _add_block_device(sys_root, "sdb", "8:16")
    return sys_root
