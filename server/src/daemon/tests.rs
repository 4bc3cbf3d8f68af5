//! The daemon in process: reloads that fail leave everything as it was,
//! a start reconciles the configured reservations, and health follows the
//! engine.

use std::path::Path;

use super::{reload, Daemon};
use crate::config::Config;
use crate::reservation::Reservation;

fn config(dir: &Path, reservations: &[&str]) -> Config {
    Config {
        socket: dir.join("mcsd.sock"),
        state_dir: dir.join("state"),
        range: "c0.c9".parse().unwrap(),
        process_template: Some("system_u:system_r:container_t".parse().unwrap()),
        file_template: Some("system_u:object_r:container_file_t".parse().unwrap()),
        host_contexts: vec![],
        scan_in_use: false,
        reservations: reservations.iter().map(|r| r.parse().unwrap()).collect(),
        ..Config::default()
    }
}

async fn reserved(daemon: &Daemon) -> Vec<String> {
    let mut all: Vec<String> = daemon
        .engine()
        .reservations()
        .await
        .unwrap()
        .iter()
        .map(|r| r.reservation.to_string())
        .collect();
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_whose_reservation_fails_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let before = config(dir.path(), &["c1"]);
    let daemon = Daemon::start(&before).await.unwrap();

    let mut new = before.clone();
    new.auth.reader_uids.insert(4242);
    new.relabel.allowlist = vec!["/srv/volumes".into()];
    // c2 can be made, c500 lies outside c0.c9; c1 would be removed.
    new.reservations = vec!["c2".parse().unwrap(), "c500".parse().unwrap()];
    let refused = daemon.reload(new).await.unwrap_err();
    assert!(refused.contains("c500"), "{refused}");
    assert!(refused.contains("Nothing was changed"), "{refused}");

    assert_eq!(reserved(&daemon).await, ["c1"]);
    assert_eq!(
        daemon.policy.read().unwrap().config(),
        &before.auth,
        "roles replaced by a refused reload"
    );
    assert_eq!(
        daemon.relabeler.read().unwrap().config(),
        &before.relabel,
        "relabel rules replaced by a refused reload"
    );
    assert_eq!(
        daemon.config.lock().unwrap().reservations,
        before.reservations,
        "configuration in force replaced by a refused reload"
    );
    // The next reload still diffs against the configuration in force: c1
    // goes, c2 comes.
    let mut fine = before.clone();
    fine.reservations = vec!["c2".parse().unwrap()];
    daemon.reload(fine).await.unwrap();
    assert_eq!(reserved(&daemon).await, ["c2"]);
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_failing_midway_are_undone() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&config(dir.path(), &["c1"])).await.unwrap();
    let r = |s: &str| s.parse::<Reservation>().unwrap();
    // The reload checks the range first; the engine is the last line.
    let failed =
        reload::apply_reservations(daemon.engine(), &[r("c2"), r("c3"), r("c500")], &[r("c1")])
            .await
            .unwrap_err();
    assert!(failed.contains("reserving c500"), "{failed}");
    assert_eq!(reserved(&daemon).await, ["c1"]);
    daemon.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_drops_the_configured_reservations_the_file_no_longer_lists() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&config(dir.path(), &["c1", "s0:c2,c3"]))
        .await
        .unwrap();
    // An operator's, made with `mcsctl reserve`: only an operator removes it.
    daemon
        .engine()
        .reserve("c4".parse().unwrap())
        .await
        .unwrap();
    daemon.stop().await.unwrap();

    // While mcsd is down, c1 leaves the file and c5 joins it.
    let daemon = Daemon::start(&config(dir.path(), &["s0:c2,c3", "c5"]))
        .await
        .unwrap();
    assert_eq!(reserved(&daemon).await, ["c4", "c5", "s0:c2,c3"]);
    daemon.stop().await.unwrap();

    // An operator's reservation the file lists later is the file's from
    // then on, as a reload treats it.
    let daemon = Daemon::start(&config(dir.path(), &["c4"])).await.unwrap();
    assert_eq!(reserved(&daemon).await, ["c4"]);
    daemon.stop().await.unwrap();
    let daemon = Daemon::start(&config(dir.path(), &[])).await.unwrap();
    assert!(reserved(&daemon).await.is_empty());
    daemon.stop().await.unwrap();
}

/// A panicked engine actor fails every call; health must say so instead of
/// SERVING, on the overall status and the API's own entry, and so must
/// `mcsctl status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_not_serving_when_the_engine_actor_dies() {
    use std::time::Duration;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&config(dir.path(), &[])).await.unwrap();
    let mut client = mcs_client::Client::connect(daemon.socket_path())
        .await
        .unwrap();
    let mut watches = Vec::new();
    for service in ["", "mcs.v1.Labels"] {
        let mut stream = HealthClient::new(client.channel())
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
    assert!(daemon.engine().is_running());
    assert_eq!(client.status().await.unwrap().health, "SERVING");

    assert!(
        tokio::time::timeout(Duration::from_millis(200), daemon.engine_died())
            .await
            .is_err(),
        "a healthy engine has not died"
    );
    daemon.engine().panic_for_test().await;
    for (service, mut stream) in watches {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("health changes within 10 s of the actor's death")
            .unwrap()
            .expect("the watch carries the change");
        assert_eq!(next.status(), ServingStatus::NotServing, "{service:?}");
    }
    assert!(!daemon.engine().is_running());
    assert!(matches!(
        daemon.engine().stats().await,
        Err(crate::error::AllocError::ShuttingDown)
    ));
    // What `run` waits for to exit (so systemd restarts mcsd).
    tokio::time::timeout(Duration::from_secs(5), daemon.engine_died())
        .await
        .expect("engine_died resolves once the actor is gone");
    assert_eq!(client.status().await.unwrap().health, "NOT_SERVING");
    // Stopping still closes the store cleanly.
    daemon.stop().await.unwrap();
}
