#!/usr/bin/bash
# The systemd guest's scenario (tests/selinux-vm/run --systemd): Debian's
# systemd is PID 1 on an enforcing kernel, mcsd is installed from its
# package files and only mcsd.socket is enabled. Runs as root in
# unconfined_t, started by mcsd-vmtest.service. Prints PASS:/FAIL:/INFO:
# lines (the runner collects them) and exits non-zero if any check failed.
#
# Functions run through check, which shellcheck cannot follow:
# shellcheck disable=SC2317
set -u
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
exec </dev/null >/dev/ttyS1 2>&1
export MCSD_SOCKET=/run/mcsd/mcsd.sock SYSTEMD_PAGER='' SYSTEMD_COLORS=0 LC_ALL=C

# The helpers every guest scenario shares (run installs guest.sh beside it).
# shellcheck source=guest.sh
. "$(dirname "${BASH_SOURCE[0]}")/guest.sh"
# A failed check shows more of its output: journal excerpts run long.
check_info_lines=12
# No call may hang the scenario: a queued connection waits for mcsd.
mcsctl() { timeout 60 /usr/bin/mcsctl "$@"; }
# mcsd's own journal entries (not PID 1's about the unit).
mcsd_log() { journalctl -b -u mcsd.service SYSLOG_IDENTIFIER=mcsd -o cat --no-pager "$@" 2>&1; }
# allocations: mcsctl list without its AGE column, sorted.
allocations() { mcsctl list 2>&1 | awk '{print $1, $2, $3, $4}' | sort; }
main_pid() { systemctl show -p MainPID --value mcsd.service; }
status_text() { systemctl show -p StatusText --value mcsd.service; }
# line_of PATTERN TEXT: the number of the first line of TEXT matching.
line_of() { grep -n -m1 -e "$1" <<<"$2" | cut -d: -f1; }
# before A B: both set and A < B.
before() { [ -n "$1" ] && [ -n "$2" ] && [ "$1" -lt "$2" ]; }

started=$(cut -d' ' -f1 /proc/uptime)
state=$(systemctl is-system-running --wait 2>&1)
info "boot finished at ${started}s of uptime: $state"
show "$(systemctl --failed --no-legend --plain 2>&1)"

# --- the system -------------------------------------------------------------

check "SELinux is enforcing ($(getenforce))" [ "$(getenforce)" = Enforcing ]
pid1=$(tr -d '\0' </proc/1/attr/current)
check "PID 1 is systemd ($(cat /proc/1/comm)) in init_t ($pid1)" \
    sh -c "[ \"\$(cat /proc/1/comm)\" = systemd ] && [ \"${pid1#system_u:system_r:init_t:}\" != \"$pid1\" ]"
check "the scenario runs unconfined ($(tr -d '\0' </proc/self/attr/current))" \
    grep -q unconfined_t /proc/self/attr/current
check "the boot reached multi-user.target" systemctl is-active multi-user.target
check "and no unit failed (system state: $state)" [ "$state" = running ]

# --- the package's files, where podman and systemd look for them ------------

check "systemd-sysusers.service ran at boot" systemctl is-active systemd-sysusers.service
check "systemd-sysusers reads /usr/lib/sysusers.d/mcsd.conf" \
    sh -c 'systemd-sysusers --cat-config | grep -q "^# /usr/lib/sysusers.d/mcsd.conf"'
check "sysusers created the group mcsd ($(grep '^mcsd:' /etc/group))" grep -q '^mcsd:x:[0-9]' /etc/group
check "and the group mcsd-readers" grep -q '^mcsd-readers:x:[0-9]' /etc/group
check "systemd-tmpfiles-setup.service ran at boot" systemctl is-active systemd-tmpfiles-setup.service
check "systemd-tmpfiles reads /usr/lib/tmpfiles.d/mcsd.conf" \
    sh -c 'systemd-tmpfiles --cat-config | grep -q "^# /usr/lib/tmpfiles.d/mcsd.conf"'
