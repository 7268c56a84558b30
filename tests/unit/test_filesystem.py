"""filesystem: what a job's view may be, checked against real directories (no root needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jobworker.isolation.errors import InvalidSpec
from jobworker.isolation.filesystem import Bind, Filesystem, Tmpfs
from jobworker.isolation.namespaces import Namespaces

ALL = Namespaces()


def refusal(view: Filesystem, namespaces: Namespaces = ALL) -> InvalidSpec:
    with pytest.raises(InvalidSpec) as refused:
        view.validate(namespaces)
    return refused.value


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A prepared root with what it needs, and a file and a directory to bind onto."""
    for name in ("proc", "dev", "sys", "data", "etc"):
        (tmp_path / "root" / name).mkdir(parents=True)
    (tmp_path / "root/etc/motd").write_text("")
    return tmp_path / "root"


def test_the_hosts_view_asks_for_nothing() -> None:
    view = Filesystem()
    assert view.requested() == ()
    view.validate(Namespaces.none())  # nothing to refuse without a mount namespace either


@pytest.mark.parametrize(
    ("view", "option"),
    [
        (Filesystem(read_only=True), "read_only"),
        (Filesystem(tmpfs=(Tmpfs("/mnt"),)), "tmpfs"),
        (Filesystem(binds=(Bind("/etc"),)), "binds"),
        (Filesystem(rootfs="/srv"), "rootfs"),
    ],
)
def test_every_option_needs_the_mount_namespace(view: Filesystem, option: str) -> None:
    error = refusal(view, Namespaces.none())
    assert error.field == f"filesystem.{option}"
    assert "needs the mount namespace" in error.reason


def test_only_binds_and_a_root_are_for_admins() -> None:
    assert Filesystem(read_only=True, tmpfs=(Tmpfs("/mnt"),)).admin_option() is None
    assert Filesystem(read_only=True, binds=(Bind("/etc"),)).admin_option() == "binds"
    assert Filesystem(rootfs="/srv").admin_option() == "rootfs"


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("mnt", "must be an absolute path"),
        ("/mnt/../etc", "without '.', '..' or '//'"),
        ("/mnt/./x", "without '.', '..' or '//'"),
        ("//mnt", "without '.', '..' or '//'"),
        ("/mnt/", "without '.', '..' or '//'"),
        ("/", "cannot mount over /"),
        ("/proc", "in the job's own /proc"),
        ("/proc/sys", "in the job's own /proc"),
        ("/mnt\0x", "must be an absolute path"),
    ],
)
def test_a_tmpfs_path_must_be_plain_absolute_and_not_proc(path: str, reason: str) -> None:
    error = refusal(Filesystem(tmpfs=(Tmpfs(path),)))
    assert error.field == "filesystem.tmpfs[0]"
    assert reason in error.reason


def test_a_tmpfs_must_have_a_size_and_a_place_of_its_own(tmp_path: Path) -> None:
    assert "positive" in refusal(Filesystem(tmpfs=(Tmpfs(str(tmp_path), 0),))).reason
    twice = refusal(Filesystem(tmpfs=(Tmpfs(str(tmp_path)), Tmpfs(str(tmp_path)))))
    assert (twice.field, twice.reason) == ("filesystem.tmpfs[1]", f"{tmp_path} is given twice")
    missing = refusal(Filesystem(tmpfs=(Tmpfs(f"{tmp_path}/missing"),)))
    assert "does not exist on the host" in missing.reason


def test_mount_points_inside_a_tmpfs_are_made_so_need_not_exist(tmp_path: Path) -> None:
    view = Filesystem(
        read_only=True,
        tmpfs=(Tmpfs(str(tmp_path)), Tmpfs(f"{tmp_path}/new/deeper")),
        binds=(Bind("/etc", "/tmp/etc"), Bind("/usr", f"{tmp_path}/new/usr")),
    )
    view.validate(ALL)


def test_a_bind_source_must_exist(tmp_path: Path) -> None:
    error = refusal(Filesystem(binds=(Bind(f"{tmp_path}/missing"),)))
    assert error.field == "filesystem.binds[0]"
    assert error.reason == f"{tmp_path}/missing: No such file or directory"


