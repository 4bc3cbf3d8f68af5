//! Running as a service: readiness on NOTIFY_SOCKET, socket activation,
//! health and reflection through real gRPC clients, Status, metrics scraped
//! over HTTP, SIGHUP reloads, and --check-config.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestDaemon, CONFIG};
use mcs_client::{Allocate, Client};
use rustix::process::{kill_process, Pid, Signal};

/// mcsd on c0.c9 with its config, socket and state in `dir`, not yet
/// started: for tests that control its environment themselves.
fn mcsd_in(dir: &std::path::Path) -> Command {
    std::fs::write(dir.join("mcsd.toml"), CONFIG).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_mcsd"));
    command
        .arg("--config")
        .arg(dir.join("mcsd.toml"))
        .arg("--socket")
        .arg(dir.join("mcsd.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--categories", "c0.c9"]);
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_stopping_are_sent_to_notify_socket() {
    let temp = tempfile::tempdir().unwrap();
    let notify = temp.path().join("notify");
    let listener = UnixDatagram::bind(&notify).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = mcsd_in(temp.path())
        .env("NOTIFY_SOCKET", &notify)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    while !messages.iter().any(|m: &String| m.contains("READY=1")) {
        let n = listener
            .recv(&mut buf)
            .expect("a notification before the timeout");
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        messages[0].starts_with("STATUS=Loading the store"),
        "{messages:?}"
    );
    let ready = messages.last().unwrap();
    assert!(
        ready.contains("STATUS=Serving: 0 of 45 pairs held"),
        "{ready}"
    );
    // Ready means ready: the socket answers now.
    let mut c = Client::connect(temp.path().join("mcsd.sock"))
        .await
        .unwrap();
    c.stats().await.unwrap();
    kill_process(Pid::from_raw(child.id() as i32).unwrap(), Signal::TERM).unwrap();
    let n = listener.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("STOPPING=1"));
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_passed_by_systemd_is_used_and_left_in_place() {
    let temp = tempfile::tempdir().unwrap();
    let socket = temp.path().join("activated.sock");
    std::fs::write(temp.path().join("mcsd.toml"), CONFIG).unwrap();
    // systemd-socket-activate binds the socket and execs mcsd with it as fd
    // 3 and LISTEN_FDS/LISTEN_PID set, as mcsd.socket would.
    let mut child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&socket)
        .arg(env!("CARGO_BIN_EXE_mcsd"))
        .arg("--config")
        .arg(temp.path().join("mcsd.toml"))
        .arg("--socket")
        .arg(temp.path().join("unused.sock"))
        .arg("--state-dir")
        .arg(temp.path().join("state"))
        .args(["--categories", "c0.c9"])
        .stderr(std::fs::File::create(temp.path().join("log")).unwrap())
        .spawn()
        .expect("systemd-socket-activate (Debian package systemd)");
    wait_for("the activated socket", || socket.exists());
    // The first connection starts mcsd (systemd-socket-activate execs on
    // accept); the call waits in the backlog until mcsd serves.
    let mut c = Client::connect(&socket).await.unwrap();
    let a = c.allocate(Allocate::new("x")).await.unwrap();
    assert!(a.level.starts_with("s0:c"));
    let log = std::fs::read_to_string(temp.path().join("log")).unwrap();
    assert!(
        log.contains("serving on the socket systemd passed"),
        "{log}"
    );
    assert!(
        !temp.path().join("unused.sock").exists(),
        "mcsd bound its own socket too"
    );
    // The passed socket must not leak into programs mcsd might run.
    let fdinfo = std::fs::read_to_string(format!("/proc/{}/fdinfo/3", child.id())).unwrap();
    let flags = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
        .expect("flags in fdinfo");
    assert_ne!(flags & 0o2000000, 0, "fd 3 is not close-on-exec: {fdinfo}");
    drop(c);
    kill_process(Pid::from_raw(child.id() as i32).unwrap(), Signal::TERM).unwrap();
    child.wait().unwrap();
    assert!(
        socket.exists(),
        "the socket file is systemd's; mcsd must not remove it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_status_answer_over_the_socket() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let launched = Instant::now();
    let d = TestDaemon::start("c0.c9");
    let mut c = d.client().await;
    let mut health = HealthClient::new(c.channel());
    for service in ["", "mcs.v1.Labels"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service:?}");
    }

    let mut reflection = ServerReflectionClient::new(c.channel());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["mcs.v1.Labels", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }

    let s = c.status().await.unwrap();
    assert_eq!(s.version, env!("CARGO_PKG_VERSION"));
    assert_eq!((s.health.as_str(), s.range.as_str()), ("SERVING", "c0.c9"));
    assert!(
        s.store.contains(&d.state.display().to_string()),
        "{}",
        s.store
    );
    assert_eq!(s.selinux_mode, mcsd::context::selinux_mode().to_string());
    assert_eq!(s.restore_mode, "original");
    // The uptime counts from the daemon's start: never more than the time
    // since this test launched it, and it grows with real time. (A wall
    // clock slewed by NTP drifts far less than the 1 ms allowed here.)
    let first = s.uptime_seconds;
    let since_launch = launched.elapsed().as_secs_f64();
    assert!(
        first > 0.0 && first <= since_launch,
        "uptime {first} s, launched {since_launch} s ago"
    );
    let wait = Duration::from_millis(300);
    tokio::time::sleep(wait).await;
    let second = c.status().await.unwrap().uptime_seconds;
    let since_launch = launched.elapsed().as_secs_f64();
    assert!(
        second - first >= wait.as_secs_f64() - 0.001 && second <= since_launch,
        "uptime {first} s, then {second} s after a {wait:?} wait, launched {since_launch} s ago"
    );
}

