"""limits: validation of a job's limits and their translation into cgroup v2 files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from jobworker.isolation.errors import InvalidDevice, InvalidSpec, LimitUnenforceable
from jobworker.isolation.limits import (
    MAX_PIDS,
    IOLimit,
    Limits,
    cgroup_settings,
    whole_disk,
)

MiB = 1024 * 1024
CPUS = os.cpu_count() or 1


def settings_of(limits: Limits, sys_root: Path | None = None) -> dict[str, str]:
    kwargs = {} if sys_root is None else {"sys_root": sys_root}
    pairs = cgroup_settings(limits, **kwargs)
    names = [name for name, _ in pairs if name != "io.max"]
    assert len(names) == len(set(names)), f"a file is written twice: {pairs}"
    return dict(pairs)


def refused_field(limits: Limits, sys_root: Path | None = None) -> str:
    kwargs = {} if sys_root is None else {"sys_root": sys_root}
    with pytest.raises(InvalidSpec) as caught:
        cgroup_settings(limits, **kwargs)
    return caught.value.field


# --- no limits ---------------------------------------------------------------


def test_no_limits_only_turns_on_oom_group():
    assert cgroup_settings(Limits()) == [("memory.oom.group", "1")]


# --- cpu ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cores", "cpu_max"),
    [
        (0.5, "50000 100000"),
        (0.25, "25000 100000"),
        (1, "100000 100000"),
        (1.0, "100000 100000"),
        (0.01, "1000 100000"),
        (0.333, "33300 100000"),
    ],
)
def test_cpu_max(cores, cpu_max):
    assert settings_of(Limits(cpu_cores=cores)) == {
        "memory.oom.group": "1",
        "cpu.max": cpu_max,
    }


def test_cpu_may_use_every_cpu_of_the_host():
    assert settings_of(Limits(cpu_cores=CPUS))["cpu.max"] == f"{CPUS * 100_000} 100000"


@pytest.mark.parametrize(
    "cores",
    [
        0,
        0.0,
        -1,
        -0.5,
        0.004,  # rounds to a quota below the kernel's 1 ms minimum
        float("nan"),
        float("inf"),
        float("-inf"),
        True,
        False,
        "1",
        "0.5",
        [1],
        CPUS + 1,
        CPUS + 0.5,
    ],
)
def test_cpu_invalid(cores):
    assert refused_field(Limits(cpu_cores=cores)) == "cpu"


def test_more_cores_than_the_host_has_is_unenforceable_and_names_the_cpu_count():
    with pytest.raises(LimitUnenforceable, match=f"the {CPUS} CPUs"):
        cgroup_settings(Limits(cpu_cores=CPUS + 1))


# --- memory ------------------------------------------------------------------


@pytest.mark.parametrize("memory", [6 * MiB, 64 * MiB, 2**40])
def test_memory_sets_max_and_disables_swap(memory):
    assert settings_of(Limits(memory_bytes=memory)) == {
        "memory.oom.group": "1",
        "memory.max": str(memory),
        "memory.swap.max": "0",
    }


@pytest.mark.parametrize(
    "memory",
    [6 * MiB - 1, 1, 0, -1, -64 * MiB, True, 64.0 * MiB, 1e9, "64M", "67108864"],
)
def test_memory_invalid(memory):
    assert refused_field(Limits(memory_bytes=memory)) == "memory"


# --- pids --------------------------------------------------------------------


@pytest.mark.parametrize("pids", [1, 2, 100, MAX_PIDS])
def test_pids_max(pids):
    assert settings_of(Limits(pids=pids)) == {"memory.oom.group": "1", "pids.max": str(pids)}


@pytest.mark.parametrize("pids", [0, -1, MAX_PIDS + 1, True, 10.0, "10"])
def test_pids_invalid(pids):
    assert refused_field(Limits(pids=pids)) == "pids"


# --- everything at once ------------------------------------------------------


def test_all_limits_in_order(fake_sys):
    limits = Limits(
        cpu_cores=0.5,
        memory_bytes=64 * MiB,
        pids=50,
        io=(IOLimit("8:0", read_bps=1_000_000),),
        memory_high_bytes=48 * MiB,
        memory_swap_bytes=16 * MiB,
        cpuset="1,3",
        cpu_weight=200,
    )
    assert cgroup_settings(limits, sys_root=fake_sys) == [
        ("memory.oom.group", "1"),
        ("cpu.max", "50000 100000"),
        ("cpu.weight", "200"),
        ("cpuset.cpus", "1,3"),
        ("memory.max", str(64 * MiB)),
        ("memory.high", str(48 * MiB)),
        ("memory.swap.max", str(16 * MiB)),
        ("pids.max", "50"),
        ("io.max", "8:0 rbps=1000000"),
    ]


# --- memory.high and swap ------------------------------------------------------


def test_memory_high_alone_leaves_swap_to_the_host():
    assert settings_of(Limits(memory_high_bytes=32 * MiB)) == {
        "memory.oom.group": "1",
        "memory.high": str(32 * MiB),
    }


def test_swap_may_be_allowed_next_to_a_memory_limit_or_limited_alone():
    assert settings_of(Limits(memory_bytes=64 * MiB, memory_swap_bytes=0))["memory.swap.max"] == "0"
    assert settings_of(Limits(memory_swap_bytes=MiB)) == {
        "memory.oom.group": "1",
        "memory.swap.max": str(MiB),
    }


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (Limits(memory_high_bytes=MiB), "outside the allowed range"),
        (Limits(memory_high_bytes="32M"), "must be a whole number"),  # type: ignore[arg-type]
        (
            Limits(memory_bytes=64 * MiB, memory_high_bytes=64 * MiB),
            "must be below the memory limit",
        ),
        (Limits(memory_swap_bytes=-1), "outside the allowed range"),
    ],
)
def test_memory_high_and_swap_invalid(limits, message):
    with pytest.raises(InvalidSpec, match=message) as refused:
        cgroup_settings(limits)
    assert refused.value.field in ("memory_high", "memory_swap")


# --- cpu.weight and cpuset -------------------------------------------------------


@pytest.mark.parametrize("weight", [0, 10_001, -5, 1.5, True, "100"])
def test_cpu_weight_invalid(weight):
    assert refused_field(Limits(cpu_weight=weight)) == "cpu_weight"


@pytest.mark.parametrize(
    ("cpus", "written"),
    [("0", "0"), ("0-3", "0-3"), ("3,0-1", "0-1,3"), ("1,2,3", "1-3"), ("2-2", "2")],
)
def test_cpuset_is_written_in_the_kernels_own_format(fake_sys, cpus, written):
    assert settings_of(Limits(cpuset=cpus), fake_sys)["cpuset.cpus"] == written


@pytest.mark.parametrize("cpus", ["", "a", "0-", "-1", "0,,1", "0 1", "3-1", 1, "1-2,"])
def test_cpuset_that_is_not_a_cpu_list_is_invalid(fake_sys, cpus):
    with pytest.raises(InvalidSpec) as refused:
        cgroup_settings(Limits(cpuset=cpus), sys_root=fake_sys)
    assert refused.value.field == "cpuset"
    assert not isinstance(refused.value, LimitUnenforceable)


def test_a_cpu_the_host_has_not_got_is_unenforceable_and_named(fake_sys):
    with pytest.raises(LimitUnenforceable, match="CPU 4 is not online on this host"):
        cgroup_settings(Limits(cpuset="2-5"), sys_root=fake_sys)


def test_first_bad_setting_is_reported():
    assert refused_field(Limits(cpu_cores=0, memory_bytes=1, pids=0)) == "cpu"
    assert refused_field(Limits(cpu_cores=0.5, memory_bytes=1, pids=0)) == "memory"


# --- io ----------------------------------------------------------------------


def io_lines(limits: tuple[IOLimit, ...], sys_root: Path) -> list[str]:
    return [
        value
        for name, value in cgroup_settings(Limits(io=limits), sys_root=sys_root)
        if name == "io.max"
    ]


def test_io_all_four_values(fake_sys):
    limit = IOLimit("8:0", read_bps=1, write_bps=2, read_iops=3, write_iops=4)
    assert io_lines((limit,), fake_sys) == ["8:0 rbps=1 riops=3 wbps=2 wiops=4"]


@pytest.mark.parametrize(
    ("attribute", "key"),
    [("read_bps", "rbps"), ("write_bps", "wbps"), ("read_iops", "riops"), ("write_iops", "wiops")],
)
def test_io_single_value(fake_sys, attribute, key):
    limit = IOLimit("8:16", **{attribute: 2**64 - 2})
    assert io_lines((limit,), fake_sys) == [f"8:16 {key}={2**64 - 2}"]


def test_io_partition_limits_its_whole_disk(fake_sys):
    assert io_lines((IOLimit("8:1", write_iops=100),), fake_sys) == ["8:0 wiops=100"]


def test_io_entries_for_one_disk_are_merged(fake_sys):
    limits = (
        IOLimit("8:0", read_bps=100),
        IOLimit("8:16", read_bps=5),
        IOLimit("8:1", write_bps=200),
        IOLimit("8:0", read_bps=100),  # an identical repeat is not a conflict
    )
    assert io_lines(limits, fake_sys) == ["8:0 rbps=100 wbps=200", "8:16 rbps=5"]


def test_io_conflicting_values_for_one_disk(fake_sys):
    limits = (IOLimit("8:0", read_bps=100), IOLimit("8:1", read_bps=200))
    with pytest.raises(InvalidSpec, match="8:0") as caught:
        cgroup_settings(Limits(io=limits), sys_root=fake_sys)
    assert caught.value.field == "io[1].read_bps"


@pytest.mark.parametrize("attribute", ["read_bps", "write_bps", "read_iops", "write_iops"])
@pytest.mark.parametrize("value", [0, -1, -(2**40), True, 1.5, 1e6, "100", 2**64 - 1, 2**64])
def test_io_invalid_value(fake_sys, attribute, value):
    limits = (IOLimit("8:16", read_bps=7), IOLimit("8:0", **{attribute: value}))
    assert refused_field(Limits(io=limits), fake_sys) == f"io[1].{attribute}"


def test_io_limit_without_values(fake_sys):
    limits = (IOLimit("8:16", read_bps=7), IOLimit("8:0"))
    with pytest.raises(InvalidSpec, match="8:0") as caught:
        cgroup_settings(Limits(io=limits), sys_root=fake_sys)
    assert caught.value.field == "io[1]"
    assert not isinstance(caught.value, InvalidDevice)


def test_io_unknown_device_names_the_entry(fake_sys):
    limits = (IOLimit("8:0", read_bps=1), IOLimit("8:99", read_bps=1))
    with pytest.raises(InvalidDevice) as caught:
        cgroup_settings(Limits(io=limits), sys_root=fake_sys)
    assert caught.value.field == "io[1].device"


# --- whole_disk with a fake /sys ---------------------------------------------


def test_whole_disk_of_a_disk(fake_sys):
    assert whole_disk("8:0", sys_root=fake_sys) == "8:0"
    assert whole_disk("8:16", sys_root=fake_sys) == "8:16"


def test_whole_disk_of_a_partition(fake_sys):
    assert whole_disk("8:1", sys_root=fake_sys) == "8:0"


def test_whole_disk_reads_the_disk_not_its_name(tmp_path, add_block_device):
    # The answer comes from the disk's own `dev` file, not from the partition's number.
    sys_root = tmp_path / "sys"
    add_block_device(sys_root, "nvme0n1", "259:0")
    add_block_device(sys_root, "nvme0n1p1", "259:7", partition_of="nvme0n1")
    assert whole_disk("259:7", sys_root=sys_root) == "259:0"


@pytest.mark.parametrize("device", ["8:99", "0:0", "999:0"])
def test_whole_disk_unknown_majmin(fake_sys, device):
    with pytest.raises(InvalidDevice, match=f"no block device {device}") as caught:
        whole_disk(device, sys_root=fake_sys, field="io[3].device")
    assert caught.value.field == "io[3].device"


@pytest.mark.parametrize("device", ["sda", "dev/sda", "./8:0", "", "8:0:1", "8:", ":0", "8-0"])
def test_whole_disk_neither_path_nor_majmin(fake_sys, device):
    with pytest.raises(InvalidDevice, match="neither a device path nor MAJ:MIN") as caught:
        whole_disk(device, sys_root=fake_sys)
    assert caught.value.field == "device"


def test_whole_disk_nonexistent_path(fake_sys, tmp_path):
    missing = tmp_path / "no-such-disk"
    with pytest.raises(InvalidDevice, match="No such file or directory"):
        whole_disk(str(missing), sys_root=fake_sys)


def test_whole_disk_character_device(fake_sys):
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    with pytest.raises(InvalidDevice, match="/dev/null is not a block device"):
        whole_disk("/dev/null", sys_root=fake_sys)


def test_whole_disk_regular_file_and_directory(fake_sys, tmp_path):
    regular = tmp_path / "disk.img"
    regular.write_bytes(b"\0" * 512)
    for path in (regular, tmp_path):
        with pytest.raises(InvalidDevice, match="is not a block device"):
            whole_disk(str(path), sys_root=fake_sys)


# --- whole_disk with this host's block devices -------------------------------


def host_block_devices() -> list[tuple[Path, int]]:
    """Block device nodes in /dev (whole disks first), with their device numbers."""
    found = []
    for entry in sorted(Path("/dev").iterdir()):
        try:
            info = entry.stat()
        except OSError:
            continue
        if stat.S_ISBLK(info.st_mode):
            found.append((entry, info.st_rdev))
    return found


def test_whole_disk_of_a_real_block_device():
    devices = host_block_devices()
    if not devices:
        pytest.skip("this host has no block device in /dev")
    checked = 0
    for path, rdev in devices:
        majmin = f"{os.major(rdev)}:{os.minor(rdev)}"
        node = Path("/sys/dev/block", majmin)
        if not node.exists():
            continue
        if (node / "partition").exists():
            expected = (node.resolve().parent / "dev").read_text().strip()
        else:
            expected = majmin
        assert whole_disk(str(path)) == expected, path
        assert whole_disk(majmin) == expected, majmin
        checked += 1
    assert checked, f"no block device of {devices} is in /sys/dev/block"


def test_real_device_path_as_partition_of_a_fake_disk(tmp_path, add_block_device):
    # A real device node (no root needed to stat it) whose number the fake /sys
    # calls a partition: the path is resolved by st_rdev, then mapped to the disk.
    devices = host_block_devices()
    if not devices:
        pytest.skip("this host has no block device in /dev")
    path, rdev = devices[0]
    majmin = f"{os.major(rdev)}:{os.minor(rdev)}"
    sys_root = tmp_path / "sys"
    add_block_device(sys_root, "fakedisk", "123:0")
    add_block_device(sys_root, "fakedisk9", majmin, partition_of="fakedisk")
    assert whole_disk(str(path), sys_root=sys_root) == "123:0"
    limits = Limits(io=(IOLimit(str(path), write_bps=10),))
    assert ("io.max", "123:0 wbps=10") in cgroup_settings(limits, sys_root=sys_root)
