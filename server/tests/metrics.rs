//! Metrics safety over the real sockets: label values stay bounded
//! whatever paths and owners clients send, and the metrics Unix socket is
//! bound as safely as the main one.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use common::{TestDaemon, CONFIG};
use mcs_client::Allocate;

fn config(dir: &Path, metrics: &Path) {
    std::fs::write(
        dir.join("mcsd.toml"),
        format!(
            "{CONFIG}[metrics]\nlisten = \"unix:{}\"\n",
            metrics.display()
        ),
    )
    .unwrap();
}

fn scrape(socket: &Path) -> String {
    common::get_metrics(std::os::unix::net::UnixStream::connect(socket).unwrap())
}

fn series<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(name)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_values_stay_bounded_whatever_clients_send() {
    let temp = tempfile::tempdir().unwrap();
    let metrics = temp.path().join("metrics.sock");
    config(temp.path(), &metrics);
    let mut d = TestDaemon::in_dir(temp.path(), &["--categories", "c0.c1023"]);
    d.launch().unwrap();
    let mode = std::fs::metadata(&metrics).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "metrics socket mode {mode:o}");

    let mut c = d.client().await;
    // 300 paths nobody serves: each is refused (UNIMPLEMENTED), and each
    // used to become its own histogram.
    let mut grpc = tonic::client::Grpc::new(c.channel());
    for i in 0..300 {
        grpc.ready().await.unwrap();
        let path = format!("/bogus{i}.Service/Method{i}").parse().unwrap();
        let status = grpc
            .unary(
                tonic::Request::new(()),
                path,
                tonic_prost::ProstCodec::<(), ()>::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
    }
    // 100 distinct owners.
    for i in 0..100 {
        c.allocate(Allocate::new(format!("c-{i}")).owner(format!("owner-{i}")))
            .await
            .unwrap();
    }

    let text = scrape(&metrics);
    let methods = series(&text, "mcsd_request_duration_seconds_count{");
    assert!(
        methods.len() <= 15,
        "{} method series:\n{text}",
        methods.len()
    );
    assert!(
        methods.contains(&"mcsd_request_duration_seconds_count{method=\"unknown\"} 300"),
        "{text}"
    );
    assert!(
        methods.contains(&"mcsd_request_duration_seconds_count{method=\"Allocate\"} 100"),
        "{text}"
    );
    let owners = series(&text, "mcsd_allocations_total{");
    assert_eq!(
        owners.len(),
        mcsd::metrics::MAX_OWNERS + 1,
        "owner series:\n{text}"
    );
    let other = format!(
        "mcsd_allocations_total{{owner=\"other\",result=\"ok\"}} {}",
        100 - mcsd::metrics::MAX_OWNERS
    );
    assert!(owners.contains(&other.as_str()), "missing {other}:\n{text}");
    assert!(
        owners.contains(&"mcsd_allocations_total{owner=\"owner-0\",result=\"ok\"} 1"),
        "{text}"
    );

    // A graceful stop removes the socket file it made.
    assert!(d.terminate().success());
    assert!(!metrics.exists(), "metrics socket left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_socket_replaces_only_a_stale_socket() {
    let temp = tempfile::tempdir().unwrap();
    let metrics = temp.path().join("metrics.sock");
    config(temp.path(), &metrics);

    // A file at the path is not mcsd's to delete.
    std::fs::write(&metrics, "keep me").unwrap();
    let mut d = TestDaemon::in_dir(temp.path(), &["--categories", "c0.c9"]);
    let err = d.launch().unwrap_err();
    assert!(
        err.contains(&format!(
            "cannot serve metrics on unix:{0}: refusing to replace {0}: it exists and is not a socket",
            metrics.display()
        )),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&metrics).unwrap(), "keep me");
    std::fs::remove_file(&metrics).unwrap();

    // Nor is a socket something listens on.
    let live = std::os::unix::net::UnixListener::bind(&metrics).unwrap();
    let err = d.launch().unwrap_err();
    assert!(err.contains("is in use"), "{err}");
    drop(live);

    // A socket nobody listens on any more is stale: replaced.
    assert!(std::fs::symlink_metadata(&metrics)
        .unwrap()
        .file_type()
        .is_socket());
    d.launch().unwrap();
    assert!(scrape(&metrics).contains("mcsd_pairs{state=\"total\"} 45"));
}
