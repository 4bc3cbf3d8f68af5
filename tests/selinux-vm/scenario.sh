#!/usr/bin/bash
# The scenario, inside the guest, as unconfined root under an enforcing
# kernel. Prints PASS:/FAIL:/INFO: lines (the runner collects them) and
# EXPECT-AVC: lines naming the denials it provokes on purpose; exits
# non-zero if any check failed.
#
# Functions run through check, which shellcheck cannot follow:
# shellcheck disable=SC2317
set -u
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
# Descriptors of this domain, not the ones inherited from PID 1 (kernel_t),
# which container processes may not use.
exec </dev/null >/dev/ttyS1 2>&1
export MCSD_SOCKET=/run/mcsd/mcsd.sock

# The helpers every guest scenario shares (run installs guest.sh beside it).
# shellcheck source=guest.sh
. "$(dirname "${BASH_SOURCE[0]}")/guest.sh"

# A command run by the guest's service manager (init_t), as systemd would:
# its exit status.
svc_run() {
    local name=$1
    shift
    rm -f "/run/$name.rc"
    svc run "$name" "$*"
    wait_for 10 test -s "/run/$name.rc"
    cat "/run/$name.rc" 2>/dev/null
}

# probe LEVEL SCRIPT: runs SCRIPT (busybox sh) as a container at LEVEL and
# prints what it printed. container_t may not write to the caller's pipes,
# so the probe writes into a container_file_t:s0 file.
probe() {
    local out
    out=/ct/out/probe.$RANDOM
    runcon "system_u:system_r:container_t:$1" /ct/busybox sh -c "exec >$out 2>&1; $2" </dev/null >/dev/null 2>&1
    cat "$out"
    rm -f "$out"
}

# --- set-up -----------------------------------------------------------------

check "SELinux is enforcing ($(getenforce))" [ "$(getenforce)" = Enforcing ]
check "the scenario runs unconfined ($(tr -d '\0' </proc/self/attr/current))" \
    grep -q unconfined_t /proc/self/attr/current

# Programs for probe processes: container_t is entered only from
# container_file_t executables, mcsd_t only from mcsd_exec_t ones.
mkdir -p /ct/out
cp /bin/busybox /ct/busybox
# busybox picks its applet by name: one mcsd_exec_t copy per applet.
mkdir -p /ct/mcsd-probe
cp /bin/busybox /ct/mcsd-probe/cat
cp /bin/busybox /ct/mcsd-probe/nc
setfattr -n security.selinux -v system_u:object_r:container_file_t:s0 /ct /ct/out /ct/busybox /ct/mcsd-probe
setfattr -n security.selinux -v system_u:object_r:mcsd_exec_t:s0 /ct/mcsd-probe/cat /ct/mcsd-probe/nc

# Step 7 needs a container that runs before mcsd starts.
runcon system_u:system_r:container_t:s0:c5,c6 /ct/busybox sleep 100000 </dev/null &
early=$!
sleep 0.5
check "a container runs at s0:c5,c6 before mcsd starts ($(tr -d '\0' </proc/$early/attr/current))" \
    grep -q 'container_t:s0:c5,c6' /proc/$early/attr/current

mkdir -p /etc/mcsd
cat >/etc/mcsd/mcsd.toml <<'TOML'
categories = "c0.c9"

[labels]
process = "system_u:system_r:container_t"
file = "system_u:object_r:container_file_t"

[relabel]
restore = "original"
threads = 2
TOML
setfattr -n security.selinux -v system_u:object_r:mcsd_conf_t:s0 /etc/mcsd /etc/mcsd/mcsd.toml

# --- 1. mcsd starts in mcsd_t and listens -----------------------------------

check "mcsd starts and answers on $MCSD_SOCKET" start_mcsd
domain=$(tr -d '\0' <"/proc/$(cat /run/mcsd.pid)/attr/current")
check "mcsd runs in mcsd_t ($domain)" [ "${domain#system_u:system_r:mcsd_t:}" != "$domain" ]
check "mcsd gets every category from the policy, started at s0" \
    [ "$domain" = system_u:system_r:mcsd_t:s0-s0:c0.c1023 ]
check "the socket is mcsd_var_run_t ($(label /run/mcsd/mcsd.sock))" \
    [ "$(label /run/mcsd/mcsd.sock)" = system_u:object_r:mcsd_var_run_t:s0 ]
