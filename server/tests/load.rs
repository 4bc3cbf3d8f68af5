//! Bounded load: 256 concurrent clients for 10 s (`MCSD_LOAD_SECONDS`, 60
//! for the full run) with a mix of allocate, get, list, release and stats
//! over the real socket. Reports ops/s, p99 latency, errors, and mcsd's RSS
//! at start and end; fails on any error or on RSS growth beyond a bound.
//! For release-build figures: `cargo nextest run --release -p mcsd --test
//! load --no-capture`.

mod common;

use std::time::{Duration, Instant};

use common::TestDaemon;
use mcs_client::{proto, Allocate, Client};

const CLIENTS: usize = 256;

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .expect("VmRSS")
        / 1024.0
}

#[derive(Default)]
struct Tally {
    ops: u64,
    latencies: Vec<Duration>,
    errors: Vec<String>,
}

async fn client_loop(socket: std::path::PathBuf, n: usize, until: Instant) -> Tally {
    let mut t = Tally::default();
    let mut client = match Client::connect(&socket).await {
        Ok(c) => c,
        Err(e) => {
            t.errors.push(format!("client {n}: {e}"));
            return t;
        }
    };
    let mut k = 0u64;
    while Instant::now() < until {
        let id = format!("load-{n}-{k}");
        k += 1;
        let mut timed = |began: Instant, r: Result<(), String>| {
            t.ops += 1;
            t.latencies.push(began.elapsed());
            if let Err(e) = r {
                t.errors.push(e);
            }
        };
        let began = Instant::now();
        let r = client
            .allocate(Allocate::new(id.clone()).owner("load"))
            .await;
        timed(began, r.map(drop).map_err(|e| format!("allocate: {e}")));
        let began = Instant::now();
        let r = client.get(id.clone()).await;
        timed(began, r.map(drop).map_err(|e| format!("get: {e}")));
        if k % 8 == 0 {
            let began = Instant::now();
            let r = async {
                let request = proto::ListRequest {
                    owner: "load".into(),
                    limit: 50,
                    ..Default::default()
                };
                let mut s = client.list(request).await?;
                while s.message().await?.is_some() {}
                Ok::<_, Box<dyn std::error::Error>>(())
            }
            .await;
            timed(began, r.map_err(|e| format!("list: {e}")));
            let began = Instant::now();
            let r = client.stats().await;
            timed(began, r.map(drop).map_err(|e| format!("stats: {e}")));
        }
        let began = Instant::now();
        let r = client.release(id).await;
        timed(began, r.map(drop).map_err(|e| format!("release: {e}")));
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_fifty_six_clients_mixed_calls_without_errors() {
    let seconds: u64 = std::env::var("MCSD_LOAD_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let d = TestDaemon::start("c0.c1023");
    let pid = d.pid();
    let rss_start = rss_mb(pid);
    let began = Instant::now();
    let until = began + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|n| tokio::spawn(client_loop(d.socket.clone(), n, until)))
        .collect();
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await.expect("client task");
        all.ops += t.ops;
        all.latencies.extend(t.latencies);
        all.errors.extend(t.errors);
    }
    let elapsed = began.elapsed();
    let rss_end = rss_mb(pid);
    all.latencies.sort_unstable();
    let p = |q: f64| {
        all.latencies[((all.latencies.len() as f64 * q) as usize).min(all.latencies.len() - 1)]
    };
    println!(
        "load: {CLIENTS} clients, {:.1} s, {} ops, {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, errors {}, RSS {:.1} MB -> {:.1} MB",
        elapsed.as_secs_f64(),
        all.ops,
        all.ops as f64 / elapsed.as_secs_f64(),
        p(0.50).as_secs_f64() * 1e3,
        p(0.99).as_secs_f64() * 1e3,
        all.errors.len(),
        rss_start,
        rss_end
    );
    assert!(
        all.errors.is_empty(),
        "{} errors, first: {:?}",
        all.errors.len(),
        &all.errors[..all.errors.len().min(5)]
    );
    assert!(
        all.ops > CLIENTS as u64,
        "the load barely ran: {} ops",
        all.ops
    );
    // Every container was released again: nothing may be left over.
    let stats = d.client().await.stats().await.unwrap();
    assert_eq!((stats.held, stats.containers), (0, 0));
    // Bounded memory: connections, batches and caches, not per-op growth.
    assert!(
        rss_end < (rss_start * 3.0).max(rss_start + 96.0),
        "RSS grew from {rss_start:.1} MB to {rss_end:.1} MB"
    );
}