check "tmpfiles made /var/lib/mcsd at boot: $(stat -c '%a %U:%G' /var/lib/mcsd 2>&1)" \
    [ "$(stat -c '%a %U:%G' /var/lib/mcsd)" = "700 root:root" ]
check "/var/lib/mcsd is mcsd_var_lib_t ($(label /var/lib/mcsd))" \
    [ "$(label /var/lib/mcsd)" = system_u:object_r:mcsd_var_lib_t:s0 ]
check "/run/mcsd is $(stat -c '%a %U:%G' /run/mcsd 2>&1), $(label /run/mcsd)" \
    [ "$(stat -c '%a %U:%G' /run/mcsd):$(label /run/mcsd)" = "750 root:mcsd:system_u:object_r:mcsd_var_run_t:s0" ]
check "the unit files are mcsd_unit_file_t ($(label /usr/lib/systemd/system/mcsd.service))" \
    [ "$(label /usr/lib/systemd/system/mcsd.service)" = system_u:object_r:mcsd_unit_file_t:s0 ]
hook=/usr/share/containers/oci/hooks.d/mcsd-record.json
check "the OCI hook is in podman's and CRI-O's hooks.d ($hook)" [ -f "$hook" ]
hook_path=$(sed -n 's/.*"path": *"\([^"]*\)".*/\1/p' "$hook")
check "it runs $hook_path at createRuntime, and that is an executable" \
    sh -c "[ -x '$hook_path' ] && grep -q '\"stages\": *\[\"createRuntime\"\]' '$hook'"
check "no hook in hooks.d runs at poststop (podman runs it at every stop)" \
    sh -c '! grep -l "poststop" /usr/share/containers/oci/hooks.d/*.json'

# --- socket activation ------------------------------------------------------

check "mcsd.socket is enabled" [ "$(systemctl is-enabled mcsd.socket)" = enabled ]
check "mcsd.socket listens ($(systemctl is-active mcsd.socket))" [ "$(systemctl is-active mcsd.socket)" = active ]
check "mcsd.service has not started yet ($(systemctl is-active mcsd.service))" \
    [ "$(systemctl is-active mcsd.service)" = inactive ]
sock_label=$(label /run/mcsd/mcsd.sock)
check "systemd made the socket file with the module's label ($sock_label)" \
    [ "$sock_label" = system_u:object_r:mcsd_var_run_t:s0 ]
check "the socket file is $(stat -c '%A %U:%G' /run/mcsd/mcsd.sock)" \
    [ "$(stat -c '%A %U:%G' /run/mcsd/mcsd.sock)" = "srw-rw---- root:mcsd" ]
sock_inode=$(stat -c %i /run/mcsd/mcsd.sock)

# The administrator's part, before the first start: volume roots (the
# unit's comment says how) and mcsd's allowlist. /srv/outside is allowed
# by mcsd but not writable under the unit's ProtectSystem=strict.
mkdir -p /srv/volumes /srv/outside /etc/systemd/system/mcsd.service.d
printf '[Service]\nReadWritePaths=/srv/volumes\n' >/etc/systemd/system/mcsd.service.d/volumes.conf
conf=$(sed 's|^allowlist = \[\]|allowlist = ["/srv/volumes", "/srv/outside"]|' /etc/mcsd/mcsd.toml)
printf '%s\n' "$conf" >/etc/mcsd/mcsd.toml
check "the allowlist is set" grep -q '^allowlist = \["/srv/volumes", "/srv/outside"\]' /etc/mcsd/mcsd.toml
check "systemctl daemon-reload" systemctl daemon-reload
# PID 1 logs every notification it gets at debug level.
systemd-analyze log-level debug

