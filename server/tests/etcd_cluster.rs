//! Several hosts, one pool: mcsd instances sharing a real three-member etcd
//! cluster never hand out a pair twice, keep allocating while a member is
//! SIGKILLed, and lose nothing when a member or an mcsd dies.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::etcd::EtcdCluster;
use common::TestDaemon;
use mcs_client::{proto, Allocate, Client, ClientError};
use tokio_stream::StreamExt;
use tonic::Code;

fn start_on(cluster: &EtcdCluster, node: &str, categories: &str) -> TestDaemon {
    cluster.daemon(node, categories)
}

async fn list(c: &mut Client, node: &str) -> Vec<proto::Allocation> {
    let request = proto::ListRequest {
        node: node.into(),
        ..Default::default()
    };
    let mut stream = c.list(request).await.unwrap();
    let mut all = Vec::new();
    while let Some(chunk) = stream.next().await {
        all.extend(chunk.unwrap().allocations);
    }
    all
}

/// Errors a client retries: the store was briefly unreachable, or another
/// instance kept winning the race for the same records.
fn transient(e: &ClientError) -> bool {
    matches!(e.code(), Some(Code::Unavailable | Code::Aborted))
}

/// Allocates `id` until it succeeds, is refused for exhaustion (`None`), or
/// a bounded number of transient failures have passed.
async fn allocate(c: &mut Client, id: String) -> Option<proto::Allocation> {
    for _ in 0..200 {
        match c.allocate(Allocate::new(id.clone()).owner("test")).await {
            Ok(a) => return Some(a),
            Err(e) if e.code() == Some(Code::ResourceExhausted) => return None,
            Err(e) if transient(&e) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("allocate {id}: {e}"),
        }
    }
    panic!("allocate {id}: still failing after 200 attempts");
}

