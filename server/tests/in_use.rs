//! Labels already in use: pairs of running processes are held at start and
//! never handed out; holds for processes that are gone are released at the
//! next start. Runs over a made-up /proc tree (this kernel has no SELinux);
//! the SELinux VM suite runs the real scan.

mod common;

use std::path::Path;

use common::{code, config_scanning, fake_process, TestDaemon, CONFIG};
use mcs_client::{proto, Allocate};
use tonic::Code;

fn config_with_proc(dir: &Path, proc_root: &Path) {
    std::fs::write(dir.join("mcsd.toml"), config_scanning(proc_root)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_of_running_processes_are_never_handed_out() {
    let temp = tempfile::tempdir().unwrap();
    let proc_root = temp.path().join("proc");
    fake_process(&proc_root, 1, "system_u:system_r:init_t:s0");
    fake_process(&proc_root, 4242, "system_u:system_r:container_t:s0:c5,c6");
    fake_process(&proc_root, 4243, "system_u:system_r:container_t:s0:c5,c6");
    fake_process(&proc_root, 777, "system_u:system_r:container_t:s0:c2,c9");
    fake_process(&proc_root, 778, "system_u:system_r:container_t:s0:c1,c900"); // outside c0.c9
    config_with_proc(temp.path(), &proc_root);

    let mut d = TestDaemon::in_dir(temp.path(), &["--categories", "c0.c9"]);
    d.launch().unwrap();
    let mut c = d.client().await;

    let held = c.get("pid:4242").await.unwrap();
    assert_eq!(
        (held.level.as_str(), held.owner.as_str()),
        ("s0:c5,c6", "running")
    );
    assert_eq!(c.get("pid:777").await.unwrap().level, "s0:c2,c9");
    assert_eq!(
        code(c.get("pid:4243").await),
        Code::NotFound,
        "one hold per level"
    );

    let err = c
        .allocate(Allocate::new("x").level("s0:c5,c6"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::AlreadyExists));
    assert!(err.to_string().contains("pid:4242"), "{err}");

    // Everything else is handed out; the two pairs in use never are.
    let mut levels = Vec::new();
    for i in 0..43 {
        levels.push(
            c.allocate(Allocate::new(format!("c{i}")))
                .await
                .unwrap()
                .level,
        );
    }
    assert!(!levels.iter().any(|l| l == "s0:c5,c6" || l == "s0:c2,c9"));
    assert_eq!(
        code(c.allocate(Allocate::new("one-too-many")).await),
        Code::ResourceExhausted
    );

    // Process 777 exits; 4242 keeps running. The next start lets go of
    // c2,c9 only.
    for i in 0..43 {
        c.release(format!("c{i}")).await.unwrap();
    }
    drop(c);
    std::fs::remove_dir_all(proc_root.join("777")).unwrap();
    d.terminate();
    d.launch().unwrap();
    let mut c = d.client().await;
    assert_eq!(code(c.get("pid:777").await), Code::NotFound);
    assert_eq!(c.get("pid:4242").await.unwrap().level, "s0:c5,c6");
    c.allocate(Allocate::new("y").level("s0:c2,c9"))
        .await
        .unwrap();
    assert!(d.log().contains("scanned running processes"), "{}", d.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pair_already_allocated_to_the_running_container_stays_with_it() {
    let temp = tempfile::tempdir().unwrap();
    let proc_root = temp.path().join("proc");
    std::fs::create_dir_all(&proc_root).unwrap();
    config_with_proc(temp.path(), &proc_root);
    let mut d = TestDaemon::in_dir(temp.path(), &["--categories", "c0.c9"]);
    d.launch().unwrap();
    let mut c = d.client().await;
    let level = c
        .allocate(Allocate::new("web").owner("podman"))
        .await
        .unwrap()
        .level;
    drop(c);
    d.terminate();

    // The container now runs with the pair mcsd gave it.
    let context = format!("system_u:system_r:container_t:{level}");
    fake_process(&proc_root, 900, &context);
    d.launch().unwrap();
    let mut c = d.client().await;
    assert_eq!(c.get("web").await.unwrap().owner, "podman");
    assert_eq!(code(c.get("pid:900").await), Code::NotFound);
    let stats = c.stats().await.unwrap();
    assert_eq!((stats.held, stats.containers), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_releases_what_the_runtime_no_longer_has() {
    let d = TestDaemon::start("c0.c9");
    let mut c = d.client().await;
    for id in ["a", "b", "c"] {
        c.allocate(Allocate::new(id).owner("podman")).await.unwrap();
    }
    let last = c.allocate(Allocate::new("d").owner("crio")).await.unwrap();
    // Reconcile keeps allocations made in the millisecond it starts (they
    // may be new containers); let the clock move past the last one.
    common::wait_past(last.created_at);

    // A dry run reports and changes nothing.
    let dry = c
        .reconcile("podman", vec!["a".into(), "zz".into()], true)
        .await
        .unwrap();
    let ids = |r: &proto::ReconcileResponse| -> Vec<String> {
        r.released.iter().map(|a| a.container_id.clone()).collect()
    };
    assert_eq!(
        (ids(&dry), dry.kept, dry.unknown),
        (vec!["b".into(), "c".into()], 1, 1)
    );
    assert_eq!(c.stats().await.unwrap().containers, 4);

    let done = c
        .reconcile("podman", vec!["a".into(), "zz".into()], false)
        .await
        .unwrap();
    assert_eq!(
        (ids(&done), done.kept, done.unknown),
        (vec!["b".into(), "c".into()], 1, 1)
    );
    assert_eq!(code(c.get("b").await), Code::NotFound);
    c.get("a").await.unwrap();
    assert_eq!(
        c.get("d").await.unwrap().owner,
        "crio",
        "other owners untouched"
    );

    // Many ids stream in chunks; a bad one is refused and nothing released.
    let mut keep: Vec<String> = (0..5000).map(|i| format!("keep-{i}")).collect();
    keep.push("a".into());
    let r = c.reconcile("podman", keep.clone(), false).await.unwrap();
    assert_eq!((r.released.len(), r.kept, r.unknown), (0, 1, 5000));
    keep.push("bad id".into());
    let err = c.reconcile("crio", keep, false).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument));
    c.get("d").await.unwrap();
    let err = c.reconcile("", vec![], false).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument));
    assert!(err.to_string().contains("owner"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_takes_thousands_of_real_length_container_ids() {
    let d = TestDaemon::start("c0.c9");
    let mut c = d.client().await;
    // Runtimes name containers with 64 hex characters.
    let hex = |i: u64| format!("{:016x}", i).repeat(4);
    let kept = hex(0xfeed);
    c.allocate(Allocate::new(&kept).owner("podman"))
        .await
        .unwrap();
    let mut keep: Vec<String> = (0..5000).map(hex).collect();
    keep.push(kept.clone());
    assert!(keep.iter().all(|id| id.len() == 64));
    let r = c.reconcile("podman", keep, true).await.unwrap();
    assert_eq!((r.released.len(), r.kept, r.unknown), (0, 1, 5000));
    c.get(&kept).await.unwrap();
}

/// A container that exists but does not run keeps its level: at start
/// mcsd holds the levels in the files the real `podman create` wrote
/// (server/src/stored_testdata, from this host; the label fields set as
/// containers/storage sets them under SELinux, which is off here) and in
/// docker's config.v2.json, and never hands them out. Once the record is
/// gone, the next start releases the hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn levels_of_stored_containers_are_never_handed_out() {
    let temp = tempfile::tempdir().unwrap();
    let proc_root = temp.path().join("proc");
    std::fs::create_dir_all(&proc_root).unwrap();
    let storage = temp.path().join("storage");
    let docker = temp.path().join("docker");
    let mut containers: serde_json::Value =
        serde_json::from_str(include_str!("../src/stored_testdata/containers.json")).unwrap();
    containers[0]["flags"]["ProcessLabel"] = "system_u:system_r:container_t:s0:c0,c1".into();
    containers[0]["flags"]["MountLabel"] = "system_u:object_r:container_file_t:s0:c0,c1".into();
    let id = containers[0]["id"].as_str().unwrap().to_owned();
    std::fs::create_dir_all(storage.join("overlay-containers")).unwrap();
    std::fs::create_dir_all(storage.join("overlay-layers")).unwrap();
    let containers_json = storage.join("overlay-containers/containers.json");
    std::fs::write(&containers_json, containers.to_string()).unwrap();
    std::fs::write(
        storage.join("overlay-layers/layers.json"),
        include_str!("../src/stored_testdata/layers.json"),
    )
    .unwrap();
    let docker_id = "d0".repeat(32);
    std::fs::create_dir_all(docker.join("containers").join(&docker_id)).unwrap();
    std::fs::write(
        docker.join("containers").join(&docker_id).join("config.v2.json"),
        r#"{"MountLabel":"system_u:object_r:container_file_t:s0:c0,c2","ProcessLabel":"system_u:system_r:container_t:s0:c0,c2"}"#,
    )
    .unwrap();
    let config = CONFIG.replace(
        "[in_use]\nscan = false\n",
        &format!(
            "[in_use]\nscan = true\nproc_root = {:?}\ncontainers_storage = {:?}\ndocker_root = {:?}\n",
            proc_root.display().to_string(),
            storage.display().to_string(),
            docker.display().to_string()
        ),
    );
    assert_ne!(config, CONFIG, "the harness config changed shape");
    std::fs::write(temp.path().join("mcsd.toml"), config).unwrap();
    // Three pairs in c0.c2: two stored, one free.
    let mut d = TestDaemon::in_dir(temp.path(), &["--categories", "c0.c2"]);
    d.launch().unwrap();
    let mut c = d.client().await;
    let held = c.get(format!("stored:{id}")).await.unwrap();
    assert_eq!(
        (held.owner.as_str(), held.level.as_str()),
        ("running", "s0:c0,c1")
    );
    let held = c.get(format!("stored:{docker_id}")).await.unwrap();
    assert_eq!(held.level, "s0:c0,c2");
    let a = c
        .allocate(Allocate::new("new").owner("podman"))
        .await
        .unwrap();
    assert_eq!(a.level, "s0:c1,c2");
    assert_eq!(
        code(c.allocate(Allocate::new("more").owner("podman")).await),
        Code::ResourceExhausted
    );
    drop(c);

    // podman rm: the record is gone; the next start frees its pair.
    std::fs::write(&containers_json, "[]").unwrap();
    d.terminate();
    d.launch().unwrap();
    let mut c = d.client().await;
    assert_eq!(code(c.get(format!("stored:{id}")).await), Code::NotFound);
    c.get(format!("stored:{docker_id}")).await.unwrap();
    let a = c
        .allocate(Allocate::new("more").owner("podman"))
        .await
        .unwrap();
    assert_eq!(a.level, "s0:c0,c1");
}
