"""mountinfo parsing: fields, and proc(5)'s octal escapes."""

from __future__ import annotations

from pathlib import Path

from jobworker.isolation._mountinfo import Mount, mount_points, read_mounts


def test_read_mounts_fields(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 shared:7 - ext3 /dev/root "
        "rw,errors=continue\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n"
        "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n"
    )
    assert read_mounts(mountinfo) == [
        Mount("/mnt1", Path("/mnt/parent"), "ext3", frozenset({"rw", "errors=continue"})),
        Mount("/", Path("/sys/fs/cgroup/unified"), "cgroup2", frozenset({"rw", "nsdelegate"})),
        Mount(
            "/",
            Path("/sys/fs/cgroup/systemd"),
            "cgroup",
            frozenset({"rw", "xattr", "name=systemd"}),
        ),
    ]


def test_read_mounts_octal_escapes(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        r"50 31 0:40 /a\040b /mnt/with\040space\011tab\134back\012nl rw - cgroup2 none rw" + "\n"
    )
    [mount] = read_mounts(mountinfo)
    assert mount.root == "/a b"
    assert mount.point == Path("/mnt/with space\ttab\\back\nnl")


def test_read_mounts_escapes_next_to_non_ascii(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(r"50 31 0:40 / /mnt/café\040bar rw - tmpfs none rw" + "\n")
    [mount] = read_mounts(mountinfo)
    assert mount.point == Path("/mnt/café bar")


def test_mount_points_agree_with_read_mounts(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 shared:7 - ext3 /dev/root rw\n"
        r"50 31 0:40 /a\040b /mnt/with\040space\011tab\134back\012nl rw - cgroup2 none rw" + "\n"
        "24 23 0:22 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sys rw\n"
    )
    points = ["/mnt/parent", "/mnt/with space\ttab\\back\nnl", "/sys"]
    assert mount_points(mountinfo.read_text()) == points
    assert [str(m.point) for m in read_mounts(mountinfo)] == points