t0=$(cut -d' ' -f1 /proc/uptime)
out=$(timeout 60 mcsctl status 2>&1)
rc=$?
t1=$(cut -d' ' -f1 /proc/uptime)
check "the first mcsctl call is answered (exit $rc, $(awk "BEGIN {print $t1 - $t0}") s)" [ "$rc" = 0 ]
[ "$rc" = 0 ] || show "$out
$(mcsd_log | tail -n 8)"
check "it started mcsd.service ($(systemctl is-active mcsd.service))" \
    [ "$(systemctl is-active mcsd.service)" = active ]
pid=$(main_pid)
domain=$(tr -d '\0' <"/proc/$pid/attr/current")
check "mcsd (pid $pid) runs in mcsd_t with every category ($domain)" \
    [ "$domain" = system_u:system_r:mcsd_t:s0-s0:c0.c1023 ]
check "it was passed the socket (LISTEN_FDS=1, fd 3 is a socket)" \
    sh -c "tr '\\0' '\\n' </proc/$pid/environ | grep -qx LISTEN_FDS=1 && readlink /proc/$pid/fd/3 | grep -q '^socket:'"
check "and serves on it: the socket file is still systemd's (inode $sock_inode)" \
    [ "$(stat -c %i /run/mcsd/mcsd.sock)" = "$sock_inode" ]
check "TriggeredBy mcsd.socket" sh -c 'systemctl show -p TriggeredBy --value mcsd.service | grep -q mcsd.socket'
status=$(systemctl status mcsd.service --no-pager 2>&1)
check "systemctl status mcsd shows the STATUS= line" has '^ *Status: "Serving: 0 of 523776 pairs held' "$status"
show "$(grep -E 'Active:|Status:|Main PID:' <<<"$status")"
journal=$(journalctl -b -u mcsd.service -o cat --no-pager 2>&1)
store=$(line_of 'store open' "$journal")
loading=$(line_of 'Got notification message from PID .*STATUS=Loading the store' "$journal")
ready=$(line_of 'Got notification message from PID .*READY=1' "$journal")
started_line=$(line_of '^Started mcsd' "$journal")
check "mcsd says Loading before READY=1 (journal lines $loading < $ready)" before "$loading" "$ready"
check "READY=1 comes once the store is open (lines $store < $ready)" before "$store" "$ready"
check "and carries STATUS=Serving" has 'READY=1, STATUS=Serving' "$journal"
check "systemd calls it started only then (lines $ready < $started_line)" before "$ready" "$started_line"
[ -n "$ready" ] || show "$(grep -v -i -e mount -e namespace <<<"$journal" | tail -n 20)"

# --- relabel and restore under the unit's hardening -------------------------

level_a=$(mcsctl -o json allocate ctr-a --owner vmtest | level_of)
info "ctr-a has $level_a"
mkdir -p /srv/volumes/a/sub
echo "data of a" >/srv/volumes/a/data
echo "more of a" >/srv/volumes/a/sub/more
original=$(label /srv/volumes/a/sub/more)
out=$(mcsctl relabel ctr-a /srv/volumes/a 2>&1)
rc=$?
check "relabel a volume under ReadWritePaths (exit $rc)" [ "$rc" = 0 ]
[ "$rc" = 0 ] || show "$out"
check "its files read back as container_file_t:$level_a ($(label /srv/volumes/a/sub/more))" \
    [ "$(label /srv/volumes/a/sub/more)" = "system_u:object_r:container_file_t:$level_a" ]
check "release ctr-a" mcsctl release ctr-a
check "the volume reads back as $original again ($(label /srv/volumes/a/sub/more))" \
    [ "$(label /srv/volumes/a/sub/more)" = "$original" ]

level_b=$(mcsctl -o json allocate ctr-b --owner vmtest | level_of)
mkdir -p /srv/outside/b
echo "data of b" >/srv/outside/b/data
outside_before=$(label /srv/outside/b/data)
out=$(mcsctl relabel ctr-b /srv/outside/b 2>&1)
rc=$?
info "relabel outside ReadWritePaths: $out"
check "a volume outside ReadWritePaths is refused (exit $rc)" failed "$rc"
check "with a clear error: read-only for mcsd, add it to ReadWritePaths=" \
    has 'is read-only for mcsd.*add the volume root there.*ReadWritePaths=' "$out"
