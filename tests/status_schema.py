"""The keys of ``jobworker status --json``: a contract scripts depend on.

Written out here, not derived from the CLI, so that a test fails when the CLI
changes the contract; shared by the unit and the privileged CLI tests.
"""

STATUS_KEYS = {
    "id", "owner", "command", "working_directory", "user", "uid", "gid", "state", "exit_code",
    "signal",
    "oom_killed", "created_at", "started_at", "ended_at", "limits", "namespaces", "usage",
    "stopped_by", "note", "stdin_bytes",
    "filesystem", "privileges",
    "timeout_seconds", "cpu_time_seconds", "timed_out", "cpu_time_exceeded",
}  # fmt: skip
USAGE_KEYS = {
    "cpu_user_usec", "cpu_system_usec", "memory_peak_bytes", "io_read_bytes",
    "io_write_bytes", "pids_peak", "memory_high_events", "memory_max_events",
}  # fmt: skip
LIMITS_KEYS = {
    "cpu_cores", "memory_bytes", "pids", "io", "memory_high_bytes", "memory_swap_bytes",
    "cpuset", "cpu_weight",
}  # fmt: skip
