//! Allocation throughput and latency through etcd, next to sled, in one run.
//!
//! The same client loop drives an in-process mcsd over its real Unix socket,
//! first on sled (the baseline) and then on a one-member etcd started here
//! on loopback (Debian's `etcd`, data on the same disk as sled's, fsync on).
//! Each client allocates fresh container ids back to back; the figures are
//! allocations per second over the whole run and the p50/p99 latency of one
//! Allocate as the client sees it. Target: at least 2,000 allocations/s
//! through etcd with 64 clients on a 2-core machine.
//!
//! Run: `cargo bench -p mcsd --bench etcd` (`MCSD_BENCH_ETCD` to use another
//! etcd binary).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mcs_client::{Allocate, Client};
use mcsd::config::Config;
use mcsd::daemon::Daemon;
use mcsd::store::backend::{EtcdSettings, StoreSettings, DEFAULT_ETCD_TIMEOUT};

/// Allocations per client count; enough for a stable rate, bounded time.
const RUNS: [(usize, usize); 2] = [(1, 1_500), (64, 12_800)];
/// Allocations before measuring (connections, caches, etcd's first fsyncs).
const WARMUP: usize = 200;
const TARGET_PER_SEC: f64 = 2_000.0;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// One etcd member, killed when dropped.
struct Etcd {
    child: Child,
    endpoint: String,
}

impl Etcd {
    fn start(dir: &Path) -> Etcd {
        let binary = std::env::var_os("MCSD_BENCH_ETCD")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/usr/bin/etcd".into());
        let (client, peer, metrics) = (free_port(), free_port(), free_port());
        let endpoint = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.join("etcd.log")).expect("etcd log");
        let child = Command::new(&binary)
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.join("etcd"))
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("bench={peer_url}")])
            .args([
                "--listen-metrics-urls",
                &format!("http://127.0.0.1:{metrics}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !healthy(metrics) {
            assert!(Instant::now() < deadline, "etcd did not become healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
        Etcd { child, endpoint }
    }
}

fn healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    response.contains("\"health\":\"true\"")
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Figures {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

/// `clients` clients allocate `total` fresh ids between them.
async fn drive(socket: &Path, tag: &str, clients: usize, total: usize) -> Figures {
    let per_client = total / clients;
    let mut connected = Vec::new();
    for _ in 0..clients {
        connected.push(Client::connect(socket).await.expect("connect"));
    }
    let started = Instant::now();
    let tasks: Vec<_> = connected
        .into_iter()
        .enumerate()
        .map(|(t, mut c)| {
            let tag = tag.to_owned();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    let at = Instant::now();
                    c.allocate(Allocate::new(format!("{tag}-{t}-{i}")).owner("bench"))
                        .await
                        .expect("allocate");
                    latencies.push(at.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(total);
    for t in tasks {
        latencies.extend(t.await.expect("client task"));
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Figures {
        per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

/// Runs every client count against a fresh daemon on `store`.
async fn measure(dir: &Path, name: &str, store: StoreSettings) -> Vec<Figures> {
    // Built from the defaults, so fields added later need no change here.
    let mut config = Config {
        socket: dir.join(format!("{name}.sock")),
        state_dir: dir.join(format!("{name}-state")),
        range: "c0.c1023".parse().expect("range"),
        process_template: Some("system_u:system_r:container_t".parse().expect("template")),
        file_template: Some(
            "system_u:object_r:container_file_t"
                .parse()
                .expect("template"),
        ),
        host_contexts: vec![],
        node_name: "bench".into(),
        ..Config::default()
    };
    config.store = store;
    let daemon = Daemon::start(&config).await.expect("mcsd starts");
    drive(&config.socket, &format!("{name}-warm"), 8, WARMUP).await;
    let mut figures = Vec::new();
    for (clients, total) in RUNS {
        figures.push(drive(&config.socket, &format!("{name}-{clients}"), clients, total).await);
    }
    daemon.stop().await.expect("mcsd stops");
    figures
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Same disk for both stores: the target directory, not a tmpfs.
    let base = std::env::var_os("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base).expect("tempdir");
    let etcd = Etcd::start(dir.path());
    let etcd_store = StoreSettings::Etcd(EtcdSettings {
        endpoints: vec![etcd.endpoint.clone()],
        prefix: "/bench/".into(),
        tls: None,
        auth: None,
        timeout: DEFAULT_ETCD_TIMEOUT,
    });
    let (sled, through_etcd) = runtime.block_on(async {
        let sled = measure(dir.path(), "sled", StoreSettings::Sled).await;
        let through_etcd = measure(dir.path(), "etcd", etcd_store).await;
        (sled, through_etcd)
    });
    drop(etcd);

    println!("allocations through mcsd's socket, fresh ids, c0.c1023 (sled is the baseline)");
    println!(
        "{:<8} {:>7} {:>14} {:>8} {:>8} {:>10}",
        "store", "clients", "allocations/s", "p50 ms", "p99 ms", "vs sled"
    );
    for (i, (clients, _)) in RUNS.iter().enumerate() {
        for (name, f) in [("sled", &sled[i]), ("etcd", &through_etcd[i])] {
            println!(
                "{name:<8} {clients:>7} {:>14.0} {:>8} {:>8} {:>9.2}x",
                f.per_sec,
                ms(f.p50),
                ms(f.p99),
                f.per_sec / sled[i].per_sec
            );
        }
    }
    let at_64 = through_etcd[RUNS.len() - 1].per_sec;
    println!(
        "etcd at 64 clients: {at_64:.0} allocations/s, target {TARGET_PER_SEC:.0}: {}",
        if at_64 >= TARGET_PER_SEC {
            "met"
        } else {
            "NOT met"
        }
    );
}