check "the state directory is mcsd_var_lib_t ($(label /var/lib/mcsd))" \
    [ "$(label /var/lib/mcsd)" = system_u:object_r:mcsd_var_lib_t:s0 ]

# --- 2. two containers, two levels ------------------------------------------

level_a=$(mcsctl -o json allocate a --owner vm | level_of)
level_b=$(mcsctl -o json allocate b --owner vm | level_of)
info "A is $level_a, B is $level_b"
check "A and B got levels" test -n "$level_a" -a -n "$level_b"
check "their levels differ" [ "$level_a" != "$level_b" ]
check "neither got the level of the container that ran before mcsd" \
    test "$level_a" != s0:c5,c6 -a "$level_b" != s0:c5,c6

# --- 3. volumes -------------------------------------------------------------

for v in vol-a vol-b shared; do
    mkdir -p "/srv/$v/sub"
    echo "data of $v" >"/srv/$v/data"
    echo "more of $v" >"/srv/$v/sub/more"
done
ln -s /etc/shadow /srv/vol-a/shadow-link
# A root-only host file hard-linked into A's volume: a label belongs to the
# inode, so labeling the name inside the volume would hand the file to A.
echo "host secret" >/root/hl-secret
chmod 600 /root/hl-secret
ln /root/hl-secret /srv/vol-a/host-link
original=$(label /srv/vol-a/data)
shadow_before=$(label /etc/shadow)
hl_before=$(label /root/hl-secret)
info "volumes start as $original; /etc/shadow is $shadow_before; /root/hl-secret is $hl_before"

out=$(mcsctl relabel a /srv/vol-a 2>&1)
check "relabel A's volume private" [ $? -eq 0 ]
check "the relabel names the hard-linked host file it left alone" \
    grep -q "1 hard-linked entries left alone.*/srv/vol-a/host-link" <<<"$out"
check "relabel B's volume private" mcsctl relabel b /srv/vol-b
check "relabel the shared volume for A" mcsctl relabel a /srv/shared --shared
check "register the shared volume for B too" mcsctl relabel b /srv/shared --shared
private_a=system_u:object_r:container_file_t:$level_a
private_b=system_u:object_r:container_file_t:$level_b
check "A's volume is $private_a" [ "$(label /srv/vol-a/sub/more)" = "$private_a" ]
check "B's volume is $private_b" [ "$(label /srv/vol-b/sub/more)" = "$private_b" ]
check "the shared volume is container_file_t:s0" \
    [ "$(label /srv/shared/sub/more)" = system_u:object_r:container_file_t:s0 ]
check "the symlink still points at /etc/shadow" [ "$(readlink /srv/vol-a/shadow-link)" = /etc/shadow ]
check "/etc/shadow kept its label ($(label /etc/shadow))" [ "$(label /etc/shadow)" = "$shadow_before" ]
check "the hard-linked host file kept its label ($(label /root/hl-secret))" \
    [ "$(label /root/hl-secret)" = "$hl_before" ]

# --- 4. the kernel enforces the levels --------------------------------------

isolation() {
    local me=$1 mine=$2 theirs=$3 other_level=$4
    local out
    out=$(probe "$me" "cat /srv/$mine/data && echo written >/srv/$mine/new-$me && cat /srv/$mine/new-$me \
        && cat /srv/shared/data && echo shared >/srv/shared/new-$me && echo ALL-OK")
    check "$me reads and writes its volume and the shared one" grep -q ALL-OK <<<"$out"
    out=$(probe "$me" "cat /srv/$theirs/data; echo rc=\$?")
    check "$me gets EACCES on the other volume" grep -q 'Permission denied' <<<"$out"
    check "$me could not read a byte of it" lacks "data of $theirs" "$out"
    # The kernel logs no record for the refused lookup in the other
    # volume's directory (observed here), so also hand the process an open
    # descriptor of the other volume's file: the kernel checks it against
    # the new process's label at exec, closes it, and logs the denial.
    runcon "system_u:system_r:container_t:$me" /ct/busybox cat <"/srv/$theirs/data" >/ct/out/fd 2>&1
    check "$me cannot read it through an inherited descriptor either" \
        lacks "data of $theirs" "$(cat /ct/out/fd)"
    check "the kernel logged the denial ($me -> $other_level)" \
        denied "scontext=system_u:system_r:container_t:$me " \
        "tcontext=system_u:object_r:container_file_t:$other_level "
}
isolation "$level_a" vol-a vol-b "$level_b"
isolation "$level_b" vol-b vol-a "$level_a"
out=$(probe "$level_a" "cat /srv/vol-a/host-link; echo rc=\$?")
check "A gets EACCES on the host file hard-linked into its volume" grep -q 'Permission denied' <<<"$out"
check "A could not read a byte of it" lacks "host secret" "$out"

