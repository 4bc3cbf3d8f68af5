//! Crash safety: many clients allocate and release while mcsd is killed with
//! SIGKILL at random moments, again and again. After every restart:
//! - every allocation acknowledged to a client is there, with its level;
//! - every release acknowledged is gone;
//! - no pair is held by two ids;
//! - free + held + reserved equals the range size, and held equals the
//!   number of distinct levels allocated.
//!
//! `MCSD_CRASH_KILLS` sets the number of kills (default 50, what CI runs;
//! the full run is 500: `MCSD_CRASH_KILLS=500 cargo nextest run -p mcsd
//! --test crash --no-capture`). Operations in flight at a kill may land
//! either way; the checker learns their outcome from the listing.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use common::TestDaemon;
use mcs_client::{proto, Allocate, Client};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Mutex;

const WORKERS: usize = 8;
const IDS_PER_WORKER: usize = 40;

/// What the checker knows of an id.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Known {
    /// Acknowledged: holds this level (or nothing).
    Held(Option<String>),
    /// A call was in flight when mcsd died.
    Unknown,
}

#[derive(Default)]
struct Totals {
    acked: u64,
    exhausted: u64,
    violations: Vec<String>,
}

async fn list_all(client: &mut Client) -> BTreeMap<String, String> {
    let mut stream = client
        .list(proto::ListRequest::default())
        .await
        .expect("list");
    let mut all = BTreeMap::new();
    while let Some(chunk) = stream.message().await.expect("list chunk") {
        for a in chunk.allocations {
            all.insert(a.container_id, a.level);
        }
    }
    all
}

/// One worker: random allocate/release on its own ids until a call fails
/// because mcsd is gone. Returns how many calls were acknowledged.
async fn work(
    socket: std::path::PathBuf,
    worker: usize,
    seed: u64,
    model: Arc<Mutex<HashMap<String, Known>>>,
) -> (u64, u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let Ok(mut client) = Client::connect(&socket).await else {
        return (0, 0);
    };
    let (mut acked, mut exhausted) = (0, 0);
    loop {
        let id = format!("w{worker}-{}", rng.random_range(0..IDS_PER_WORKER));
        let allocate = rng.random_bool(0.6);
        model.lock().await.insert(id.clone(), Known::Unknown);
        let outcome = if allocate {
            match client
                .allocate(Allocate::new(id.clone()).owner("crash"))
                .await
            {
                Ok(a) => Ok(Some(a.level)),
                Err(e) if e.code() == Some(tonic::Code::ResourceExhausted) => {
                    exhausted += 1;
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        } else {
            client.release(id.clone()).await.map(|_| None)
        };
        match outcome {
            Ok(held) => {
                acked += 1;
                model.lock().await.insert(id, Known::Held(held));
            }
            // mcsd died: the call's outcome is unknown (already marked).
            Err(_) => return (acked, exhausted),
        }
    }
}

fn check(
    kill: usize,
    listed: &BTreeMap<String, String>,
    stats: &proto::StatsResponse,
    model: &mut HashMap<String, Known>,
    totals: &mut Totals,
) {
    for (id, known) in model.iter_mut() {
        let found = listed.get(id).cloned();
        match known {
            Known::Held(expected) if *expected != found => totals.violations.push(format!(
                "after kill {kill}: {id} acknowledged as {expected:?} but the store has {found:?}"
            )),
            _ => *known = Known::Held(found),
        }
    }
    let mut holders: HashMap<&str, &str> = HashMap::new();
    for (id, level) in listed {
        if let Some(other) = holders.insert(level, id) {
            totals.violations.push(format!(
                "after kill {kill}: {level} held by both {other} and {id}"
            ));
        }
    }
    if stats.free + stats.held + stats.reserved != stats.total {
        totals.violations.push(format!(
            "after kill {kill}: free {} + held {} + reserved {} != total {}",
            stats.free, stats.held, stats.reserved, stats.total
        ));
    }
    if stats.held != holders.len() as u64 || stats.containers != listed.len() as u64 {
        totals.violations.push(format!(
            "after kill {kill}: stats say {} held / {} containers, the listing {} / {}",
            stats.held,
            stats.containers,
            holders.len(),
            listed.len()
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_changes_survive_random_sigkills() {
    let kills: usize = std::env::var("MCSD_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("MCSD_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("crash harness: {kills} kills, seed {seed} (MCSD_CRASH_SEED to replay)");
    let mut rng = StdRng::seed_from_u64(seed);
    // 8 workers x 40 ids = 320 ids on 190 pairs: exhaustion happens too.
    let mut d = TestDaemon::start("c0.c19");
    let model = Arc::new(Mutex::new(HashMap::new()));
    let mut totals = Totals::default();
    let started = std::time::Instant::now();

    for kill in 1..=kills {
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| tokio::spawn(work(d.socket.clone(), w, rng.random(), model.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..120))).await;
        d.kill();
        for w in workers {
            let (acked, exhausted) = w.await.expect("worker");
            totals.acked += acked;
            totals.exhausted += exhausted;
        }
        d.launch().expect("mcsd restarts after SIGKILL");
        let mut client = d.client().await;
        let listed = list_all(&mut client).await;
        let stats = client.stats().await.expect("stats");
        check(kill, &listed, &stats, &mut *model.lock().await, &mut totals);
    }

    println!(
        "crash harness: kills {kills}, acknowledged ops {} ({} of them RESOURCE_EXHAUSTED), \
         violations {}, {:.1} s",
        totals.acked,
        totals.exhausted,
        totals.violations.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        totals.acked > kills as u64,
        "the workers barely ran: {} ops",
        totals.acked
    );
    assert!(totals.violations.is_empty(), "{:#?}", totals.violations);
}
