//! Prometheus metrics, served as text on an optional listener (off by
//! default; loopback TCP or a Unix socket, see `[metrics] listen`, bound
//! with the main socket's safety: see [`crate::socket`]).
//!
//! Counters and histograms live in one [`Metrics`], which the daemon
//! creates and hands to each layer that records an event; the pair gauges
//! are read at each scrape through [`Gauges`], so they are never
//! stale. The module depends on nothing it measures.
//!
//! Every label value is drawn from a bounded set, since the values come
//! from clients: a method label is one of the methods mcsd serves (else
//! `unknown`; the path is measured before authorization, so anyone who can
//! connect chooses it), and an owner label is one of the first
//! [`MAX_OWNERS`] owners seen (then `other`). Without that, any member of
//! the socket's group could grow the scrape, and mcsd's memory, without
//! end.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

mod endpoint;
pub use endpoint::{serve, Gauges, HEAD_TIMEOUT};

/// How many distinct owners get their own series; later ones are counted
/// as `other`. Hosts run a handful of runtimes, each one owner.
pub const MAX_OWNERS: usize = 32;

/// The owner label of the calls beyond [`MAX_OWNERS`].
pub const OTHER_OWNER: &str = "other";

/// The method label of any path mcsd does not serve.
pub const UNKNOWN_METHOD: &str = "unknown";

/// The methods of `mcs.v1.Labels`, the values the method label takes for
/// its calls (kept equal to the proto by a test).
const LABELS_METHODS: &[&str] = &[
    "Allocate",
    "Release",
    "Get",
    "List",
    "Reserve",
    "Unreserve",
    "ListReservations",
    "Stats",
    "Reconcile",
    "Relabel",
    "Status",
];

