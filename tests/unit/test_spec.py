"""spec: validation of a whole job specification, and the job's environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobworker.isolation.credentials import Credentials
from jobworker.isolation.errors import InvalidDevice, InvalidSpec
from jobworker.isolation.limits import IOLimit, Limits
from jobworker.isolation.namespaces import Namespaces
from jobworker.isolation.spec import DEFAULT_PATH, MAX_ARGV_BYTES, JobSpec, job_environment

RUN_DIR = Path("/nonexistent/run")  # validate() does not look at run_dir


def spec(**changes: object) -> JobSpec:
    fields: dict[str, object] = {"job_id": "job-1", "argv": ("/bin/true",), "run_dir": RUN_DIR}
    fields.update(changes)
    return JobSpec(**fields)  # type: ignore[arg-type]


def refused_field(job: JobSpec, **kwargs: Path) -> str:
    with pytest.raises(InvalidSpec) as caught:
        job.validate(**kwargs)
    return caught.value.field


def test_minimal_spec_is_valid():
    valid = spec().validate()
    assert valid.spec == spec()
    assert valid.cgroup_settings == (("memory.oom.group", "1"),)


def test_validate_returns_the_cgroup_settings(fake_sys):
    job = spec(limits=Limits(cpu_cores=0.5, pids=10, io=(IOLimit("8:1", read_bps=5),)))
    assert job.validate(sys_root=fake_sys).cgroup_settings == (
        ("memory.oom.group", "1"),
        ("cpu.max", "50000 100000"),
        ("pids.max", "10"),
        ("io.max", "8:0 rbps=5"),
    )


def test_a_valid_spec_given_a_user_keeps_everything_else(fake_sys):
    job = spec(limits=Limits(pids=10), cwd="/tmp")
    user = Credentials.transient("job-1", 70000, "/home/job-1")
    valid = job.validate(sys_root=fake_sys)
    as_user = valid.as_user(user)
    assert as_user.spec.user == user
    assert as_user.spec == JobSpec(**{**job.__dict__, "user": user})
    assert as_user.cgroup_settings == valid.cgroup_settings
    assert valid.spec.user is None


def test_limits_errors_come_through():
    assert refused_field(spec(limits=Limits(cpu_cores=0))) == "cpu"
    assert refused_field(spec(limits=Limits(memory_bytes=1))) == "memory"


def test_io_device_errors_come_through(fake_sys):
    with pytest.raises(InvalidDevice) as caught:
        spec(limits=Limits(io=(IOLimit("8:99", read_bps=1),))).validate(sys_root=fake_sys)
    assert caught.value.field == "io[0].device"


# --- job id ------------------------------------------------------------------


@pytest.mark.parametrize("job_id", ["a", "0", "A-1_b.c", "a" * 64, "job.2024-01-01_x"])
def test_valid_job_ids(job_id):
    spec(job_id=job_id).validate()


@pytest.mark.parametrize(
    "job_id",
    [
        "",
        "-a",
        ".a",
        "_a",
        ".",
        "..",
        "a" * 65,
        "a/b",
        "/a",
        "a b",
        "a\0b",
        "a\tb",
        "é",
        "a:b",
    ],
)
def test_invalid_job_ids(job_id):
    assert refused_field(spec(job_id=job_id)) == "job_id"


def test_job_id_with_trailing_newline_is_refused():
    assert refused_field(spec(job_id="job-1\n")) == "job_id"


# --- command and arguments -----------------------------------------------------


@pytest.mark.parametrize("argv", [(), ("",), ("", "arg")])
def test_empty_command(argv):
    assert refused_field(spec(argv=argv)) == "command"


def test_empty_arguments_after_the_command_are_fine():
    spec(argv=("/bin/echo", "", "x")).validate()


@pytest.mark.parametrize(("argv", "field"), [(("a\0b",), "command"), (("x", "y", "\0"), "args[1]")])
def test_nul_in_an_argument(argv, field):
    assert refused_field(spec(argv=argv)) == field


# --- environment -------------------------------------------------------------


@pytest.mark.parametrize("name", ["A", "_", "a_b", "PATH", "X1", "_9"])
def test_valid_env_names(name):
    spec(env={name: "value"}).validate()


@pytest.mark.parametrize("name", ["", "1A", "A-B", "A=B", "A B", "A.B", "É", "A\0"])
def test_invalid_env_names(name):
    assert refused_field(spec(env={"OK": "1", name: "x"})) == "env"


def test_env_name_with_trailing_newline_is_refused():
    assert refused_field(spec(env={"FOO\n": "x"})) == "env"


def test_nul_in_an_env_value():
    assert refused_field(spec(env={"OK": "1", "BAD": "a\0b"})) == "env.BAD"


def test_env_values_may_be_anything_else():
    spec(env={"A": "", "B": "x=y z\n\t\u00e9"}).validate()


# --- size of command and environment -------------------------------------------


def test_command_up_to_the_size_cap():
    # Each argument counts its bytes plus a NUL terminator.
    spec(argv=("x" * (MAX_ARGV_BYTES - 1),)).validate()
    assert refused_field(spec(argv=("x" * MAX_ARGV_BYTES,))) == "command"


def test_environment_counts_towards_the_size_cap():
    # "/bin/true\0" is 10 bytes; an entry counts NAME=VALUE\0, i.e. len + 2.
    room = MAX_ARGV_BYTES - 10 - 2 - 1
    spec(env={"A": "v" * room}).validate()
    assert refused_field(spec(env={"A": "v" * (room + 1)})) == "command"


def test_size_cap_counts_bytes_not_characters():
    half = MAX_ARGV_BYTES // 2
    spec(argv=("x" * half,)).validate()
    assert refused_field(spec(argv=("\u00e9" * half,))) == "command"


# --- working directory ---------------------------------------------------------


@pytest.mark.parametrize("cwd", ["/", "/tmp", "/a b/c", "/does/not/exist"])
def test_valid_working_directories(cwd):
    spec(cwd=cwd).validate()


@pytest.mark.parametrize("cwd", ["", "tmp", "./tmp", "../tmp", "~/x", "/tmp\0x"])
def test_invalid_working_directories(cwd):
    assert refused_field(spec(cwd=cwd)) == "working_directory"


# --- output cap -----------------------------------------------------------------


@pytest.mark.parametrize("cap", [None, 0, 1, 10**12])
def test_valid_output_caps(cap):
    spec(output_cap=cap).validate()


@pytest.mark.parametrize("cap", [-1, -(10**9), True, False])
def test_invalid_output_caps(cap):
    assert refused_field(spec(output_cap=cap)) == "output_cap"


# --- namespaces and pids ---------------------------------------------------------


def test_namespace_errors_come_through():
    assert refused_field(spec(namespaces=Namespaces(mount=False))) == "namespaces"


@pytest.mark.parametrize("pids", [0, 1])
def test_pid_namespace_needs_room_for_its_init(pids):
    assert refused_field(spec(limits=Limits(pids=pids))) == "pids"


def test_two_pids_with_a_pid_namespace():
    assert ("pids.max", "2") in spec(limits=Limits(pids=2)).validate().cgroup_settings


def test_one_pid_without_a_pid_namespace():
    job = spec(limits=Limits(pids=1), namespaces=Namespaces(pid=False))
    assert ("pids.max", "1") in job.validate().cgroup_settings


def test_zero_pids_without_a_pid_namespace_is_still_refused():
    job = spec(limits=Limits(pids=0), namespaces=Namespaces(pid=False))
    assert refused_field(job) == "pids"


def test_pids_of_the_wrong_type_with_a_pid_namespace():
    assert refused_field(spec(limits=Limits(pids="5"))) == "pids"  # type: ignore[arg-type]


# --- job_environment ---------------------------------------------------------------


def test_job_environment_defaults():
    assert job_environment("job-7") == {
        "PATH": DEFAULT_PATH,
        "HOME": "/root",
        "JOBWORKER_JOB_ID": "job-7",
    }
    assert job_environment("job-7", {}) == job_environment("job-7")


def test_job_environment_does_not_inherit_the_service_environment(monkeypatch):
    monkeypatch.setenv("JOBWORKER_TEST_SECRET", "hunter2")
    monkeypatch.setenv("PATH", "/service/bin")
    env = job_environment("job-7")
    assert "JOBWORKER_TEST_SECRET" not in env
    assert env["PATH"] == DEFAULT_PATH


def test_job_environment_of_a_user_names_them_and_their_home():
    user = Credentials(name="alice", uid=1000, gid=1000, groups=(1000, 27), home="/home/alice")
    assert job_environment("job-7", {"LANG": "C.UTF-8"}, user) == {
        "PATH": DEFAULT_PATH,
        "HOME": "/home/alice",
        "USER": "alice",
        "LOGNAME": "alice",
        "JOBWORKER_JOB_ID": "job-7",
        "LANG": "C.UTF-8",
    }
    assert job_environment("job-7", {"HOME": "/tmp"}, user)["HOME"] == "/tmp"  # the caller's wins


def test_job_environment_extras_add_and_override():
    extra = {"PATH": "/opt/bin", "HOME": "/home/job", "LANG": "C.UTF-8"}
    env = job_environment("job-7", extra)
    assert env == {
        "PATH": "/opt/bin",
        "HOME": "/home/job",
        "LANG": "C.UTF-8",
        "JOBWORKER_JOB_ID": "job-7",
    }
    assert extra == {"PATH": "/opt/bin", "HOME": "/home/job", "LANG": "C.UTF-8"}
