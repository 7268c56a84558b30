# Set-up shared by scripts/test and scripts/demo (sourced, not run): everything a
# fresh machine of this kind needs, done idempotently and quickly when already done.
# Callers must be in the repository root.

log() { printf '\n==> %s\n' "$*"; }
die() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; exit 2; }

# Root with a pure cgroup v2 hierarchy offering every controller we limit with?
# (Hybrid hosts have cgroup2 only at /sys/fs/cgroup/unified, without these.)
host_can_run_privileged() {
    [[ $(id -u) == 0 ]] || return 1
    [[ $(stat -f -c %T /sys/fs/cgroup 2>/dev/null) == cgroup2fs ]] || return 1
    local have c
    have=" $(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null) "
    for c in cpu memory io pids; do
        [[ $have == *" $c "* ]] || return 1
    done
}

# systemd is this host's init, with a cgroup v2 hierarchy we can use?
host_runs_systemd() {
    [[ -d /run/systemd/system ]] && host_can_run_privileged  # sd_booted(3)
}

# The VM's packages; with "systemd", also what a VM booting systemd needs: it boots
# the host's own /sbin/init, so the host must have systemd installed. That does not
# make systemd this host's init (it changes nothing until a reboot from /sbin/init,
# and only installs /sbin/init where there is none).
setup_vm_packages() {
    local missing=() pkg init
    local packages=(qemu-system-x86 linux-image-amd64 busybox-static libseccomp2)
    if [[ ${1:-} == systemd ]]; then
        packages+=(systemd)
        init=$(readlink -f /sbin/init 2>/dev/null || true)
        if [[ ! -e /sbin/init ]]; then
            packages+=(systemd-sysv)
        elif [[ $init != */systemd ]]; then
            die "/sbin/init is $init, not systemd: the VM for the tests under systemd boots the host's /sbin/init"
        fi
    fi
    for pkg in "${packages[@]}"; do
        [[ $(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null) == installed ]] \
            || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    [[ $(id -u) == 0 ]] || die "the VM needs these packages, install them as root: ${missing[*]}"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
}

setup_venv() {
    local python=${PYTHON:-python3}
    if [[ ! -x .venv/bin/python ]]; then
        "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
            || die "$python is missing or older than 3.11; put Python >= 3.11 on PATH (or set PYTHON=...)"
        "$python" -m venv .venv
    fi
    .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die ".venv has Python < 3.11; remove .venv and rerun with Python >= 3.11 on PATH"
    # Re-run every time so new modules land in the link tree; it is quick. Strict
    # editable mode builds that tree under build/ so that mypy and the VM see the
    # package-dir mapping. pip's "Location ... is ignored" warnings are harmless.
    .venv/bin/pip install -q --disable-pip-version-check -e '.[dev,vm]' \
        --config-settings editable_mode=strict 2>&1 \
        | { grep -v '^WARNING: Location .* is ignored' || true; }
}

