#!/bin/sh
# The guest's service manager, in init_t: reads lines from /run/svc and
# runs their command with no descriptors but /dev/null, as systemd starts a
# unit, so the policy's transitions from init_t apply.
#   start NAME CMD...   in the background; its pid goes to /run/NAME.pid
#   run NAME CMD...     to its end; its exit status goes to /run/NAME.rc
while :; do
    while read -r verb name cmd; do
        case $verb in
            start)
                # shellcheck disable=SC2086
                sh -c "exec $cmd" </dev/null >/dev/null 2>&1 &
                echo $! >"/run/$name.pid"
                ;;
            run)
                # shellcheck disable=SC2086
                sh -c "exec $cmd" </dev/null >/dev/null 2>&1
                echo $? >"/run/$name.rc"
                ;;
        esac
    done </run/svc
done
