//! Durability and start-up: state survives graceful and abrupt restarts, and
//! a store mcsd cannot trust makes it refuse to start, naming the path.

mod common;

use std::collections::{HashMap, HashSet};

use common::etcd::Backend;
use common::{code, TestDaemon};
use mcs_client::{proto, Allocate, Client};
use tokio_stream::StreamExt;
use tonic::Code;

async fn snapshot(c: &mut Client) -> HashMap<String, proto::Allocation> {
    let mut stream = c.list(Default::default()).await.unwrap();
    let mut all = HashMap::new();
    while let Some(chunk) = stream.next().await {
        for a in chunk.unwrap().allocations {
            all.insert(a.container_id.clone(), a);
        }
    }
    all
}

/// The two category numbers of a level `s0:cX,cY`.
fn categories(level: &str) -> [u32; 2] {
    let pair = level.strip_prefix("s0:").expect("a level s0:cX,cY");
    let (x, y) = pair.split_once(',').expect("a level s0:cX,cY");
    let number = |c: &str| {
        c.strip_prefix('c')
            .and_then(|n| n.parse().ok())
            .expect("a category cN")
    };
    [number(x), number(y)]
}

async fn every_allocation_group_and_reservation_survives_restarts(backend: Backend) {
    let mut d = backend.start("c0.c99");
    let mut c = d.client().await;
    for i in 0..200 {
        c.allocate(Allocate::new(format!("c{i}")).owner("podman"))
            .await
            .unwrap();
    }
    let mut pod = String::new();
    for i in 0..5 {
        pod = c
            .allocate(Allocate::new(format!("m{i}")).group("pod"))
            .await
            .unwrap()
            .level;
    }
    // The reserved category must not be one of the group's (a random
    // draw): releasing the group would then leave its pair reserved instead
    // of freeing it. The highest category the group does not use.
    let reserved = (0..=99u32)
        .rev()
        .find(|n| !categories(&pod).contains(n))
        .unwrap();
    c.reserve(format!("c{reserved}")).await.unwrap();
    for i in (0..200).step_by(10) {
        c.release(format!("c{i}")).await.unwrap();
    }
    let before = snapshot(&mut c).await;
    let stats_before = c.stats().await.unwrap();
    assert_eq!(before.len(), 185);

    // Graceful stop, then an abrupt one.
    assert!(d.terminate().success(), "{}", d.log());
    d.launch().unwrap();
    let mut c = d.client().await;
    assert_eq!(snapshot(&mut c).await, before);
    d.crash_and_restart();
    let mut c = d.client().await;
    assert_eq!(snapshot(&mut c).await, before);
    assert_eq!(c.stats().await.unwrap(), stats_before);

    // The group's refcount survived: it takes five releases to free it.
    for i in 0..4 {
        assert!(!c.release(format!("m{i}")).await.unwrap().level_freed);
    }
    assert!(c.release("m4").await.unwrap().level_freed);

    // New allocations never collide with the ones that survived.
    let held: HashSet<String> = snapshot(&mut c)
        .await
        .values()
        .map(|a| a.level.clone())
        .collect();
    for i in 0..100 {
        let a = c.allocate(Allocate::new(format!("new{i}"))).await.unwrap();
        assert!(!held.contains(&a.level), "{} handed out twice", a.level);
        assert!(
            !categories(&a.level).contains(&reserved),
            "{}: reserved category c{reserved} handed out",
            a.level
        );
    }
}

