"""The command line of ``jobworker``: every command, option and example, in one place.

Each command names its handler as ``module:function`` so that ``main`` imports only
the module it runs: a client command never loads the server's layers.
The client connection options are shared by every client command and accepted
anywhere among its options, including before the ``--`` that starts a job's command.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

from jobworker.api.roles import FIRST_ADMIN, Role
from jobworker.api.streams import DEFAULT_MAX_STREAMS, DEFAULT_MAX_STREAMS_PER_USER
from jobworker.cli import _defaults as defaults
from jobworker.cli._errors import UsageError
from jobworker.cli._jobspec import (
    parse_bind,
    parse_device_iops,
    parse_device_rate,
    parse_env,
    parse_job_id,
    parse_namespace_list,
    parse_tmpfs,
)
from jobworker.cli._units import (
    duration_argument,
    parse_cores,
    parse_count,
    parse_duration,
    parse_duration_or_forever,
    parse_id_range,
    parse_size,
    parse_size_or_none,
    parse_size_or_zero,
    parse_time_limit,
    size_argument,
)
from jobworker.runner import defaults as runner_defaults

_CLIENT = "jobworker.cli._client"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, raised as ``UsageError`` (exit 2)."""

    def error(self, message: str) -> NoReturn:
        """Refuse the command line: one line naming the problem, and where help is."""
        raise UsageError(f"{message} (see `{self.prog} --help`)", program=self.prog)