/// `clients` concurrent clients of `socket` allocating fresh ids until the
/// range is exhausted; what each got.
async fn allocate_until_exhausted(
    socket: std::path::PathBuf,
    node: &'static str,
    clients: usize,
) -> Vec<proto::Allocation> {
    let tasks: Vec<_> = (0..clients)
        .map(|t| {
            let socket = socket.clone();
            tokio::spawn(async move {
                let mut c = Client::connect(&socket).await.unwrap();
                let mut got = Vec::new();
                for i in 0.. {
                    match allocate(&mut c, format!("{node}-{t}-{i}")).await {
                        Some(a) => got.push(a),
                        None => break,
                    }
                }
                got
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_exhaust_a_shared_range_without_handing_out_a_pair_twice() {
    let cluster = EtcdCluster::start(3);
    let a = start_on(&cluster, "node-a", "c0.c9");
    let b = start_on(&cluster, "node-b", "c0.c9");
    let (got_a, got_b) = tokio::join!(
        allocate_until_exhausted(a.socket.clone(), "node-a", 8),
        allocate_until_exhausted(b.socket.clone(), "node-b", 8),
    );
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "both instances must have allocated: {} and {}",
        got_a.len(),
        got_b.len()
    );
    let mut levels = HashSet::new();
    for x in got_a.iter().chain(&got_b) {
        assert!(
            levels.insert(x.level.clone()),
            "{} handed out twice",
            x.level
        );
    }
    assert_eq!(levels.len(), 45, "the union must be the whole range");

    // Each allocation names its node, and either instance lists them all.
    let mut ca = a.client().await;
    let mut cb = b.client().await;
    let by_a: HashSet<String> = got_a.iter().map(|x| x.container_id.clone()).collect();
    let listed: HashSet<String> = list(&mut cb, "node-a")
        .await
        .into_iter()
        .map(|x| x.container_id)
        .collect();
    assert_eq!(listed, by_a);
    assert_eq!(list(&mut ca, "").await.len(), 45);
    assert!(got_b.iter().all(|x| x.node == "node-b"));

    // Both pools agree with the store once the change feeds caught up.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (sa, sb) = (ca.stats().await.unwrap(), cb.stats().await.unwrap());
        if (sa.held, sa.free, sa.containers) == (45, 0, 45)
            && (sb.held, sb.free, sb.containers) == (45, 0, 45)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stats never converged: {sa:?} {sb:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A release on one host frees the pair for the other at once, even
    // before the other's watch has reported it: picking a random pair and
    // asking for that very pair.
    let freed = got_a[0].clone();
    assert!(cb.release(freed.container_id).await.unwrap().level_freed);
    let again = allocate(&mut ca, "after-release".into()).await.unwrap();
    assert_eq!(again.level, freed.level);
    let freed = got_a[1].clone();
    assert!(cb.release(freed.container_id).await.unwrap().level_freed);
    let asked = ca
        .allocate(Allocate::new("asked-for").level(&freed.level))
        .await
        .unwrap();
    assert_eq!(asked.level, freed.level);
    // And with nothing released, the range is exhausted for both.
    for c in [&mut ca, &mut cb] {
        let err = c.allocate(Allocate::new("one-too-many")).await.unwrap_err();
        assert_eq!(err.code(), Some(Code::ResourceExhausted), "{err}");
    }
}

/// The member that leads the cluster now.
async fn leader(cluster: &EtcdCluster, size: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for i in 0..size {
            let Ok(mut c) = etcd_client::Client::connect([cluster.endpoint(i)], None).await else {
                continue;
            };
            if let Ok(status) = c.status().await {
                let me = status.header().map(|h| h.member_id());
                if Some(status.leader()) == me {
                    return i;
                }
            }
        }
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Keys under `prefix` that one member alone answers for.
async fn count_on_member(endpoint: String, prefix: &str) -> i64 {
    let mut c = etcd_client::Client::connect([endpoint], None)
        .await
        .unwrap();
    let options = etcd_client::GetOptions::new()
        .with_prefix()
        .with_count_only();
    c.get(prefix, Some(options)).await.unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_go_on_while_the_etcd_leader_is_killed_and_nothing_is_lost() {
    let mut cluster = EtcdCluster::start(3);
    let mut d = start_on(&cluster, "node-a", "c0.c1023");
    let acked = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let socket = d.socket.clone();
            let acked = acked.clone();
            tokio::spawn(async move {
                let mut c = Client::connect(&socket).await.unwrap();
                let mut got = Vec::new();
                for i in 0..60 {
                    let a = allocate(&mut c, format!("t{t}-{i}")).await.expect("room");
                    acked.fetch_add(1, Ordering::SeqCst);
                    got.push((a.container_id, a.level));
                }
                got
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::SeqCst) < 120 {
        assert!(Instant::now() < deadline, "allocations did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let victim = leader(&cluster, 3).await;
    cluster.kill(victim);
    let at_kill = acked.load(Ordering::SeqCst);
    let mut got = HashMap::new();
    for t in tasks {
        got.extend(t.await.unwrap());
    }
    assert_eq!(got.len(), 480);
    assert!(at_kill < 480, "the kill came after the last allocation");

    // Restarted, the member catches up: it answers for every allocation.
    cluster.restart(victim);
    assert_eq!(
        count_on_member(cluster.endpoint(victim), "/shared/a/").await,
        480
    );

    // mcsd lists every acknowledged allocation, each on its own pair, before
    // and after its own restart.
    for round in 0..2 {
        let mut c = d.client().await;
        let listed = list(&mut c, "").await;
        assert_eq!(listed.len(), 480, "round {round}");
        let mut levels = HashSet::new();
        for x in &listed {
            assert_eq!(got[&x.container_id], x.level, "round {round}");
            assert!(levels.insert(x.level.clone()));
        }
        assert_eq!(c.stats().await.unwrap().held, 480);
        d.crash_and_restart();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcsd_killed_mid_run_finds_every_acknowledged_allocation_after_restart() {
    let cluster = EtcdCluster::start(3);
    let mut d = start_on(&cluster, "node-a", "c0.c1023");
    let acked = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let socket = d.socket.clone();
            let acked = acked.clone();
            tokio::spawn(async move {
                let mut c = Client::connect(&socket).await.unwrap();
                let mut got = Vec::new();
                for i in 0..1000 {
                    // The first failure is the kill: stop there.
                    match c.allocate(Allocate::new(format!("t{t}-{i}"))).await {
                        Ok(a) => {
                            acked.fetch_add(1, Ordering::SeqCst);
                            got.push((a.container_id, a.level));
                        }
                        Err(_) => break,
                    }
                }
                got
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::SeqCst) < 300 {
        assert!(Instant::now() < deadline, "allocations did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    d.kill();
    let mut got = HashMap::new();
    for t in tasks {
        got.extend(t.await.unwrap());
    }
    assert!(got.len() >= 300 && got.len() < 16_000, "{}", got.len());

    d.launch().expect("mcsd restarts");
    let mut c = d.client().await;
    let listed: HashMap<String, String> = list(&mut c, "")
        .await
        .into_iter()
        .map(|x| (x.container_id, x.level))
        .collect();
    for (id, level) in &got {
        assert_eq!(listed.get(id), Some(level), "{id} lost or changed");
    }
    // Requests in flight at the kill either landed whole or not at all.
    let levels: HashSet<&String> = listed.values().collect();
    assert_eq!(levels.len(), listed.len(), "a pair is held twice");
    let s = c.stats().await.unwrap();
    assert_eq!(
        (s.held, s.containers),
        (listed.len() as u64, listed.len() as u64)
    );
}

/// Reconcile frees only what this host allocated: another node's
/// containers are not in this host's keep list (the engine here cannot see
/// them), so a reconcile that judged them would free pairs whose
/// containers still run, and whose volumes still carry them, elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_on_one_node_leaves_the_other_nodes_allocations_alone() {
    let cluster = EtcdCluster::start(1);
    let a = start_on(&cluster, "node-a", "c0.c9");
    let b = start_on(&cluster, "node-b", "c0.c9");
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    for id in ["a1", "a2"] {
        ca.allocate(Allocate::new(id).owner("podman"))
            .await
            .unwrap();
    }
    for id in ["b1", "b2"] {
        cb.allocate(Allocate::new(id).owner("podman"))
            .await
            .unwrap();
    }

    // Node B's engine still runs b1 only.
    let r = cb
        .reconcile_with_min_age("podman", vec!["b1".into()], false, Some(0))
        .await
        .unwrap();
    let released: Vec<&str> = r.released.iter().map(|a| a.container_id.as_str()).collect();
    assert_eq!(released, ["b2"], "{r:?}");
    assert_eq!(r.kept, 1, "{r:?}");
    for id in ["a1", "a2", "b1"] {
        let got = ca
            .get(id)
            .await
            .unwrap_or_else(|e| panic!("{id} was freed: {e}"));
        assert_eq!(
            got.node,
            if id.starts_with('a') {
                "node-a"
            } else {
                "node-b"
            }
        );
    }
    assert!(ca.get("b2").await.is_err(), "b2 is released for every node");
    assert_eq!(
        list(&mut cb, "node-a").await.len(),
        2,
        "node A's allocations"
    );

    // And the other way round, node A keeping nothing.
    let r = ca
        .reconcile_with_min_age("podman", vec![], false, Some(0))
        .await
        .unwrap();
    let mut released: Vec<&str> = r.released.iter().map(|a| a.container_id.as_str()).collect();
    released.sort_unstable();
    assert_eq!(released, ["a1", "a2"], "{r:?}");
    assert!(cb.get("b1").await.is_ok(), "node B's b1 is still held");
}

/// The in-use scan at start frees the holds of processes that are gone,
/// but only this host's: a hold made by another node names a process of
/// that node, which this host's `/proc` cannot show, so freeing it would
/// hand out a pair a container elsewhere still runs at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_use_scan_of_one_node_keeps_the_other_nodes_holds() {
    let cluster = EtcdCluster::start(1);
    let temp = tempfile::tempdir().unwrap();
    // Node A runs a process at s0:c5,c6; node B runs nothing labeled.
    let start = |node: &str, process: Option<&str>| {
        let dir = temp.path().join(node);
        let proc_root = dir.join("proc");
        std::fs::create_dir_all(&proc_root).unwrap();
        if let Some(context) = process {
            common::fake_process(&proc_root, 4242, context);
        }
        let config = common::config_scanning(&proc_root);
        let store = common::etcd::store_config(&cluster.endpoints(), "/shared/");
        std::fs::write(dir.join("mcsd.toml"), format!("{config}{store}")).unwrap();
        let mut d = TestDaemon::in_dir(&dir, &["--categories", "c0.c9", "--node-name", node]);
        d.launch().expect("mcsd starts");
        d
    };
    let a = start("node-a", Some("system_u:system_r:container_t:s0:c5,c6"));
    let mut ca = a.client().await;
    let held = ca.get("pid:4242").await.unwrap();
    assert_eq!(
        (held.level.as_str(), held.node.as_str()),
        ("s0:c5,c6", "node-a")
    );

    // B's start finds no process at s0:c5,c6 on its host, and must not
    // take that as A's process being gone.
    let b = start("node-b", None);
    let mut cb = b.client().await;
    let still = cb
        .get("pid:4242")
        .await
        .expect("node A's hold survives node B's start");
    assert_eq!(still.level, "s0:c5,c6");
    let err = cb
        .allocate(Allocate::new("x").level("s0:c5,c6"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::AlreadyExists), "{err}");
}