# --- 5. release restores and frees ------------------------------------------

check "release A" mcsctl release a
check "A's volume is back to $original" [ "$(label /srv/vol-a/sub/more)" = "$original" ]
check "the hard-linked host file still has its own label" [ "$(label /root/hl-secret)" = "$hl_before" ]
check "the shared volume stays container_file_t:s0 while B has it" \
    [ "$(label /srv/shared/data)" = system_u:object_r:container_file_t:s0 ]
check "what A wrote to the shared volume no longer carries A's pair" \
    [ "$(label "/srv/shared/new-$level_a")" = system_u:object_r:container_file_t:s0 ]
out=$(probe "$level_b" "cat /srv/shared/data && echo more >>/srv/shared/data && echo SHARED-OK")
check "B still reads and writes the shared volume after A's release" grep -q SHARED-OK <<<"$out"
check "A's allocation is gone" sh -c '! mcsctl get a >/dev/null 2>&1'
again=$(mcsctl -o json allocate a-again --level "$level_a" | level_of)
check "A's pair is free again (granted to a new container: $again)" [ "$again" = "$level_a" ]
mcsctl release a-again >/dev/null

# --- 6. restart: B's allocation stays, its pair is never handed out ---------

check "mcsd stops on SIGTERM" stop_mcsd
check "mcsd starts again" start_mcsd
check "B's allocation survived the restart" [ "$(held b)" = "$level_b" ]
check "B's volume kept its label" [ "$(label /srv/vol-b/data)" = "$private_b" ]

# --- 7 (and 6). exhaust c0.c9: never B's pair, never the running container's -

declare -A seen=()
duplicate=0
n=0
while level=$(mcsctl -o json allocate "fill-$n" --owner vm 2>/tmp/fill.err | level_of) && [ -n "$level" ]; do
    [ -n "${seen[$level]:-}" ] && duplicate=1
    seen[$level]=1
    n=$((n + 1))
    [ "$n" -gt 45 ] && break
done
info "allocated $n more pairs until: $(cat /tmp/fill.err)"
check "c0.c9 ran out after 43 more (45 minus B's and the running container's)" [ "$n" -eq 43 ]
check "exhaustion is a clear error" grep -q "all 45 pairs of c0.c9" /tmp/fill.err
check "no pair handed out twice" [ "$duplicate" -eq 0 ]
check "B's pair was never handed out again" [ -z "${seen[$level_b]:-}" ]
check "s0:c5,c6 (in use before mcsd started) was never handed out" [ -z "${seen[s0:c5,c6]:-}" ]
check "mcsd holds s0:c5,c6 for the running process" sh -c 'mcsctl list --owner running | grep -q "s0:c5,c6"'
check "release B" mcsctl release b
check "the last release of the shared volume restores it to $original" \
    [ "$(label /srv/shared/sub/more)" = "$original" ]
kill "$early" 2>/dev/null

# --- 8. mcsd_t is confined --------------------------------------------------

# A program entered as mcsd is (init_t runs an mcsd_exec_t file) tries what
# the module must forbid. Every denial it causes is expected.
echo 'EXPECT-AVC: exe="/ct/mcsd-probe/|path="/ct/mcsd-probe/|comm="(cat|nc)" '
rc=$(svc_run probe-root /ct/mcsd-probe/cat /root/secret)
check "mcsd_t cannot read a file in /root (exit $rc)" failed "$rc"
rc=$(svc_run probe-tcp /ct/mcsd-probe/nc -w 1 127.0.0.1 9)
check "mcsd_t cannot open a TCP socket (exit $rc)" failed "$rc"
check "the kernel logged mcsd_t's denial on /root" \
    denied 'comm="cat"' "scontext=system_u:system_r:mcsd_t:"
check "the kernel logged mcsd_t's denial of the TCP socket" \
    denied 'comm="nc"' "scontext=system_u:system_r:mcsd_t:" "tclass=tcp_socket"

# The etcd store needs TCP: the module's boolean, off by default, allows
# connecting to etcd's client port and nothing else.
check "the mcsd_connect_etcd boolean is off by default" \
    sh -c 'getsebool mcsd_connect_etcd | grep -q "off$"'