check "and keeps its label ($(label /srv/outside/b/data))" [ "$(label /srv/outside/b/data)" = "$outside_before" ]

# --- reload, restart, stop --------------------------------------------------

pid=$(main_pid)
check "no pair is reserved yet ($(status_text))" has ' 0 reserved' "$(status_text)"
conf=$(sed 's|^reservations = \[\]|reservations = ["s0:c1,c2"]|' /etc/mcsd/mcsd.toml)
printf '%s\n' "$conf" >/etc/mcsd/mcsd.toml
check "systemctl reload mcsd" systemctl reload mcsd.service
# ExecReload= only sends SIGHUP: the reload is done when the STATUS= line
# mcsd sends after it says so.
wait_for 10 sh -c "systemctl show -p StatusText --value mcsd.service | grep -q ' 1 reserved'"
check "the reservation applies ($(status_text))" has ' 1 reserved' "$(status_text)"
out=$(mcsctl allocate reserved --level s0:c1,c2 2>&1)
check "the reserved pair s0:c1,c2 is refused" failed "$?"
info "  $out"
check "in the same process (pid $(main_pid))" [ "$(main_pid)" = "$pid" ]
check "the journal says what the reload changed" \
    sh -c 'journalctl -b -u mcsd.service -o cat --no-pager | grep -q "configuration reloaded"'

mcsctl allocate ctr-c --owner vmtest >/dev/null
mcsctl allocate ctr-d --owner vmtest >/dev/null
list_before=$(allocations)
show "$list_before"
check "systemctl restart mcsd" systemctl restart mcsd.service
check "a new process ($pid -> $(main_pid))" [ "$(main_pid)" != "$pid" ]
list_after=$(allocations)
check "every allocation survived the restart" [ "$list_before" = "$list_after" ]
[ "$list_before" = "$list_after" ] || show "$list_after"
check "the reservation too ($(status_text))" has ' 1 reserved' "$(status_text)"

pid=$(main_pid)
check "systemctl stop mcsd" systemctl stop mcsd.service
journal=$(journalctl -b -u mcsd.service -o cat --no-pager 2>&1)
check "mcsd told systemd STOPPING=1" has "Got notification message from PID $pid (STOPPING=1" "$journal"
check "and exited by itself, with status 0 ($(systemctl show -p Result,ExecMainStatus --value mcsd.service | tr '\n' ' '))" \
    [ "$(systemctl show -p Result,ExecMainStatus --value mcsd.service | tr '\n' ' ')" = "success 0 " ]
check "not killed" lacks "Killing process $pid" "$journal"
check "mcsd.socket still listens" [ "$(systemctl is-active mcsd.socket)" = active ]
list_again=$(allocations)
check "the next call starts mcsd again ($(systemctl is-active mcsd.service)), every allocation still there" \
    [ "$list_again" = "$list_after" ]

# --- the OCI hook, run as podman runs it -------------------------------------

# bundle NAME LEVEL: a bundle directory whose config.json carries LEVEL as
# the engine writes it (process label and mount label).
bundle() {
    local dir=/run/vmtest-bundles/$1
    mkdir -p "$dir" || return
    shift
    printf '{"ociVersion":"1.0.2","process":{"selinuxLabel":"system_u:system_r:container_t:%s"},"linux":{"mountLabel":"system_u:object_r:container_file_t:%s"},"annotations":{"io.container.manager":"libpod"}}\n' \
        "$1" "$1" >"$dir/config.json"
    echo "$dir"
}
# create_runtime ID BUNDLE: the hook, given the OCI state as podman gives it.
create_runtime() {
    printf '{"ociVersion":"1.0.2","id":"%s","status":"creating","pid":0,"bundle":"%s","annotations":{"io.container.manager":"libpod"}}\n' \
        "$1" "$2" | timeout 60 "$hook_path" hook create-runtime
}
level_e=$(mcsctl -o json allocate probe-e --owner vmtest | level_of)
mcsctl release probe-e >/dev/null
out=$(create_runtime ctr-e "$(bundle ctr-e "$level_e")" 2>&1)
got_e=$(mcsctl -o json get ctr-e 2>&1 | level_of)
check "the hook records ctr-e at the level podman chose ($level_e, recorded: $got_e)" \
    [ "$got_e" = "$level_e" ]