/// The method label for a request `path` (`/package.Service/Method`):
/// the method's name for the services mcsd serves, [`UNKNOWN_METHOD`] for
/// anything else.
pub fn method_label(path: &str) -> &'static str {
    let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return UNKNOWN_METHOD;
    };
    let known: &[&'static str] = match service {
        "mcs.v1.Labels" => LABELS_METHODS,
        "grpc.health.v1.Health" => &["Check", "Watch"],
        "grpc.reflection.v1.ServerReflection" => &["ServerReflectionInfo"],
        _ => &[],
    };
    known
        .iter()
        .find(|k| **k == method)
        .copied()
        .unwrap_or(UNKNOWN_METHOD)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OwnerResult {
    owner: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Method {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PairState {
    state: String,
}

/// Every metric mcsd exports.
pub struct Metrics {
    registry: Registry,
    allocations: Family<OwnerResult, Counter>,
    releases: Family<OwnerResult, Counter>,
    requests: Family<Method, Histogram>,
    relabel_entries: Family<Outcome, Counter>,
    store_flush: Histogram,
    pairs: Family<PairState, Gauge>,
    /// The owners that have their own series (at most [`MAX_OWNERS`]).
    owners: Mutex<HashSet<String>>,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~3 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every series at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mcsd");
        let allocations = Family::<OwnerResult, Counter>::default();
        registry.register(
            "allocations",
            "Allocate calls by owner and result",
            allocations.clone(),
        );
        let releases = Family::<OwnerResult, Counter>::default();
        registry.register(
            "releases",
            "Release calls by owner and result",
            releases.clone(),
        );
        let requests = Family::<Method, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "request_duration_seconds",
            "gRPC call latency by method",
            requests.clone(),
        );
        let relabel_entries = Family::<Outcome, Counter>::default();
        registry.register(
            "relabel_entries",
            "Entries walked by relabels and restores: changed, unchanged, failed",
            relabel_entries.clone(),
        );
        let store_flush = latency_histogram();
        registry.register(
            "store_flush_duration_seconds",
            "Time to make one batch of changes durable",
            store_flush.clone(),
        );
        let pairs = Family::<PairState, Gauge>::default();
        registry.register(
            "pairs",
            "Pairs of the range: total, held, free, reserved",
            pairs.clone(),
        );
        Self {
            registry,
            allocations,
            releases,
            requests,
            relabel_entries,
            store_flush,
            pairs,
            owners: Mutex::default(),
        }
    }

    /// `owner` if it has (or may still get) its own series, else
    /// [`OTHER_OWNER`].
    fn owner_label(&self, owner: &str) -> String {
        let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        if owners.contains(owner) {
            return owner.to_owned();
        }
        if owners.len() < MAX_OWNERS {
            owners.insert(owner.to_owned());
            return owner.to_owned();
        }
        OTHER_OWNER.to_owned()
    }

    /// Counts an Allocate call (under `other` once [`MAX_OWNERS`] owners
    /// have their own series).
    pub fn allocation(&self, owner: &str, result: &str) {
        self.allocations
            .get_or_create(&OwnerResult {
                owner: self.owner_label(owner),
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts a Release call (owners bounded as for
    /// [`Metrics::allocation`]).
    pub fn release(&self, owner: &str, result: &str) {
        self.releases
            .get_or_create(&OwnerResult {
                owner: self.owner_label(owner),
                result: result.to_owned(),
            })
            .inc();
    }

    /// Records a call's latency; `method` comes from [`method_label`].
    pub fn request(&self, method: &'static str, took: Duration) {
        self.requests
            .get_or_create(&Method {
                method: method.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts walked entries.
    pub fn relabel(&self, changed: u64, unchanged: u64, failed: u64) {
        for (outcome, n) in [
            ("changed", changed),
            ("unchanged", unchanged),
            ("failed", failed),
        ] {
            self.relabel_entries
                .get_or_create(&Outcome {
                    outcome: outcome.to_owned(),
                })
                .inc_by(n);
        }
    }

    /// Records one store flush.
    pub fn store_flush(&self, took: Duration) {
        self.store_flush.observe(took.as_secs_f64());
    }

    /// The text exposition, with the pair gauges set to `pairs` (left as
    /// they were when the counts could not be read).
    pub fn render(&self, pairs: Option<Pairs>) -> String {
        if let Some(p) = pairs {
            for (state, n) in [
                ("total", p.total),
                ("held", p.held),
                ("free", p.free),
                ("reserved", p.reserved),
            ] {
                self.pairs
                    .get_or_create(&PairState {
                        state: state.to_owned(),
                    })
                    .set(n as i64);
            }
        }
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// The pool's counts at one scrape, read from whatever holds the pairs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pairs {
    /// Pairs in the range.
    pub total: u64,
    /// Pairs held by allocations.
    pub held: u64,
    /// Pairs free to hand out.
    pub free: u64,
    /// Pairs reserved.
    pub reserved: u64,
}

/// Where metrics are served (`[metrics] listen`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address; must be loopback.
    Tcp(std::net::SocketAddr),
    /// A Unix socket path.
    Unix(std::path::PathBuf),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "{a}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl std::str::FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            let path = std::path::PathBuf::from(path);
            if !path.is_absolute() {
                return Err(format!("{s:?}: the socket path must be absolute"));
            }
            return Ok(Self::Unix(path));
        }
        let addr: std::net::SocketAddr = s.parse().map_err(|_| {
            format!("{s:?} is neither HOST:PORT nor unix:/PATH (e.g. \"127.0.0.1:9464\")")
        })?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{addr} is not a loopback address; metrics are served on 127.0.0.1, ::1 or a Unix socket only"
            ));
        }
        Ok(Self::Tcp(addr))
    }
}

/// A tower layer body: records every gRPC call's latency (to its response
/// head; streams continue after) under its method name.
#[derive(Debug, Clone)]
pub struct Timed<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> Timed<S> {
    /// Wraps `inner`, recording into `metrics`.
    pub fn new(inner: S, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

impl<S, B> tower::Service<http::Request<B>> for Timed<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_label(request.uri().path());
        let started = std::time::Instant::now();
        let call = self.inner.call(request);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let response = call.await;
            metrics.request(method, started.elapsed());
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_known_methods_are_exactly_the_protos() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(mcs_proto::v1::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set decodes");
        let mut methods: Vec<String> = set
            .file
            .iter()
            .filter(|f| f.package() == "mcs.v1")
            .flat_map(|f| &f.service)
            .filter(|s| s.name() == "Labels")
            .flat_map(|s| &s.method)
            .map(|m| m.name().to_owned())
            .collect();
        methods.sort();
        let mut known: Vec<String> = LABELS_METHODS.iter().map(|m| m.to_string()).collect();
        known.sort();
        assert_eq!(methods, known);
    }

    #[test]
    fn method_labels_come_from_the_served_methods_only() {
        assert_eq!(method_label("/mcs.v1.Labels/Allocate"), "Allocate");
        assert_eq!(method_label("/grpc.health.v1.Health/Check"), "Check");
        for bogus in [
            "/mcs.v1.Labels/Allocate2",
            "/evil.Service/Allocate",
            "/x/Check",
            "/mcs.v1.Labels",
            "",
            "/",
            "Allocate",
        ] {
            assert_eq!(method_label(bogus), UNKNOWN_METHOD, "{bogus:?}");
        }
    }

    #[test]
    fn owners_beyond_the_first_ones_are_counted_as_other() {
        let m = Metrics::new();
        for i in 0..MAX_OWNERS * 3 {
            m.allocation(&format!("owner-{i}"), "ok");
            m.release(&format!("owner-{i}"), "ok");
        }
        assert_eq!(m.owner_label("owner-0"), "owner-0");
        assert_eq!(m.owner_label("owner-new"), OTHER_OWNER);
        let mut text = String::new();
        encode(&mut text, &m.registry).unwrap();
        let series = |name: &str| text.lines().filter(|l| l.starts_with(name)).count();
        assert_eq!(series("mcsd_allocations_total{"), MAX_OWNERS + 1, "{text}");
        assert_eq!(series("mcsd_releases_total{"), MAX_OWNERS + 1, "{text}");
        assert!(text.contains("owner=\"other\""), "{text}");
    }
}
