//! Reconcile's minimum age, over the real socket: an allocation younger
//! than `[reconcile] min_age_secs` (or the request's own minimum) is never
//! released, whatever the runtime's list says, because a container being
//! created may not be in the engine's list yet.

mod common;

use std::time::{Duration, Instant};

use common::{code, TestDaemon, CONFIG};
use mcs_client::{proto, Allocate};
use tonic::Code;

fn daemon_with(reconcile_section: &str) -> (TestDaemon, tempfile::TempDir) {
    let temp = tempfile::tempdir().unwrap();
    let config = CONFIG.replace("[reconcile]\nmin_age_secs = 0\n", reconcile_section);
    assert_ne!(config, CONFIG, "the harness config changed shape");
    std::fs::write(temp.path().join("mcsd.toml"), config).unwrap();
    let mut d = TestDaemon::in_dir(temp.path(), &["--categories", "c0.c9"]);
    d.launch().unwrap();
    (d, temp)
}

fn released(r: &proto::ReconcileResponse) -> Vec<&str> {
    r.released.iter().map(|a| a.container_id.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_minimum_age_is_a_minute() {
    // No [reconcile] section: the default applies.
    let (d, _temp) = daemon_with("");
    let mut c = d.client().await;
    let a = c
        .allocate(Allocate::new("new").owner("podman"))
        .await
        .unwrap();
    common::wait_past(a.created_at);
    let r = c.reconcile("podman", vec![], false).await.unwrap();
    assert_eq!(released(&r), Vec::<&str>::new());
    assert_eq!((r.kept, r.kept_young, r.min_age_secs), (1, 1, 60));
    c.get("new").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_younger_than_the_minimum_age_are_kept_older_ones_released() {
    let (d, _temp) = daemon_with("[reconcile]\nmin_age_secs = 2\n");
    let mut c = d.client().await;
    let started = Instant::now();
    c.allocate(Allocate::new("old").owner("podman"))
        .await
        .unwrap();
    // "young" is not in the runtime's list (it is being created).
    let young = c
        .allocate(Allocate::new("young").owner("podman"))
        .await
        .unwrap();
    common::wait_past(young.created_at);

    // Both younger than 2 s: neither released, even though neither is kept.
    let r = c.reconcile("podman", vec![], false).await.unwrap();
    assert_eq!(released(&r), Vec::<&str>::new());
    assert_eq!((r.kept, r.kept_young, r.min_age_secs), (2, 2, 2));
    c.get("old").await.unwrap();
    c.get("young").await.unwrap();

    // Past 2 s "old" is stale; a new "young2" still is not.
    std::thread::sleep(Duration::from_millis(2100).saturating_sub(started.elapsed()));
    let young2 = c
        .allocate(Allocate::new("young2").owner("podman"))
        .await
        .unwrap();
    common::wait_past(young2.created_at);
    let r = c
        .reconcile("podman", vec!["young".into()], false)
        .await
        .unwrap();
    assert_eq!(released(&r), ["old"]);
    assert_eq!(
        (r.kept, r.kept_young),
        (2, 1),
        "young kept by the list, young2 by its age"
    );
    assert_eq!(code(c.get("old").await), Code::NotFound);
    c.get("young2").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_may_ask_for_its_own_minimum_age() {
    let (d, _temp) = daemon_with("[reconcile]\nmin_age_secs = 600\n");
    let mut c = d.client().await;
    let a = c
        .allocate(Allocate::new("a").owner("podman"))
        .await
        .unwrap();
    c.allocate(Allocate::new("b").owner("podman"))
        .await
        .unwrap();
    common::wait_past(a.created_at);
    // The daemon's 600 s keeps both; a dry run with 0 would release both.
    let r = c
        .reconcile_with_min_age("podman", vec!["a".into()], true, Some(0))
        .await
        .unwrap();
    assert_eq!(released(&r), ["b"]);
    assert_eq!((r.kept_young, r.min_age_secs), (0, 0));
    let r = c
        .reconcile("podman", vec!["a".into()], false)
        .await
        .unwrap();
    assert_eq!(
        (released(&r), r.kept_young, r.min_age_secs),
        (vec![], 1, 600)
    );
    let r = c
        .reconcile_with_min_age("podman", vec!["a".into()], false, Some(0))
        .await
        .unwrap();
    assert_eq!(released(&r), ["b"]);
    assert_eq!(code(c.get("b").await), Code::NotFound);
    c.get("a").await.unwrap();
    // More than a day is refused.
    let err = c
        .reconcile_with_min_age("podman", vec![], false, Some(86_401))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument));
    assert!(err.to_string().contains("min_age_secs"), "{err}");
    c.get("a").await.unwrap();
}
