//! Connection limits over the real socket: one uid that floods mcsd with
//! idle and half-open connections cannot lock a runtime out.
//!
//! The flooding connections are made from a thread whose credentials are
//! another uid's (Linux credentials are per thread, and SO_PEERCRED records
//! the connecting thread's), so mcsd sees a non-admin peer.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{TestDaemon, CONFIG};
use mcs_client::{Allocate, Client};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

const NOBODY: u32 = 65534;
const STRANGER: u32 = 65533;

/// What an HTTP/2 client sends first: the preface and an empty SETTINGS
/// frame. After it the connection is an idle, well-behaved one.
const HANDSHAKE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

fn set_soft_open_files(soft: Option<u64>) {
    let limit = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: soft.or(limit.maximum),
            maximum: limit.maximum,
        },
    )
    .expect("setrlimit");
}

/// Starts mcsd with `extra` configuration as a stock service would be
/// started: with the default soft open-file limit of 1,024.
fn start(dir: &Path, extra: &str) -> TestDaemon {
    assert_eq!(
        rustix::process::geteuid().as_raw(),
        0,
        "this test connects as other uids and must run as root"
    );
    // Other uids must reach the socket (mode 0660, group root): the thread
    // that connects keeps gid 0.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("mcsd.toml"), format!("{CONFIG}{extra}")).unwrap();
    let hard = getrlimit(Resource::Nofile).maximum;
    set_soft_open_files(Some(hard.map_or(1024, |h| h.min(1024))));
    let mut daemon = TestDaemon::in_dir(dir, &["--categories", "c0.c1023"]);
    let launched = daemon.launch();
    set_soft_open_files(None);
    launched.expect("mcsd starts");
    daemon
}

/// Connections mcsd still holds on `socket`: the accepted ends, which
/// `/proc/net/unix` lists in state connected (03) under the name the
/// listener was bound to (mcsd binds `.NAME.PID.tmp` beside the socket and
/// renames it into place).
fn held_by_server(socket: &Path) -> usize {
    let table = std::fs::read_to_string("/proc/net/unix").expect("/proc/net/unix");
    let dir = socket.parent().unwrap().to_str().expect("a UTF-8 path");
    let name = socket.file_name().unwrap().to_str().unwrap();
    let bound = format!("{dir}/.{name}.");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() >= 8
                && fields[5] == "03"
                && fields[7].starts_with(&bound)
                && fields[7].ends_with(".tmp")
        })
        .count()
}

/// Waits until mcsd has let go of every connection (the launch's readiness
/// probe is counted against the limits until mcsd sees it closed).
async fn until_no_connection_is_held(socket: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while held_by_server(socket) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "mcsd still holds {} connection(s) after 10 s",
            held_by_server(socket)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `f` on a thread whose credentials are `uid` (gid 0, no
/// supplementary groups).
fn as_uid<T: Send>(uid: u32, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(move || {
            rustix::thread::set_thread_groups(&[]).expect("drop groups");
            let uid = rustix::process::Uid::from_raw(uid);
            rustix::thread::set_thread_res_uid(uid, uid, uid).expect("setresuid");
            f()
        })
        .join()
        .unwrap()
    })
}

/// Connects and sends `first` (if anything); a connection mcsd refused may
/// fail the write, and is then found closed.
fn connect(socket: &Path, first: &[u8]) -> UnixStream {
    let mut s = UnixStream::connect(socket).expect("connect");
    if !first.is_empty() {
        let _ = s.write_all(first);
    }
    s
}

