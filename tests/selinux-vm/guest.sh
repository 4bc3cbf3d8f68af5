# shellcheck shell=bash
# What the guest scenarios (scenario.sh, systemd.sh, engines.sh) share: the
# checks and their PASS:/FAIL:/INFO: lines, which tests/selinux-vm/run
# counts, waiting, and reading labels, denials and mcsd's answers. run
# installs it beside them in the guest; each sources it first and ends with
# `echo "END: $failures"` (run trusts no result without that line). The host
# side's helpers are in lib.sh.
#
# Functions run through check, which shellcheck cannot follow:
# shellcheck disable=SC2317

# The number of checks that failed so far.
failures=0
# How many lines of a failed check's output check shows.
check_info_lines=8

pass() { echo "PASS: $*"; }
fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}
# check WHAT COMMAND...: PASS when COMMAND succeeds; on failure, what it
# printed follows as INFO lines (at most check_info_lines of them).
check() {
    local what=$1 out
    shift
    if out=$("$@" 2>&1); then
        pass "$what"
    else
        fail "$what"
        [ -z "$out" ] || printf 'INFO:   %s\n' "${out//$'\n'/$'\n'INFO:   }" | head -n "$check_info_lines"
    fi
}
info() { echo "INFO: $*"; }
# show TEXT: TEXT as indented INFO lines.
show() { [ -z "$1" ] || printf 'INFO:   %s\n' "${1//$'\n'/$'\n'INFO:   }"; }
# failed RC: a command ran and exited non-zero.
failed() { [ -n "$1" ] && [ "$1" != 0 ]; }
# has PATTERN TEXT, lacks PATTERN TEXT: whether TEXT has a line matching.
has() { grep -q -e "$1" <<<"$2"; }
lacks() { ! grep -q -e "$1" <<<"$2"; }
# wait_for SECONDS COMMAND...: until COMMAND succeeds (its status when the
# time is up).
wait_for() {
    local n=$(($1 * 10))
    shift
    for _ in $(seq "$n"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    "$@"
}

# avcs PATTERN...: the AVC denials matching every pattern.
avcs() {
    local lines
    lines=$(grep 'avc:  denied' /run/audit.log)
    for p in "$@"; do lines=$(grep -e "$p" <<<"$lines"); done
    printf '%s' "$lines"
}
# denied PATTERN...: an AVC denial matching every pattern was recorded.
denied() { [ -n "$(avcs "$@")" ]; }
label() { getfattr -h --absolute-names -n security.selinux --only-values "$1" 2>/dev/null | tr -d '\0'; }
level_of() { sed -n 's/.*"level": *"\([^"]*\)".*/\1/p' | head -1; }
# held ID: the level mcsd holds for ID (empty if none).
held() { mcsctl -o json get "$1" 2>/dev/null | level_of; }

# mcsd under the classic guest's service manager (svc.sh, in init_t), which
# starts what is written to /run/svc as systemd would start a unit.
svc() { echo "$*" >/run/svc; }
start_mcsd() {
    rm -f /run/mcsd.pid
    svc start mcsd /usr/bin/mcsd --config /etc/mcsd/mcsd.toml
    wait_for 30 mcsctl status >/dev/null 2>&1
}
stop_mcsd() {
    local pid
    pid=$(cat /run/mcsd.pid)
    kill -TERM "$pid"
    wait_for 10 test ! -d "/proc/$pid"
}
