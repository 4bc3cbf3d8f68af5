//! `mcsctl follow` end to end: a real mcsd, the real podman on this host
//! (`podman create` / `podman rm` work here, running does not), the real
//! follower binary. Needs root and podman; skipped without podman.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mcs_client::{Allocate, Client};
use mcsd::config::Config;
use mcsd::daemon::Daemon;

const IMAGE: &str = "localhost/mcsd-follow-test-bb";

fn podman(args: &[&str]) -> String {
    let out = Command::new("podman").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// An image without a registry: a root with a busybox in it, imported.
fn image(dir: &std::path::Path) {
    if Command::new("podman")
        .args(["image", "exists", IMAGE])
        .status()
        .unwrap()
        .success()
    {
        return;
    }
    let root = dir.join("root/bin");
    std::fs::create_dir_all(&root).unwrap();
    let busybox = which("busybox").unwrap_or_else(|| "/bin/sh".into());
    std::fs::copy(busybox, root.join("sh")).unwrap();
    let tar = dir.join("bb.tar");
    let ok = Command::new("tar")
        .arg("-C")
        .arg(dir.join("root"))
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(ok.success());
    podman(&["import", tar.to_str().unwrap(), IMAGE]);
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

async fn wait_released(c: &mut Client, id: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        match c.get(id).await {
            Err(e) if e.code() == Some(tonic::Code::NotFound) => return start.elapsed(),
            Ok(_) | Err(_) => {}
        }
        assert!(
            start.elapsed() < limit,
            "{id} not released within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_releases_within_seconds_and_a_container_that_exists_keeps_its_level() {
    if which("podman").is_none() {
        eprintln!("skipped: no podman");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    image(dir.path());
    let config = Config {
        range: "c0.c20".parse().unwrap(),
        // Old enough to judge after 2 s; the follower relies on the age
        // for containers being created.
        reconcile_min_age: Duration::from_secs(2),
        ..common::config(dir.path(), Default::default())
    };
    let daemon = Daemon::start(&config).await.unwrap();
    let mut c = Client::connect(&config.socket).await.unwrap();
    let create = || podman(&["create", IMAGE, "/bin/sh"]);
    let (kept, removed, gone_before, later) = (create(), create(), create(), create());
    for id in [&kept, &removed, &gone_before, &later] {
        c.allocate(Allocate::new(id.as_str()).owner("podman"))
            .await
            .unwrap();
    }
    // Removed while no follower ran: the follower's first reconcile
    // catches it up, once it is older than the minimum age.
    podman(&["rm", &gone_before]);
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let mut follower = Command::new(env!("CARGO_BIN_EXE_mcsctl"))
        .arg("--socket")
        .arg(&config.socket)
        .args(["follow", "--engine", "podman", "--interval", "60"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, log) = mpsc::channel::<String>();
    let stderr = follower.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            let _ = tx.send(line);
        }
    });
    let events_pid = |log: &mpsc::Receiver<String>| -> i32 {
        loop {
            let line = log
                .recv_timeout(Duration::from_secs(10))
                .expect("follower logs");
            if let Some(rest) = line.split("(pid ").nth(1) {
                return rest.split(')').next().unwrap().parse().unwrap();
            }
        }
    };
    let first_stream = events_pid(&log);
    wait_released(&mut c, &gone_before, Duration::from_secs(10)).await;

    // podman rm releases within seconds.
    let rm = Instant::now();
    podman(&["rm", &removed]);
    let took = wait_released(&mut c, &removed, Duration::from_secs(5)).await;
    eprintln!(
        "podman rm returned after {:?}; released {:?} after it returned",
        rm.elapsed() - took,
        took
    );

    // Released by the event: the next reconcile is a minute away.
    let by_event = format!("released {removed} (");
    let line = loop {
        let line = log
            .recv_timeout(Duration::from_secs(5))
            .expect("follower logs the release");
        if line.contains(&by_event) {
            break line;
        }
    };
    assert!(line.ends_with("removed by podman"), "{line}");
    // A container that exists (created, never removed) keeps its level.
    assert_eq!(c.get(&kept).await.unwrap().owner, "podman");

    // The events stream ends: the follower restarts it and reconciles, so
    // a removal while no stream ran is released too.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(first_stream).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    podman(&["rm", &later]);
    let second_stream = events_pid(&log);
    assert_ne!(first_stream, second_stream);
    wait_released(&mut c, &later, Duration::from_secs(10)).await;
    // That reconcile kept the container that still exists.
    assert_eq!(c.get(&kept).await.unwrap().owner, "podman");

    rustix::process::kill_process(
        rustix::process::Pid::from_raw(follower.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert!(follower.wait().unwrap().success());
    podman(&["rm", &kept]);
    drop(daemon);
}