ifconfig lo 127.0.0.1 up
/bin/busybox nc -l -p 2379 </dev/null >/dev/null 2>&1 &
listener=$!
setsebool mcsd_connect_etcd on
rc=$(svc_run probe-etcd /ct/mcsd-probe/nc -w 2 127.0.0.1 2379)
check "with it on, mcsd_t connects to etcd's port 2379 (exit $rc)" [ "$rc" = 0 ]
rc=$(svc_run probe-ssh /ct/mcsd-probe/nc -w 1 127.0.0.1 22)
check "and still not to a reserved port such as 22 (exit $rc)" failed "$rc"
check "the kernel logged that denial" \
    denied 'comm="nc"' "scontext=system_u:system_r:mcsd_t:" "name_connect"
setsebool mcsd_connect_etcd off
kill "$listener" 2>/dev/null

# --- 9. a caller in a container domain is refused, whatever its uid -------

# The container's own copy of mcsctl and of the libraries it links, as an
# image would carry them (container_file_t): container_t is entered through
# the dynamic loader, which then maps mcsctl. The VM-only policy module
# vmtest_container_client.cil lets container_t reach the socket, so the
# refusal below is mcsd's, not the kernel's.
mkdir -p /ct/lib
for f in /usr/bin/mcsctl /lib64/ld-linux-x86-64.so.2 /lib/x86_64-linux-gnu/libc.so.6 \
    /lib/x86_64-linux-gnu/libm.so.6 /lib/x86_64-linux-gnu/libgcc_s.so.1; do
    cp -L "$f" /ct/lib/
done
setfattr -n security.selinux -v system_u:object_r:container_file_t:s0 /ct/lib /ct/lib/*
# container_ctl LEVEL ARGS...: mcsctl as root in container_t at LEVEL; its
# output in /ct/out/ctl (container_t may not write the scenario's pipes).
container_ctl() {
    local level=$1
    shift
    runcon "system_u:system_r:container_t:$level" /ct/lib/ld-linux-x86-64.so.2 \
        --library-path /ct/lib /ct/lib/mcsctl "$@" </dev/null >/ct/out/ctl 2>&1
}
# A container at a pair does not even reach mcsd: the MCS constraint on
# connectto wants the client's level to dominate mcsd's whole range.
container_ctl s0:c1,c2 stats
check "a container at s0:c1,c2 cannot connect (the kernel refuses, MCS)" \
    grep -q 'cannot connect.*Permission denied' /ct/out/ctl
check "the kernel logged that denial" denied 'tclass=unix_stream_socket' \
    "scontext=system_u:system_r:container_t:s0:c1,c2 " "tcontext=system_u:system_r:mcsd_t:"
# One with every category connects, and mcsd refuses it by its domain.
container_ctl s0:c0.c1023 allocate from-container --owner vm
rc=$?
refusal=$(cat /ct/out/ctl)
info "mcsctl in container_t:s0:c0.c1023: $refusal"
check "mcsctl run as root in container_t is refused (exit $rc)" failed "$rc"
# mcsctl prints the status message only; its code is PERMISSION_DENIED
# (the one mapping of an auth refusal, checked in client/tests).
check "by mcsd, not the kernel" grep -q '^mcsctl: uid 0 may not call Allocate' <<<"$refusal"
check "saying it runs in the container domain container_t" \
    grep -q 'it runs in the container domain container_t (SELinux context system_u:system_r:container_t:s0:c0.c1023)' <<<"$refusal"
check "and naming the settings that would allow it" \
    grep -q 'allow_containers = true.*container_types' <<<"$refusal"
container_ctl s0:c0.c1023 list
check "reading is refused to it too" grep -q 'may not call List: it runs in the container domain' /ct/out/ctl
check "nothing was allocated for it" sh -c '! mcsctl get from-container >/dev/null 2>&1'
# c0.c9 is full since step 7: free a pair, then take it.
check "the admin client (unconfined_t) still releases" mcsctl release fill-0
check "and allocates" mcsctl allocate after-container --owner vm

check "mcsd stops cleanly at the end" stop_mcsd
info "$(grep -c 'avc:  denied' /run/audit.log) denials recorded in all"
info "$failures failed"
# The runner trusts no result without this line: a scenario that stopped
# halfway has not passed.
echo "END: $failures"
exit $((failures > 0))