/// Whether mcsd still holds `s` open: what it sent is read away, then a
/// read that would block means open, end of file or an error closed.
fn is_open(s: &mut UnixStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

/// Allocates until `stop`, each tenth call on a new connection (as
/// `mcsctl` and OCI hooks connect), and returns every call's latency and
/// the failures (a call longer than 5 s counts as one).
async fn allocate_until(
    socket: &Path,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Vec<Duration>, Vec<String>) {
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    let mut client: Option<Client> = None;
    let mut i = 0u64;
    while !*stop.borrow() {
        let started = Instant::now();
        let call = async {
            if i % 10 == 0 || client.is_none() {
                client = Some(Client::connect(socket).await.map_err(|e| e.to_string())?);
            }
            let c = client.as_mut().expect("connected");
            c.allocate(Allocate::new(format!("runtime-{i}")).owner("podman"))
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(Duration::from_secs(5), call).await {
            Ok(Ok(_)) => latencies.push(started.elapsed()),
            Ok(Err(e)) => failures.push(format!("call {i}: {e}")),
            Err(_) => {
                failures.push(format!("call {i}: no answer within 5 s"));
                client = None;
            }
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (latencies, failures)
}

fn p99(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort();
    latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_and_half_open_connections_cannot_lock_a_runtime_out() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), "[connections]\nhandshake_timeout_ms = 2000\n");
    let socket = daemon.socket.clone();
    let hard = getrlimit(Resource::Nofile).maximum;
    if hard.is_none_or(|h| h > 1024) {
        assert!(
            daemon.log().contains("raised the open-file limit"),
            "{}",
            daemon.log()
        );
    }

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runtime = tokio::spawn({
        let socket = socket.clone();
        async move { allocate_until(&socket, stopped).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let flood_socket = socket.clone();
    let (mut half_open, mut idle) = tokio::task::spawn_blocking(move || {
        as_uid(NOBODY, || {
            let mut half_open = Vec::new();
            for i in 0..40 {
                // Nothing at all, or half the preface.
                let first: &[u8] = if i % 2 == 0 { b"" } else { &HANDSHAKE[..12] };
                half_open.push((Instant::now(), connect(&flood_socket, first)));
            }
            let idle: Vec<UnixStream> = (0..2000)
                .map(|_| connect(&flood_socket, HANDSHAKE))
                .collect();
            (half_open, idle)
        })
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let open_idle: Vec<usize> = (0..idle.len()).filter(|&i| is_open(&mut idle[i])).collect();
    assert!(
        (100..=256).contains(&open_idle.len()),
        "{} of 2000 idle connections from one uid are open; per_uid is 256",
        open_idle.len()
    );

    // Every half-open connection is closed once its 2 s are up, not before.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut closed_after = Vec::new();
    while !half_open.is_empty() && Instant::now() < deadline {
        half_open.retain_mut(|(connected, s)| {
            if is_open(s) {
                return true;
            }
            closed_after.push(connected.elapsed());
            false
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        half_open.is_empty(),
        "{} half-open connections still open 10 s after the flood",
        half_open.len()
    );
    assert!(
        closed_after
            .iter()
            .all(|t| *t >= Duration::from_millis(1900)),
        "closed before the handshake timeout: {closed_after:?}"
    );
    // The idle ones sent their preface: they are open past the timeout.
    let still = open_idle.iter().filter(|&&i| is_open(&mut idle[i])).count();
    assert_eq!(still, open_idle.len(), "idle connections were closed");

    stop.send(true).unwrap();
    let (latencies, failures) = runtime.await.unwrap();
    assert!(
        failures.is_empty(),
        "the runtime's calls failed: {failures:?}"
    );
    assert!(latencies.len() >= 20, "only {} calls", latencies.len());
    let p99 = p99(latencies.clone());
    println!(
        "{} allocations during the flood, p99 {:.1} ms",
        latencies.len(),
        p99.as_secs_f64() * 1e3
    );
    assert!(p99 < Duration::from_millis(500), "p99 {p99:?}");

    let log = daemon.log();
    assert!(
        log.contains("connection refused: uid 65534 already has 256 connections open (connections.per_uid = 256)"),
        "{log}"
    );
    assert!(
        log.contains("uid 65534 did not send the HTTP/2 preface within 2000 ms"),
        "{log}"
    );
    // Rate-limited: 1,744 refusals within seconds make one line or two.
    let refusals = log.matches("connection refused:").count();
    assert!(
        (1..=3).contains(&refusals),
        "{refusals} refusal lines: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_connections_are_kept_for_admins() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(
        dir.path(),
        "[connections]\nmax = 40\nadmin_reserve = 10\nper_uid = 100\n",
    );
    let socket = daemon.socket.clone();
    until_no_connection_is_held(&socket).await;
    let flood_socket = socket.clone();
    let mut idle = tokio::task::spawn_blocking(move || {
        as_uid(NOBODY, || {
            (0..40)
                .map(|_| connect(&flood_socket, HANDSHAKE))
                .collect::<Vec<_>>()
        })
    })
    .await
    .unwrap();
    // mcsd closes the ten beyond the limit as it accepts them; on a busy
    // machine that can take a while, so wait for it (at most 10 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut open = idle.iter_mut().map(is_open).filter(|&o| o).count();
    while open > 30 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        open = idle.iter_mut().map(is_open).filter(|&o| o).count();
    }
    assert_eq!(open, 30, "non-admins may use max - admin_reserve");
    assert_eq!(held_by_server(&socket), 30, "mcsd holds exactly those");

    // Another non-admin uid, far below its own cap, is refused too.
    let stranger_socket = socket.clone();
    let mut stranger = tokio::task::spawn_blocking(move || {
        as_uid(STRANGER, || connect(&stranger_socket, HANDSHAKE))
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!is_open(&mut stranger), "a non-admin got a reserved slot");

    // An admin (root) still gets in, on new connections, and is served.
    for i in 0..5 {
        let mut c = tokio::time::timeout(Duration::from_secs(5), Client::connect(&socket))
            .await
            .expect("an admin connects in time")
            .expect("connect");
        tokio::time::timeout(
            Duration::from_secs(5),
            c.allocate(Allocate::new(format!("admin-{i}"))),
        )
        .await
        .expect("an admin is answered in time")
        .expect("allocate");
    }
    let log = daemon.log();
    assert!(
        log.contains(
            "connection refused: uid 65534 is not an admin and only the 10 connections kept \
             for admins are left (30 of connections.max = 40 open)"
        ),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_new_limits_to_new_connections() {
    use rustix::process::{kill_process, Pid, Signal};
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), "[connections]\nper_uid = 100\n");
    let socket = daemon.socket.clone();
    let open_as_nobody = |n: usize| {
        let socket = socket.clone();
        tokio::task::spawn_blocking(move || {
            as_uid(NOBODY, || {
                (0..n)
                    .map(|_| connect(&socket, HANDSHAKE))
                    .collect::<Vec<_>>()
            })
        })
    };
    let mut first = open_as_nobody(5).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(first.iter_mut().all(is_open));

    std::fs::write(
        dir.path().join("mcsd.toml"),
        format!("{CONFIG}[connections]\nper_uid = 3\n"),
    )
    .unwrap();
    kill_process(Pid::from_raw(daemon.pid() as i32).unwrap(), Signal::HUP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log().contains("configuration reloaded") {
        assert!(Instant::now() < deadline, "no reload: {}", daemon.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        daemon
            .log()
            .contains("connection limits replaced (max 4096, per uid 3"),
        "{}",
        daemon.log()
    );
    // Open ones stay; a sixth is over the new cap.
    let mut more = open_as_nobody(1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!is_open(&mut more[0]), "admitted over the reloaded per_uid");
    assert!(
        first.iter_mut().all(is_open),
        "open connections were closed"
    );
}