fn scrape(port: u16) -> String {
    common::get_metrics(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_scraped_over_http() {
    let temp = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        temp.path().join("mcsd.toml"),
        format!("{CONFIG}[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let mut d = TestDaemon::in_dir(temp.path(), &["--categories", "c0.c9"]);
    d.launch().unwrap();
    let mut c = d.client().await;
    let a = c
        .allocate(Allocate::new("a").owner("podman"))
        .await
        .unwrap();
    c.allocate(Allocate::new("b").owner("podman").level(a.level))
        .await
        .unwrap_err();
    c.release("a").await.unwrap();
    c.allocate(Allocate::new("r").owner("crio")).await.unwrap();

    let text = scrape(port);
    for line in [
        "mcsd_allocations_total{owner=\"podman\",result=\"ok\"} 1",
        "mcsd_releases_total{owner=\"podman\",result=\"ok\"} 1",
        "mcsd_allocations_total{owner=\"unknown\",result=\"already_exists\"} 1",
        "mcsd_allocations_total{owner=\"crio\",result=\"ok\"} 1",
        "mcsd_pairs{state=\"total\"} 45",
        "mcsd_pairs{state=\"held\"} 1",
        "mcsd_pairs{state=\"free\"} 44",
        "mcsd_request_duration_seconds_count{method=\"Allocate\"} 3",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(
        text.lines().any(
            |l| l.starts_with("mcsd_store_flush_duration_seconds_count ") && !l.ends_with(" 0")
        ),
        "{text}"
    );
    // Anything but /metrics is a 404.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_reservations_and_roles_and_refuses_fixed_settings() {
    let temp = tempfile::tempdir().unwrap();
    let config = temp.path().join("mcsd.toml");
    std::fs::write(&config, format!("reservations = [\"c3\"]\n{CONFIG}")).unwrap();
    let mut d = TestDaemon::in_dir(temp.path(), &[]);
    d.launch().unwrap();
    let mut c = d.client().await;
    let targets = |r: Vec<mcs_client::proto::Reservation>| -> Vec<String> {
        r.into_iter().map(|r| r.target).collect()
    };
    assert_eq!(targets(c.reservations().await.unwrap()), ["c3"]);

    let hup = |d: &TestDaemon| {
        kill_process(Pid::from_raw(d.pid() as i32).unwrap(), Signal::HUP).unwrap();
    };
    std::fs::write(
        &config,
        format!("reservations = [\"c4\", \"s0:c1,c2\"]\n{CONFIG}[auth]\nreader_uids = [4242]\n[relabel]\nallowlist = [\"/srv/volumes\"]\n"),
    )
    .unwrap();
    hup(&d);
    wait_for("the reload", || d.log().contains("configuration reloaded"));
    assert_eq!(targets(c.reservations().await.unwrap()), ["c4", "s0:c1,c2"]);
    let log = d.log();
    for change in [
        "reserved c4",
        "reserved s0:c1,c2",
        "unreserved c3",
        "roles ([auth]) replaced",
        "relabel rules replaced (allowlist: /srv/volumes",
    ] {
        assert!(log.contains(change), "{change}: {log}");
    }
    // The new allowlist is in force: a root outside it is refused now.
    c.allocate(Allocate::new("v")).await.unwrap();
    let vol = temp.path().join("vol");
    std::fs::create_dir_all(&vol).unwrap();
    let mut stream = c
        .relabel(mcs_client::proto::RelabelRequest {
            container_id: "v".into(),
            path: vol.display().to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("relabel outside the reloaded allowlist succeeded"),
            Err(status) => break status,
        }
    };
    assert!(
        status
            .message()
            .contains("outside the allowed relabel roots"),
        "{status:?}"
    );

    std::fs::write(
        &config,
        format!("categories = \"c0.c9\"\nreservations = [\"c4\", \"s0:c1,c2\"]\n{CONFIG}"),
    )
    .unwrap();
    hup(&d);
    wait_for("the refusal", || {
        d.log().contains("configuration reload refused")
    });
    assert!(
        d.log().contains("categories cannot change while mcsd runs"),
        "{}",
        d.log()
    );
    assert_eq!(
        targets(c.reservations().await.unwrap()),
        ["c4", "s0:c1,c2"],
        "nothing half applied"
    );
    // Moving to another store would split the pool: a restart reloads it.
    std::fs::write(
        &config,
        format!("{CONFIG}[store]\nbackend = \"etcd\"\n[store.etcd]\nendpoints = [\"http://127.0.0.1:2379\"]\n"),
    )
    .unwrap();
    hup(&d);
    wait_for("the store refusal", || {
        d.log().matches("configuration reload refused").count() == 2
    });
    assert!(
        d.log().contains("[store] cannot change while mcsd runs"),
        "{}",
        d.log()
    );
    std::fs::write(&config, "colour = 1\n").unwrap();
    hup(&d);
    wait_for("the third refusal", || {
        d.log().matches("configuration reload refused").count() == 3
    });
    assert!(d.log().contains("mcsd.toml:1"), "{}", d.log());
    c.stats().await.unwrap();
}

#[test]
fn check_config_prints_the_effective_configuration_or_the_error() {
    let temp = tempfile::tempdir().unwrap();
    let config = temp.path().join("mcsd.toml");
    std::fs::write(&config, format!("{CONFIG}[relabel]\nrestore = \"none\"\n")).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mcsd"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .arg("--check-config")
            .output()
            .unwrap()
    };
    let out = run(&["--categories", "c0.c99"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("categories = \"c0.c99\""),
        "flags override the file: {text}"
    );
    assert!(text.contains("restore = \"none\""), "{text}");
    assert!(
        text.contains("process = \"system_u:system_r:container_t\""),
        "{text}"
    );
    std::fs::write(&config, "[relabel]\nrestore = \"sometimes\"\n").unwrap();
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("mcsd.toml:2: relabel.restore:"), "{err}");
}

/// Where the test reads journal entries from.
enum Journal {
    /// No journald runs: the test binds journald's socket and receives
    /// mcsd's datagrams itself.
    Played(UnixDatagram),
    /// A journald runs: the test asks it (journalctl) for the entries of the
    /// mcsd process it started, which no other process can have written.
    Real,
}

/// Removes the socket this test bound in journald's place.
struct Unbind;

impl Drop for Unbind {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(JOURNAL_SOCKET);
    }
}

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Kills the mcsd a test started if the test fails before stopping it, so
/// a failure leaves no daemon behind.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        // Already waited for on success: then kill and wait do nothing.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The entries of process `pid` that a running journald holds, in the
/// export format (`FIELD=value` lines, or `FIELD\n<len><value>` for values
/// with newlines: the native protocol's form), one per element.
fn journal_entries_of(pid: u32) -> Vec<Vec<u8>> {
    let out = Command::new("journalctl")
        .args(["--no-pager", "-o", "export", &format!("_PID={pid}")])
        .output()
        .unwrap_or_else(|e| {
            panic!("a journald runs ({JOURNAL_SOCKET} exists) but journalctl cannot run: {e}")
        });
    assert!(
        out.status.success(),
        "journalctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut entries = Vec::new();
    let mut rest = &out.stdout[..];
    while !rest.is_empty() {
        let end = rest
            .windows(2)
            .position(|w| w == b"\n\n")
            .map_or(rest.len(), |i| i + 2);
        entries.push(rest[..end].to_vec());
        rest = &rest[end..];
    }
    entries
}

/// When stderr is the journal (JOURNAL_STREAM names it), mcsd logs to
/// journald's socket with structured fields. Where no journald runs the
/// test plays journald (binds its socket); where one runs, it finds the
/// entries of its own mcsd process (by `_PID`, with a container id no other
/// run uses) through journalctl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_go_to_the_journal_with_fields_when_stderr_is_the_journal() {
    use std::os::unix::fs::MetadataExt;
    let journal_socket = Path::new(JOURNAL_SOCKET);
    let (journal, _unbind) = if journal_socket.exists() {
        (Journal::Real, None)
    } else {
        std::fs::create_dir_all(journal_socket.parent().unwrap()).unwrap();
        let listener = UnixDatagram::bind(journal_socket).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        (Journal::Played(listener), Some(Unbind))
    };

    let temp = tempfile::tempdir().unwrap();
    let stderr = std::fs::File::create(temp.path().join("stderr")).unwrap();
    let meta = stderr.metadata().unwrap();
    let mut child = Reap(
        mcsd_in(temp.path())
            .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
            .stderr(stderr)
            .spawn()
            .unwrap(),
    );
    wait_for("the socket", || temp.path().join("mcsd.sock").exists());
    let mut c = Client::connect(temp.path().join("mcsd.sock"))
        .await
        .unwrap();
    // Unique to this run, so an entry of an earlier run cannot answer for it.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let id = format!("journal-me-{}-{nanos}", child.0.id());
    c.allocate(Allocate::new(id.as_str()).owner("podman"))
        .await
        .unwrap();
    // The native journal protocol: FIELD=value lines, or FIELD\n<len><value>.
    // Whole field names only: UID must not match journald's own _UID.
    let field = |entry: &[u8], name: &str, value: &str| {
        let text = String::from_utf8_lossy(entry);
        let text = format!("\n{text}");
        text.contains(&format!("\n{name}={value}"))
            || text
                .split(&format!("\n{name}\n"))
                .nth(1)
                .is_some_and(|rest| rest.get(8..8 + value.len()) == Some(value))
    };
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let wait_for_entry = |what: &str, seen: &mut Vec<Vec<u8>>, found: &dyn Fn(&[u8]) -> bool| {
        while !seen.iter().any(|m| found(m)) {
            assert!(
                Instant::now() < deadline,
                "no journal entry for {what} within 20 s; entries seen: {:?}",
                seen.iter()
                    .map(|m| String::from_utf8_lossy(m))
                    .collect::<Vec<_>>()
            );
            match &journal {
                Journal::Played(listener) => {
                    let mut buf = vec![0u8; 65536];
                    let n = listener
                        .recv(&mut buf)
                        .unwrap_or_else(|e| panic!("no journal entry for {what}: {e}"));
                    seen.push(buf[..n].to_vec());
                }
                Journal::Real => {
                    *seen = journal_entries_of(child.0.id());
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    };
    wait_for_entry("the allocation", &mut seen, &|m| {
        field(m, "CONTAINER_ID", &id) && field(m, "OWNER", "podman")
    });
    let entry = seen
        .iter()
        .find(|m| field(m, "CONTAINER_ID", &id) && field(m, "OWNER", "podman"))
        .unwrap();
    assert!(
        field(entry, "LEVEL", "s0:c"),
        "{}",
        String::from_utf8_lossy(entry)
    );
    assert!(field(entry, "SYSLOG_IDENTIFIER", "mcsd"));
    // The audit entry names the caller.
    wait_for_entry("the audit of Allocate", &mut seen, &|m| {
        field(m, "METHOD", "Allocate") && field(m, "UID", "0")
    });
    kill_process(Pid::from_raw(child.0.id() as i32).unwrap(), Signal::TERM).unwrap();
    child.0.wait().unwrap();
    let plain = std::fs::read_to_string(temp.path().join("stderr")).unwrap();
    assert!(!plain.contains(&id), "logged to stderr instead: {plain}");
}

/// A plain health check (service "") and the API's own entry both turn
/// NOT_SERVING when mcsd starts stopping, seen by a client watching them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_not_serving_when_stopping() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let d = TestDaemon::start("c0.c9");
    let c = d.client().await;
    let mut watches = Vec::new();
    for service in ["", "mcs.v1.Labels"] {
        let mut health = HealthClient::new(c.channel());
        let mut stream = health
            .watch(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        assert_eq!(first.status(), ServingStatus::Serving, "{service:?}");
        watches.push((service, stream));
    }
    kill_process(Pid::from_raw(d.pid() as i32).unwrap(), Signal::TERM).unwrap();
    for (service, mut stream) in watches {
        let next = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("a status change before the timeout")
            .unwrap()
            .expect("the stream carries the change before it ends");
        assert_eq!(next.status(), ServingStatus::NotServing, "{service:?}");
    }
}

/// Where SELinux is disabled mcsd says so once in its log (not per request,
/// not again on a reload) and carries on allocating; where it is enabled
/// it says nothing of the kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_without_selinux_is_named_once_in_the_log_and_mcsd_carries_on() {
    const SAID: &str = "SELinux is disabled on this host";
    let d = TestDaemon::start("c0.c9");
    let mut c = d.client().await;
    for id in ["a", "b"] {
        c.allocate(Allocate::new(id)).await.unwrap();
    }
    kill_process(Pid::from_raw(d.pid() as i32).unwrap(), Signal::HUP).unwrap();
    wait_for("the reload", || d.log().contains("configuration reloaded"));
    c.allocate(Allocate::new("c")).await.unwrap();
    let log = d.log();
    let expected = match mcsd::context::selinux_mode() {
        mcsd::context::SelinuxMode::Disabled => 1,
        _ => 0,
    };
    assert_eq!(log.matches(SAID).count(), expected, "{log}");
}