async fn acknowledged_allocations_survive_sigkill(backend: Backend) {
    let mut d = backend.start("c0.c1023");
    let socket = d.socket.clone();
    // 32 concurrent clients; SIGKILL right after the last acknowledgement.
    let mut tasks = Vec::new();
    for t in 0..32 {
        let socket = socket.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(&socket).await.unwrap();
            let mut acked = Vec::new();
            for i in 0..25 {
                let a = c
                    .allocate(Allocate::new(format!("t{t}-{i}")))
                    .await
                    .unwrap();
                acked.push((a.container_id, a.level));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    d.crash_and_restart();
    let mut c = d.client().await;
    let after = snapshot(&mut c).await;
    assert_eq!(after.len(), acked.len());
    for (id, level) in acked {
        assert_eq!(after[&id].level, level, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_when_held_pairs_fall_outside_a_narrowed_range() {
    let mut d = TestDaemon::start("c0.c1023");
    let mut c = d.client().await;
    c.allocate(Allocate::new("far").level("s0:c100,c200"))
        .await
        .unwrap();
    c.allocate(Allocate::new("near").level("s0:c1,c2"))
        .await
        .unwrap();
    d.terminate();
    d.set_args(&["--categories", "c0.c9"]);
    let err = d.launch().unwrap_err();
    assert!(err.contains("1 held pair(s)"), "{err}");
    assert!(err.contains("s0:c100,c200"), "{err}");
    assert!(
        err.contains("outside the configured category range c0.c9"),
        "{err}"
    );
    // Nothing was lost: the old range still works.
    d.set_args(&["--categories", "c0.c1023"]);
    d.launch().unwrap();
    let mut c = d.client().await;
    assert_eq!(c.get("far").await.unwrap().level, "s0:c100,c200");
}

/// Opens the stopped daemon's store directly, to damage it on purpose.
fn with_raw_store(d: &TestDaemon, f: impl FnOnce(&sled::Db)) {
    let db = sled::open(d.state.join("db")).unwrap();
    f(&db);
    db.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_store_with_an_unknown_format_version_and_changes_nothing() {
    let mut d = TestDaemon::start("c0.c9");
    d.client()
        .await
        .allocate(Allocate::new("keep"))
        .await
        .unwrap();
    d.terminate();
    with_raw_store(&d, |db| {
        db.insert("meta/format", &2u32.to_be_bytes()).unwrap();
    });
    let err = d.launch().unwrap_err();
    assert!(err.contains("format version 2"), "{err}");
    assert!(
        err.contains(&d.state.join("db").display().to_string()),
        "{err}"
    );
    with_raw_store(&d, |db| {
        assert_eq!(
            db.get("meta/format").unwrap().unwrap().as_ref(),
            2u32.to_be_bytes()
        );
        assert!(db.get("a/keep").unwrap().is_some(), "state was reset");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_store_with_damaged_or_inconsistent_records() {
    /// The error the daemon must print, and how to damage the store.
    type Case = (&'static str, fn(&sled::Db));
    let cases: [Case; 4] = [
        ("record a/keep", |db| {
            db.insert("a/keep", &b"\xff\xff garbage"[..]).unwrap();
        }),
        ("no allocation or group holds it", |db| {
            db.insert("p/\x00\x03\x00\x04", proto_holder("ghost"))
                .unwrap();
        }),
        ("pair record does not name it", |db| {
            let keys: Vec<_> = db.scan_prefix("p/").keys().map(|k| k.unwrap()).collect();
            db.remove(&keys[0]).unwrap();
        }),
        ("unexpected key", |db| {
            db.insert("zzz", &b"x"[..]).unwrap();
        }),
    ];
    for (expected, damage) in cases {
        let mut d = TestDaemon::start("c0.c9");
        // A pinned level, so the injected pair s0:c3,c4 is never this one.
        let keep = Allocate::new("keep").level("s0:c1,c2");
        d.client().await.allocate(keep).await.unwrap();
        d.terminate();
        with_raw_store(&d, damage);
        let err = d.launch().unwrap_err();
        assert!(err.contains("is corrupt"), "{expected}: {err}");
        assert!(err.contains(expected), "{expected}: {err}");
        assert!(err.contains("never resets state"), "{err}");
    }
}

fn proto_holder(name: &str) -> Vec<u8> {
    // kind = 1 (container), name: the same encoding mcsd writes.
    let mut v = vec![0x08, 0x01, 0x12, name.len() as u8];
    v.extend_from_slice(name.as_bytes());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_socket_or_state_is_refused() {
    let d = TestDaemon::start("c0.c9");
    // Same socket, different state: the live socket is not stolen.
    let other = tempfile::tempdir().unwrap();
    let mut second = TestDaemon::in_dir(other.path(), &[]);
    second.socket = d.socket.clone();
    let err = second.launch().unwrap_err();
    assert!(err.contains("is in use"), "{err}");
    // Same state, different socket: the store's lock refuses it.
    let mut third = TestDaemon::in_dir(other.path(), &[]);
    third.state = d.state.clone();
    let err = third.launch().unwrap_err();
    assert!(err.contains("in use by another process"), "{err}");
    // The first one is unharmed.
    let mut c = d.client().await;
    c.allocate(Allocate::new("still-works")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_removes_the_socket_and_a_stale_socket_is_replaced() {
    let mut d = TestDaemon::start("c0.c9");
    let mode = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o660
    );
    assert!(d.terminate().success(), "{}", d.log());
    assert!(!d.socket.exists(), "socket left behind");
    assert!(d.log().contains("mcsd stopped"));

    // A crash leaves the socket file behind; the next start replaces it.
    d.launch().unwrap();
    d.kill();
    assert!(d.socket.exists());
    d.launch().unwrap();
    assert_eq!(code(d.client().await.get("nobody").await), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_answering_does_not_block_shutdown() {
    let mut d = TestDaemon::start("c0.c9");
    // A client whose runtime is never polled again once it has connected:
    // it cannot answer the server's GOAWAY/PING, like a hung runtime.
    let socket = d.socket.clone();
    let (connected, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(async {
            let mut c = Client::connect(&socket).await.unwrap();
            c.stats().await.unwrap();
            c
        });
        connected.send(()).unwrap();
        std::thread::sleep(std::time::Duration::from_secs(60));
        drop(client);
    });
    wait.recv().unwrap();
    let started = std::time::Instant::now();
    let status = d.terminate();
    let took = started.elapsed();
    assert!(status.success(), "{}", d.log());
    assert!(
        took < mcsd::daemon::SHUTDOWN_GRACE + std::time::Duration::from_secs(5),
        "shutdown took {took:?}"
    );
    assert!(d.log().contains("closing them"), "{}", d.log());
}

both_backends!(
    every_allocation_group_and_reservation_survives_restarts,
    acknowledged_allocations_survive_sigkill,
);
