//! Durability at the system-call level: mcsd runs under `strace`, and every
//! reply it writes to a client must come after an `fsync`/`fdatasync` of
//! the store's log that finished after the log write holding that reply's
//! record. A `flush` that only calls `sync_file_range` (sled's own) fails
//! this: it neither empties the disk's cache nor commits the file's size,
//! so a power cut could lose what was acknowledged.
//!
//! The power-cut test itself (a VM whose qemu is SIGKILLed mid-storm) is
//! `tests/power-cut/run`.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mcs_client::{Allocate, Client};

/// What one traced line is, as far as this test cares.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    /// Bytes written to the store's log.
    LogWrite,
    /// An fsync or fdatasync of the store's log returned 0.
    LogSynced,
    /// Bytes written to a socket.
    SocketWrite,
    /// Anything else.
    Other,
}

/// A syscall line of `strace -f -y`, or the resumed half of one.
struct Line<'a> {
    pid: &'a str,
    syscall: &'a str,
    /// The first argument with strace's `-y` path decoration, e.g.
    /// `7</tmp/x/state/db/db>`; empty for a resumed half.
    fd: &'a str,
    resumed: bool,
    unfinished: bool,
    ok: bool,
}

fn parse(line: &str) -> Option<Line<'_>> {
    let (pid, rest) = line.split_once(' ')?;
    let rest = rest.trim_start();
    if let Some(r) = rest.strip_prefix("<... ") {
        let syscall = r.split(' ').next()?;
        return Some(Line {
            pid,
            syscall,
            fd: "",
            resumed: true,
            unfinished: false,
            ok: r.trim_end().ends_with("= 0") || returned_positive(r),
        });
    }
    let (syscall, args) = rest.split_once('(')?;
    let fd = args.split([',', ')', ' ']).next().unwrap_or("");
    Some(Line {
        pid,
        syscall,
        fd,
        resumed: false,
        unfinished: rest.trim_end().ends_with("<unfinished ...>"),
        ok: rest.trim_end().ends_with("= 0") || returned_positive(rest),
    })
}

fn returned_positive(s: &str) -> bool {
    s.rsplit_once(" = ")
        .and_then(|(_, r)| r.split(' ').next()?.parse::<i64>().ok())
        .is_some_and(|n| n > 0)
}

fn is_log(fd: &str) -> bool {
    fd.ends_with("/state/db/db>")
}

fn is_socket(fd: &str) -> bool {
    fd.contains("<UNIX") || fd.contains("<socket:")
}

/// Classifies every line; a syscall split by another thread's line counts
/// where it finished (a sync) or where it started (a write).
fn events(trace: &str) -> Vec<(Event, &str)> {
    let mut pending: HashMap<&str, (&str, &str)> = HashMap::new();
    let mut out = Vec::new();
    for raw in trace.lines() {
        let Some(line) = parse(raw) else {
            out.push((Event::Other, raw));
            continue;
        };
        let (syscall, fd) = if line.resumed {
            match pending.remove(line.pid) {
                Some((s, fd)) if s == line.syscall => (s, fd),
                _ => ("", ""),
            }
        } else {
            if line.unfinished {
                pending.insert(line.pid, (line.syscall, line.fd));
            }
            (line.syscall, line.fd)
        };
        let write = matches!(
            syscall,
            "write" | "writev" | "pwrite64" | "pwritev" | "pwritev2" | "sendmsg" | "sendto"
        );
        let sync = matches!(syscall, "fsync" | "fdatasync");
        let event = if write && !line.resumed && is_log(fd) {
            Event::LogWrite
        } else if write && !line.resumed && is_socket(fd) {
            Event::SocketWrite
        } else if sync && is_log(fd) && line.ok && !line.unfinished {
            Event::LogSynced
        } else {
            Event::Other
        };
        out.push((event, raw));
    }
    out
}

/// For container `id`: the index of the socket write carrying its reply,
/// and whether a sync of the log finished between the last log write
/// holding its record and that reply.
fn check(events: &[(Event, &str)], id: &str) -> Result<(), String> {
    let reply = events
        .iter()
        .position(|(e, l)| *e == Event::SocketWrite && l.contains(id))
        .ok_or_else(|| format!("no reply carrying {id} was traced"))?;
    let written = events[..reply]
        .iter()
        .rposition(|(e, l)| *e == Event::LogWrite && l.contains(id))
        .ok_or_else(|| format!("the reply for {id} came before any log write holding it"))?;
    if events[written..reply]
        .iter()
        .any(|(e, _)| *e == Event::LogSynced)
    {
        Ok(())
    } else {
        let between: Vec<&str> = events[written..=reply]
            .iter()
            .filter(|(e, l)| *e != Event::Other || l.contains("sync"))
            .map(|(_, l)| &l[..l.len().min(160)])
            .collect();
        Err(format!(
            "{id} was acknowledged with no fsync/fdatasync of the log after its write:\n  {}",
            between.join("\n  ")
        ))
    }
}

fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

fn wait_for_socket(socket: &Path, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains("mcsd is serving")
        && std::os::unix::net::UnixStream::connect(socket).is_ok())
    {
        assert!(
            Instant::now() < deadline,
            "mcsd under strace did not serve within 30 s: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reply_follows_an_fsync_of_the_log_that_holds_it() {
    let strace = Command::new("strace").arg("-V").output();
    assert!(
        strace.is_ok_and(|o| o.status.success()),
        "strace is needed (./dev.sh deps installs it)"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mcsd.toml");
    std::fs::write(&config, common::CONFIG).unwrap();
    let socket = dir.path().join("mcsd.sock");
    let log = dir.path().join("mcsd.log");
    let trace = dir.path().join("trace.txt");
    let mut tracer = Command::new("strace")
        .args(["-f", "-qq", "-y", "-s", "65536", "-o"])
        .arg(&trace)
        .args([
            "-e",
            "trace=write,writev,pwrite64,pwritev,pwritev2,sendmsg,sendto,fsync,fdatasync,sync_file_range",
            "--",
            env!("CARGO_BIN_EXE_mcsd"),
            "--categories",
            "c0.c99",
            "--config",
        ])
        .arg(&config)
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn strace");
    wait_for_socket(&socket, &log);

    // One call at a time: each reply then acknowledges exactly one batch.
    let mut client = Client::connect(&socket).await.expect("connect");
    let ids: Vec<String> = (0..12).map(|k| format!("durable-{k:03}-zq")).collect();
    for id in &ids {
        client
            .allocate(Allocate::new(id.as_str()).owner("durability"))
            .await
            .expect("allocate");
    }
    for id in &ids[..4] {
        let released = client.release(id.as_str()).await.expect("release");
        assert!(released.released, "{id} was held");
    }
    drop(client);

    let daemon = children(tracer.id());
    assert_eq!(daemon.len(), 1, "strace runs exactly mcsd: {daemon:?}");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(daemon[0] as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while tracer.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "mcsd did not stop within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }

    let text = std::fs::read_to_string(&trace).unwrap();
    let events = events(&text);
    assert!(
        events.iter().any(|(e, _)| *e == Event::LogWrite),
        "no write to the store's log was traced; the trace starts:\n{}",
        &text[..text.len().min(2000)]
    );
    let failures: Vec<String> = ids
        .iter()
        .filter_map(|id| check(&events, id).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_checker_refuses_a_reply_without_a_sync_and_accepts_one_with() {
    let unsynced = "\
10 pwrite64(7</s/state/db/db>, \"a/x-1\\0\", 6, 0) = 6
11 sync_file_range(7</s/state/db/db>, 0, 6, SYNC_FILE_RANGE_WAIT_BEFORE) = 0
12 writev(9<UNIX-STREAM:[1->2]>, [{iov_base=\"x-1\", iov_len=3}], 1) = 3
";
    assert!(check(&events(unsynced), "x-1").is_err());
    let synced = "\
10 pwrite64(7</s/state/db/db>, \"a/x-1\\0\", 6, 0) = 6
11 fdatasync(7</s/state/db/db> <unfinished ...>
13 write(2</s/mcsd.log>, \"x-1\", 3) = 3
11 <... fdatasync resumed>) = 0
12 writev(9<UNIX-STREAM:[1->2]>, [{iov_base=\"x-1\", iov_len=3}], 1) = 3
";
    assert_eq!(check(&events(synced), "x-1"), Ok(()));
    // A sync that finished before the write does not cover it.
    let early = "\
11 fdatasync(7</s/state/db/db>) = 0
10 pwrite64(7</s/state/db/db>, \"a/x-1\\0\", 6, 0) = 6
12 writev(9<UNIX-STREAM:[1->2]>, [{iov_base=\"x-1\", iov_len=3}], 1) = 3
";
    assert!(check(&events(early), "x-1").is_err());
    // A failed sync does not count.
    let failed = "\
10 pwrite64(7</s/state/db/db>, \"a/x-1\\0\", 6, 0) = 6
11 fdatasync(7</s/state/db/db>) = -1 EIO (Input/output error)
12 writev(9<UNIX-STREAM:[1->2]>, [{iov_base=\"x-1\", iov_len=3}], 1) = 3
";
    assert!(check(&events(failed), "x-1").is_err());
}