show "$out"
level_c=$(mcsctl -o json get ctr-c | level_of)
out=$(create_runtime ctr-f "$(bundle ctr-f "$level_c")" 2>&1)
check "a second container at ctr-c's level ($level_c) is refused" failed "$?"
check "and the refusal names the holder: $out" has "ctr-c" "$out"
check "ctr-c keeps its pair" [ "$(mcsctl -o json get ctr-c | level_of)" = "$level_c" ]

# --- the journal --------------------------------------------------------------

entries=$(journalctl -b -u mcsd.service CONTAINER_ID=ctr-a -o cat --no-pager 2>&1)
check "journalctl -u mcsd CONTAINER_ID=ctr-a finds its entries ($(grep -c . <<<"$entries"))" \
    [ "$(grep -c . <<<"$entries")" -ge 3 ]
show "$entries"
audit=$(journalctl -b -u mcsd.service TARGET=mcsd::audit -o verbose --no-pager 2>&1)
check "audit entries carry UID= ($(grep -c '^ *UID=' <<<"$audit") of $(grep -c '^ *METHOD=' <<<"$audit"))" \
    sh -c "[ $(grep -c '^ *UID=0$' <<<"$audit") -ge 5 ]"
show "$(grep -m1 -B12 -A3 'METHOD=Allocate' <<<"$audit" | grep -E '^ *(MESSAGE|METHOD|UID|SUBJECT|RESULT|_SYSTEMD_UNIT)=')"

warnings=$(mcsd_log -p warning)
check "mcsd logged no warning or error under the unit's hardening ($(grep -c . <<<"$warnings"))" [ -z "$warnings" ]
show "$(head -n 10 <<<"$warnings")"

# --- exposure ----------------------------------------------------------------

mcsctl status >/dev/null 2>&1
security=$(systemd-analyze security mcsd.service --no-pager 2>&1)
score=$(sed -n 's/.*Overall exposure level for mcsd.service: \([0-9.]*\).*/\1/p' <<<"$security")
info "systemd-analyze security mcsd.service: ${score:-?}"
# What still counts: the rows with a non-zero exposure.
show "$(awk '$NF ~ /^[0-9.]+$/ && $NF > 0' <<<"$security")"
check "systemd-analyze security mcsd.service is ${score:-?}, at most 2.5" \
    awk -v s="${score:-99}" 'BEGIN { exit !(s <= 2.5) }'

# --- denials -------------------------------------------------------------------

info "$(grep -c 'avc:  denied' /run/audit.log) denials recorded in all; by source domain:"
show "$(grep 'avc:  denied' /run/audit.log | sed -n 's/.*scontext=[^:]*:[^:]*:\([^:]*\):.*/\1/p' | sort | uniq -c)"
show "$(grep 'avc:  denied' /run/audit.log | grep -v 'scontext=system_u:system_r:mcsd_t' |
    sed 's/.*avc:  denied/denied/; s/ pid=[0-9]*//; s/ ino=[0-9]*//' | sort | uniq -c | sort -rn | head -n 25)"
now=$(cut -d' ' -f1 /proc/uptime)
info "scenario took $(awk "BEGIN {print $now - $started}") s after the boot"
info "$failures failed"
echo "END: $failures"
exit $((failures > 0))