def test_a_bind_source_through_a_symbolic_link_is_refused_naming_the_real_path(
    tmp_path: Path,
) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    for source in (f"{tmp_path}/link", f"{tmp_path}/link/."):
        error = refusal(Filesystem(binds=(Bind(source, "/mnt"),)))
        assert error.field == "filesystem.binds[0]"
    error = refusal(Filesystem(binds=(Bind(f"{tmp_path}/link", "/mnt"),)))
    assert error.reason == (
        f"{tmp_path}/link passes through a symbolic link; name its real path {tmp_path}/real"
    )


def test_a_bind_destination_must_exist_as_the_same_kind(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    (tmp_path / "dir").mkdir()
    missing = refusal(Filesystem(binds=(Bind(str(tmp_path / "dir"), f"{tmp_path}/nowhere"),)))
    assert missing.reason.startswith(f"{tmp_path}/nowhere does not exist on the host")
    onto_file = refusal(Filesystem(binds=(Bind(str(tmp_path / "dir"), str(tmp_path / "file")),)))
    assert onto_file.reason == f"{tmp_path}/file on the host is not a directory"
    onto_dir = refusal(Filesystem(binds=(Bind(str(tmp_path / "file"), str(tmp_path / "dir")),)))
    assert onto_dir.reason == f"{tmp_path}/dir on the host is not a file, like its source"
    Filesystem(binds=(Bind(str(tmp_path / "file"), "/etc/hostname"),)).validate(ALL)


def test_a_bind_destination_is_looked_up_inside_the_new_root(root: Path, tmp_path: Path) -> None:
    # An absolute link in the root leads to the root's own /etc, never the host's.
    (root / "escape").symlink_to("/etc")
    view = Filesystem(rootfs=str(root), binds=(Bind(str(tmp_path), "/escape"),))
    view.validate(ALL)
    error = refusal(
        Filesystem(rootfs=str(root), binds=(Bind("/etc/hostname", "/escape/hostname"),))
    )
    assert error.reason.startswith(f"/escape/hostname does not exist in {root}")
    Filesystem(rootfs=str(root), binds=(Bind("/etc/hostname", "/escape/motd"),)).validate(ALL)


def test_a_root_needs_its_mount_points_and_the_pid_namespace(root: Path) -> None:
    Filesystem(rootfs=str(root)).validate(ALL)
    assert (
        "needs the pid namespace"
        in refusal(Filesystem(rootfs=str(root)), Namespaces(pid=False)).reason
    )
    (root / "sys").rmdir()
    assert (
        refusal(Filesystem(rootfs=str(root))).reason
        == f"{root} has no directory sys to mount /sys on"
    )
    Filesystem(rootfs=str(root)).validate(Namespaces(net=False))  # no /sys without its network
    assert "is the host's root" in refusal(Filesystem(rootfs="/")).reason
    assert "is not a directory" in refusal(Filesystem(rootfs=f"{root}/etc/motd")).reason


def test_read_only_needs_a_tmp_in_the_root(root: Path) -> None:
    error = refusal(Filesystem(rootfs=str(root), read_only=True))
    assert (error.field, error.reason) == (
        "filesystem.read_only",
        f"/tmp does not exist in {root} (only in a tmpfs is it made)",
    )
    (root / "tmp").mkdir()
    Filesystem(rootfs=str(root), read_only=True).validate(ALL)


def test_for_job_adds_the_private_tmp_and_sizes_parents_first() -> None:
    view = Filesystem(read_only=True, tmpfs=(Tmpfs("/work/cache"), Tmpfs("/work", 1 << 20)))
    assert view.for_job(64 << 20).tmpfs == (
        Tmpfs("/tmp", 64 << 20),
        Tmpfs("/work", 1 << 20),
        Tmpfs("/work/cache", 64 << 20),
    )
    assert view.for_job(None).tmpfs[0] == Tmpfs("/tmp", None)  # the kernel's default


@pytest.mark.parametrize(
    "view",
    [
        Filesystem(read_only=True, tmpfs=(Tmpfs("/tmp", 4096),)),
        Filesystem(read_only=True, binds=(Bind("/srv/tmp", "/tmp"),)),
    ],
)
def test_no_private_tmp_is_added_over_the_callers_own(view: Filesystem) -> None:
    assert [t.path for t in view.for_job(None).tmpfs].count("/tmp") == (1 if view.tmpfs else 0)


def test_a_root_is_resolved_without_links(tmp_path: Path, root: Path) -> None:
    os.symlink(root, tmp_path / "root-link")
    error = refusal(Filesystem(rootfs=str(tmp_path / "root-link")))
    assert "passes through a symbolic link" in error.reason