def build() -> Parser:
    """The whole ``jobworker`` command line."""
    parser = Parser(
        prog="jobworker",
        description="Run commands as isolated, resource-limited jobs on a jobworker server.",
        epilog="example: jobworker run --cpu 0.5 --memory 64M -- make test",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    client = _client_options()

    _server(commands)
    _certs(commands)
    _run(commands, client)

    status = _command(
        commands,
        "status",
        "show a job's state, exit status and usage",
        "jobworker status 0b6e... --json",
        "status",
        parents=[client],
    )
    status.add_argument("id", type=parse_job_id, metavar="ID", help="the job's id")
    status.add_argument("--json", action="store_true", help="print one JSON object")

    logs = _command(
        commands,
        "logs",
        "print a job's output from its first byte",
        "jobworker logs -f 0b6e...",
        "logs",
        parents=[client],
        description="Print a job's output from its first byte: its stdout to stdout, its "
        "stderr to stderr. With -f, keep following until the job ends; Ctrl-C detaches "
        "and leaves the job running.",
    )
    logs.add_argument("id", type=parse_job_id, metavar="ID", help="the job's id")
    logs.add_argument("-f", "--follow", action="store_true", help="follow until the job ends")

    stop = _command(
        commands,
        "stop",
        "stop a job and wait until it has ended",
        "jobworker stop --grace 2s 0b6e...",
        "stop",
        parents=[client],
        description="Send SIGTERM to the job, wait up to the grace period, then kill "
        "everything left of it; return once it has ended.",
    )
    stop.add_argument("id", type=parse_job_id, metavar="ID", help="the job's id")
    stop.add_argument(
        "--grace",
        type=parse_duration,
        metavar="DURATION",
        help="time between SIGTERM and SIGKILL, e.g. 500ms, 5s (server default: "
        f"{duration_argument(runner_defaults.STOP_GRACE_SECONDS)})",
    )

    rm = _command(
        commands,
        "rm",
        "remove an ended job: its status and output",
        "jobworker rm 0b6e...",
        "rm",
        parents=[client],
        description="Remove an ended job's record and output now (the server removes them "
        "by itself once it has kept them for its --keep-ended time). A running job is "
        "refused: stop it first.",
    )
    rm.add_argument("id", type=parse_job_id, metavar="ID", help="the job's id")

    ls = _command(
        commands,
        "ls",
        "list jobs, oldest first",
        "jobworker ls --all --json",
        "ls",
        parents=[client],
        description="List your running jobs (an admin sees everyone's), oldest first.",
    )
    ls.add_argument("--all", action="store_true", help="include jobs that have ended")
    ls.add_argument("--json", action="store_true", help="print a JSON array of status objects")

    check = commands.add_parser(
        "check-host",
        help="check that this host can isolate and limit jobs",
        description="Check, without changing anything, that this host can run jobs: root, "
        "a pure cgroup v2 hierarchy with the cpu, memory, io and pids controllers.",
        epilog="example: sudo jobworker check-host --cgroup-parent /jobworker",
    )
    check.add_argument("--cgroup-parent", metavar="PATH", help="cgroup under which jobs would go")
    check.set_defaults(handler="jobworker.cli._checkhost:check_host")
    return parser


def _command(
    commands: argparse._SubParsersAction[Parser],
    name: str,
    summary: str,
    example: str,
    function: str,
    *,
    parents: list[Parser],
    description: str | None = None,
) -> Parser:
    parser = commands.add_parser(
        name,
        help=summary,
        description=description or summary[0].upper() + summary[1:] + ".",
        epilog=f"example: {example}",
        parents=parents,
    )
    parser.set_defaults(handler=f"{_CLIENT}:{function}")
    return parser


def _client_options() -> Parser:
    client = Parser(add_help=False)
    group = client.add_argument_group(
        "connection",
        f"Flags win over {defaults.SERVER_ENV} and {defaults.TLS_DIR_ENV}. By default the "
        f"client authenticates as {defaults.DEFAULT_CLIENT}.crt/{defaults.DEFAULT_CLIENT}.key "
        "with ca.crt from the TLS directory "
        f"({defaults.SYSTEM_TLS_DIR} for root, ~/.config/jobworker/tls otherwise).",
    )
    group.add_argument(
        "--server",
        metavar="HOST:PORT",
        help=f"the server (default: ${defaults.SERVER_ENV} or {defaults.DEFAULT_SERVER})",
    )
    group.add_argument("--tls-dir", type=Path, metavar="DIR", help="where the certificates are")
    group.add_argument("--cert", type=Path, metavar="FILE", help="client certificate (PEM)")
    group.add_argument("--key", type=Path, metavar="FILE", help="its private key (PEM)")
    group.add_argument("--ca", type=Path, metavar="FILE", help="CA certificate to trust (PEM)")
    return client


def _server(commands: argparse._SubParsersAction[Parser]) -> None:
    server = commands.add_parser(
        "server",
        help="run the jobworker service (as root)",
        description="Run the service in the foreground until SIGTERM or SIGINT; SIGHUP "
        "reloads the revocation list. Jobs keep running across a restart and are picked up "
        "again.",
        epilog="example: sudo jobworker server --listen 0.0.0.0:50051",
    )
    server.add_argument(
        "--listen",
        default=defaults.DEFAULT_SERVER,
        metavar="HOST:PORT",
        help=f"address to listen on; port 0 picks a free one (default: {defaults.DEFAULT_SERVER})",
    )
    server.add_argument(
        "--state-dir",
        type=Path,
        default=defaults.DEFAULT_STATE_DIR,
        metavar="DIR",
        help=f"job records and output (default: {defaults.DEFAULT_STATE_DIR})",
    )
    server.add_argument(
        "--tls-dir",
        type=Path,
        metavar="DIR",
        help=f"holds server.crt, server.key and ca.crt (default: ${defaults.TLS_DIR_ENV} "
        f"or {defaults.SYSTEM_TLS_DIR})",
    )
    server.add_argument("--cert", type=Path, metavar="FILE", help="server certificate (PEM)")
    server.add_argument("--key", type=Path, metavar="FILE", help="its private key (PEM)")
    server.add_argument("--ca", type=Path, metavar="FILE", help="CA for client certificates")
    server.add_argument(
        "--crl",
        type=Path,
        metavar="FILE",
        help="revoked client certificates, as `jobworker certs revoke` writes them (default: "
        "crl.pem in the TLS directory if it exists); reloaded on SIGHUP",
    )
    server.add_argument(
        "--cgroup-parent",
        metavar="PATH",
        help="cgroup under which jobs go (default: as a systemd service, the scope "
        "<service>-jobs.scope in its slice; else /jobworker)",
    )
    server.add_argument(
        "--max-jobs",
        type=parse_count,
        default=runner_defaults.MAX_RUNNING_JOBS,
        metavar="N",
        help="most jobs running at once (default: %(default)s)",
    )
    server.add_argument(
        "--keep-ended",
        type=parse_duration_or_forever,
        default=runner_defaults.KEEP_ENDED_SECONDS,
        metavar="DURATION",
        help="how long an ended job's status and output are kept before they are removed, "
        f"e.g. 12h, 7d, 0, or forever (default: "
        f"{duration_argument(runner_defaults.KEEP_ENDED_SECONDS)})",
    )
    output = server.add_argument_group("output and disk space")
    output.add_argument(
        "--output-cap",
        type=parse_size_or_none,
        default=runner_defaults.OUTPUT_CAP_BYTES,
        metavar="SIZE",
        help="output kept per job; the rest is dropped and readers are told (default: "
        f"{size_argument(runner_defaults.OUTPUT_CAP_BYTES)}; none for no cap)",
    )
    output.add_argument(
        "--output-quota",
        type=parse_size,
        metavar="SIZE",
        help="output kept by all jobs together, ended ones included; a job starts with a cap "
        "of what is left (default: no quota)",
    )
    output.add_argument(
        "--max-stdin",
        type=parse_size_or_zero,
        default=runner_defaults.MAX_STDIN_BYTES,
        metavar="SIZE",
        help="standard input a job may be given at start, kept on disk with it (default: "
        f"{size_argument(runner_defaults.MAX_STDIN_BYTES)}; 0 for none)",
    )
    output.add_argument(
        "--min-free-space",
        type=parse_size,
        default=runner_defaults.MIN_FREE_BYTES,
        metavar="SIZE",
        help="refuse new jobs while less is free under the state directory (default: "
        f"{size_argument(runner_defaults.MIN_FREE_BYTES)})",
    )
    server.add_argument(
        "--max-streams",
        type=parse_count,
        metavar="N",
        help="output streams (logs -f, run -f) open at once, of everyone "
        f"(default: {DEFAULT_MAX_STREAMS})",
    )
    server.add_argument(
        "--max-streams-per-user",
        type=parse_count,
        metavar="N",
        help="output streams one user may have open at once "
        f"(default: {DEFAULT_MAX_STREAMS_PER_USER})",
    )
    limits = server.add_argument_group(
        "limits of jobs",
        "A job that asks for no limit of a kind gets the default, or else the maximum; asking "
        "for more than the maximum is refused. Without --default-pids a job gets "
        f"{runner_defaults.JOB_TASKS_PERCENT}% of the kernel's task limit. All jobs together "
        "get the machine's memory and tasks less a reserve for the service, unless "
        "--jobs-memory and --jobs-pids say otherwise.",
    )
    for kind, parse, value, example in (
        ("cpu", parse_cores, "CORES", "0.5"),
        ("memory", parse_size, "SIZE", "512M"),
        ("pids", parse_count, "N", "1000"),
    ):
        limits.add_argument(f"--default-{kind}", type=parse, metavar=value, help=f"e.g. {example}")
        limits.add_argument(f"--max-{kind}", type=parse, metavar=value, help=f"e.g. {example}")
    limits.add_argument(
        "--jobs-memory", type=parse_size, metavar="SIZE", help="memory of all jobs together"
    )
    limits.add_argument(
        "--jobs-pids", type=parse_count, metavar="N", help="processes of all jobs together"
    )
    users = server.add_argument_group(
        "who jobs run as",
        "By default every job runs as a transient user of its own (uid from the transient "
        "range, private home, no supplementary groups). Non-admins may name only the default "
        "user or an --allow-user account; admins may name anyone.",
    )
    users.add_argument(
        "--default-user",
        metavar="USER[:GROUP]",
        help="a fixed account for jobs that name no user, instead of a transient user per job",
    )
    users.add_argument(
        "--allow-user",
        action="append",
        default=[],
        metavar="USER[:GROUP]",
        help="an account non-admins may also run jobs as (repeatable); with its groups "
        "exactly: allowing nobody does not allow nobody:disk",
    )
    first_id, last_id = runner_defaults.TRANSIENT_IDS
    users.add_argument(
        "--transient-ids",
        type=parse_id_range,
        metavar="FIRST-LAST",
        help="uids (and gids) for transient users, which no account may use (default: "
        f"{last_id - first_id + 1:,} ids from {first_id}, in a range systemd leaves unused)",
    )
    users.add_argument(
        "--home-root",
        type=Path,
        metavar="DIR",
        help="where transient users' home directories go (default: the state directory's "
        "name with -home, e.g. /var/lib/jobworker-home)",
    )
    server.set_defaults(handler="jobworker.cli._serve:serve")


def _certs(commands: argparse._SubParsersAction[Parser]) -> None:
    certs = commands.add_parser(
        "certs",
        help="create the CA and certificates, or revoke one",
        description="Create a private CA with a server and an admin client certificate "
        "(init), a certificate for one more user (issue), or revoke certificates (revoke). "
        "The CA's private key stays in the CA directory, which the server never reads.",
        epilog="example: jobworker certs init && jobworker certs issue --user bob --role writer",
    )
    actions = certs.add_subparsers(dest="action", required=True, metavar="ACTION")
    directory_help = (
        f"the TLS directory (default: ${defaults.TLS_DIR_ENV}, else {defaults.SYSTEM_TLS_DIR} "
        "for root, ~/.config/jobworker/tls otherwise)"
    )
    ca_directory_help = (
        f"the CA directory, with the CA's private key (default: ${defaults.CA_DIR_ENV}, else "
        f"{defaults.SYSTEM_CA_DIR} for root, ~/.config/jobworker/ca otherwise)"
    )
    init = actions.add_parser(
        "init",
        help="create ca, server and admin certificates",
        description="Create the CA (ca.crt, ca.key and index.json) in the CA directory, and "
        f"ca.crt, server.crt, server.key, {FIRST_ADMIN}.crt and {FIRST_ADMIN}.key (the admin "
        "client) in the "
        "TLS directory. Keys are mode 0600, new directories 0700.",
        epilog="example: sudo jobworker certs init --san worker1.example.com",
    )
    init.add_argument("--dir", type=Path, metavar="DIR", help=directory_help)
    init.add_argument("--ca-dir", type=Path, metavar="DIR", help=ca_directory_help)
    init.add_argument(
        "--san",
        action="append",
        metavar="NAME",
        help="another DNS name or IP address for the server certificate (repeatable); "
        "localhost, 127.0.0.1, ::1 and this host's names are always in it",
    )
    init.add_argument("--force", action="store_true", help="replace existing files")
    init.set_defaults(handler="jobworker.cli._certs:init")

    issue = actions.add_parser(
        "issue",
        help="issue a client certificate for a user",
        description="Write NAME.crt and NAME.key into the TLS directory, signed by the CA in "
        "the CA directory, for user NAME with a role: reader (status, logs, ls), writer "
        "(also run, stop), admin (all of it on everyone's jobs).",
        epilog="example: jobworker certs issue --user bob --role writer",
    )
    issue.add_argument("--user", required=True, metavar="NAME", help="the user name")
    issue.add_argument("--role", required=True, choices=[role.value for role in Role])
    issue.add_argument("--dir", type=Path, metavar="DIR", help=directory_help)
    issue.add_argument("--ca-dir", type=Path, metavar="DIR", help=ca_directory_help)
    issue.add_argument("--force", action="store_true", help="replace existing files")
    issue.set_defaults(handler="jobworker.cli._certs:issue")

    revoke = actions.add_parser(
        "revoke",
        help="revoke a user's certificates, or one by serial number",
        description="Revoke every certificate issued to user NAME that is not revoked yet, "
        "or the one with serial number SERIAL (hex, as `openssl x509 -noout -serial` prints "
        "it). Writes the revocation list, signed by the CA, to crl.pem in the CA directory "
        "and in the TLS directory; the server applies it once reloaded (SIGHUP).",
        epilog="example: jobworker certs revoke bob && systemctl reload jobworker",
    )
    revoke.add_argument("which", metavar="NAME|SERIAL", help="a user name or a serial number")
    revoke.add_argument("--dir", type=Path, metavar="DIR", help=directory_help)
    revoke.add_argument("--ca-dir", type=Path, metavar="DIR", help=ca_directory_help)
    revoke.set_defaults(handler="jobworker.cli._certs:revoke_certificates")


def _run(commands: argparse._SubParsersAction[Parser], client: Parser) -> None:
    run = commands.add_parser(
        "run",
        usage="jobworker run [OPTIONS] [--] CMD [ARG...]",
        help="start a job and print its id",
        description="Start CMD as a job and print its id alone on stdout. With --follow, "
        "stream its output instead and exit with its exit code, or 128+N if signal N ended "
        "it. Every namespace is on unless switched off.",
        epilog="example: id=$(jobworker run --cpu 0.5 --memory 64M -- sh -c 'make test')",
        parents=[client],
    )
    limits = run.add_argument_group("limits (each optional; none means unlimited)")
    limits.add_argument("--cpu", type=parse_cores, metavar="CORES", help="CPU cores, e.g. 0.5")
    limits.add_argument(
        "--memory", type=parse_size, metavar="SIZE", help="memory, e.g. 64M, 1.5G, 512Mi"
    )
    limits.add_argument("--pids", type=parse_count, metavar="N", help="processes and threads")
    limits.add_argument(
        "--memory-high",
        type=parse_size,
        metavar="SIZE",
        help="throttle and reclaim above this, before --memory's OOM killer (memory.high)",
    )
    limits.add_argument(
        "--memory-swap",
        type=parse_size_or_zero,
        metavar="SIZE",
        help="swap the job may use (default: none when --memory is given)",
    )
    limits.add_argument(
        "--cpuset", metavar="CPUS", help="run only on these CPUs, e.g. 0-1,3 (cpuset.cpus)"
    )
    limits.add_argument(
        "--cpu-weight",
        type=parse_count,
        metavar="N",
        help="share of contended CPU, 1..10000 (default 100; cpu.weight)",
    )
    for dest, parse, value, what in (
        ("read-bps", parse_device_rate, "RATE", "read bytes/s, e.g. /dev/vda=10M"),
        ("write-bps", parse_device_rate, "RATE", "write bytes/s, e.g. /dev/vda=10M"),
        ("read-iops", parse_device_iops, "N", "read operations/s, e.g. 8:0=100"),
        ("write-iops", parse_device_iops, "N", "write operations/s, e.g. 8:0=100"),
    ):
        limits.add_argument(
            f"--io-{dest}",
            type=parse,
            action="append",
            metavar=f"DEV={value}",
            help=f"{what}; DEV is a device path or MAJ:MIN (repeatable, one per device)",
        )
    times = run.add_argument_group(
        "time limits (SIGTERM when reached, then the server's grace period, then the kill)"
    )
    times.add_argument(
        "--timeout",
        type=parse_time_limit,
        metavar="DURATION",
        help="wall-clock time, e.g. 90s, 1h30m; --follow then exits 124, as timeout(1) does",
    )
    times.add_argument(
        "--cpu-time",
        type=parse_time_limit,
        metavar="DURATION",
        help="CPU time of all the job's processes together, e.g. 500ms, 2m; --follow then "
        "exits 152 (128 + SIGXCPU, the signal of RLIMIT_CPU)",
    )
    isolation = run.add_argument_group(
        "namespaces (default: all of pid,mount,net,uts,ipc; pid needs mount)"
    ).add_mutually_exclusive_group()
    isolation.add_argument(
        "--isolate",
        type=parse_namespace_list,
        metavar="LIST",
        help="exactly these namespaces, e.g. pid,mount or none",
    )
    isolation.add_argument(
        "--no-isolate",
        type=parse_namespace_list,
        metavar="LIST",
        help="all namespaces but these, e.g. net",
    )
    filesystem = run.add_argument_group(
        "filesystem (each needs the mount namespace; paths are the server host's)"
    )
    filesystem.add_argument(
        "--read-only",
        action="store_true",
        help="the host's files read-only, with a private writable /tmp (a tmpfs)",
    )
    filesystem.add_argument(
        "--tmpfs",
        type=parse_tmpfs,
        action="append",
        metavar="PATH[:SIZE]",
        help="a private tmpfs at PATH, e.g. /work:64M (default size: the memory limit, "
        "or half the RAM); repeatable",
    )
    filesystem.add_argument(
        "--bind",
        type=parse_bind,
        action="append",
        metavar="SRC[:DST][:ro]",
        help="show the host's SRC at DST (default: the same path), read-only with :ro; "
        "admins only; repeatable",
    )
    filesystem.add_argument(
        "--rootfs",
        metavar="DIR",
        help="run inside DIR (with its own /proc, a minimal /dev); admins only",
    )
    run.add_argument("--workdir", metavar="DIR", help="working directory (default: /)")
    run.add_argument(
        "--user",
        metavar="USER[:GROUP]",
        help="run the command as this user, a name or a number (default: the server's default "
        "user, usually a transient user of the job's own); non-admins may name only users "
        "the server allows",
    )
    privileges = run.add_argument_group(
        "privileges (root jobs keep Docker's default capabilities; other users' jobs have none)"
    )
    privileges.add_argument(
        "--cap-add",
        action="append",
        metavar="CAP",
        help="give a root job this capability, e.g. CAP_NET_ADMIN, net_admin or ALL "
        "(repeatable; admins only)",
    )
    privileges.add_argument(
        "--cap-drop",
        action="append",
        metavar="CAP",
        help="take this capability from the default set, or ALL (repeatable)",
    )
    privileges.add_argument(
        "--seccomp",
        choices=("default", "unconfined"),
        default="default",
        help="the syscall filter: default (Docker-like, denied calls fail with EPERM) or "
        "unconfined (admins only)",
    )
    privileges.add_argument(
        "--no-new-privs",
        action="store_true",
        help="setuid programs gain nothing, for a root job too (other users' jobs always)",
    )
    run.add_argument(
        "--env",
        type=parse_env,
        action="append",
        metavar="KEY=VALUE",
        help="add to the job's environment (repeatable)",
    )
    run.add_argument(
        "--stdin",
        metavar="FILE",
        help="give the job these bytes as its standard input; - reads this command's own "
        "(default: /dev/null; the server bounds the size, 16M unless configured otherwise)",
    )
    run.add_argument(
        "-f", "--follow", action="store_true", help="stream the output and exit as the job did"
    )
    run.add_argument(
        "command", nargs="+", metavar="CMD [ARG...]", help="the command; put it after --"
    )
    run.set_defaults(handler=f"{_CLIENT}:run")
