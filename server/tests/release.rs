//! Restore before free, on every path that frees a pair, over the real
//! socket: Release, Reconcile and the in-use scan each restore a relabeled
//! volume before its pair goes back; a release racing a relabel of the same
//! container leaves no file with the freed pair; a volume other containers
//! registered is handed on to them, and restored when the last goes.
//! Labels are read back from the xattrs, so these need root.

mod common;

use std::path::Path;
use std::time::Duration;

use common::volume::{label, relabel, require_root, set_label, tree, Mount, SHARED};
use common::{code, TestDaemon, CONFIG};
use mcs_client::Allocate;
use tonic::Code;

const VAR: &str = "system_u:object_r:var_t:s0";
const USR: &str = "system_u:object_r:usr_t:s0";

fn daemon(temp: &Path, config: &str, categories: &str) -> TestDaemon {
    std::fs::write(temp.join("mcsd.toml"), config).unwrap();
    let mut d = TestDaemon::in_dir(temp, &["--categories", categories]);
    d.launch().unwrap();
    d
}

fn all_labeled(paths: &[std::path::PathBuf], expected: &str) -> bool {
    paths.iter().all(|p| label(p).as_deref() == Some(expected))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_restores_volumes_before_freeing_and_keeps_what_it_cannot_restore() {
    require_root();
    let temp = tempfile::tempdir().unwrap();
    let d = daemon(temp.path(), CONFIG, "c0.c9");
    let mut c = d.client().await;
    let a = c.allocate(Allocate::new("a").owner("rt")).await.unwrap();
    let b = c.allocate(Allocate::new("b").owner("rt")).await.unwrap();
    let vol_a = tree(&temp.path().join("vol-a"), 3, 10, VAR);
    let vol_b = tree(&temp.path().join("vol-b"), 1, 3, VAR);
    relabel(&mut c, "a", &vol_a[0], false).await.1.unwrap();
    relabel(&mut c, "b", &vol_b[0], false).await.1.unwrap();
    assert!(all_labeled(&vol_a, &a.file_label));

    // b's volume can no longer take labels: its restore must fail.
    let cover = Mount::new("ramfs", &vol_b[0]);
    let r = c.reconcile("rt", vec![], false).await.unwrap();
    let released: Vec<&str> = r.released.iter().map(|x| x.container_id.as_str()).collect();
    assert_eq!(released, ["a"]);
    assert!(
        all_labeled(&vol_a, VAR),
        "a's volume is restored before its pair is freed"
    );
    assert_eq!(r.not_released.len(), 1, "{r:?}");
    let kept = &r.not_released[0];
    assert_eq!(kept.allocation.as_ref().unwrap().container_id, "b");
    assert!(kept.reason.contains("was not released"), "{}", kept.reason);
    assert_eq!(code(c.get("a").await), Code::NotFound);
    assert_eq!(
        c.get("b").await.unwrap().level,
        b.level,
        "b's pair stays held while its files may carry it"
    );

    // Once the volume takes labels again, a second reconcile finishes.
    drop(cover);
    let r = c.reconcile("rt", vec![], false).await.unwrap();
    assert_eq!(r.released.len(), 1);
    assert!(r.not_released.is_empty());
    assert!(all_labeled(&vol_b, VAR));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_use_scan_restores_a_gone_process_volume_before_freeing_its_pair() {
    require_root();
    let temp = tempfile::tempdir().unwrap();
    let proc_root = temp.path().join("proc");
    common::fake_process(&proc_root, 900, "system_u:system_r:container_t:s0:c3,c4");
    let config = common::config_scanning(&proc_root);
    let mut d = daemon(temp.path(), &config, "c0.c9");
    let mut c = d.client().await;
    let held = c.get("pid:900").await.unwrap();
    let vol = tree(&temp.path().join("vol"), 2, 5, USR);
    relabel(&mut c, "pid:900", &vol[0], false).await.1.unwrap();
    assert!(all_labeled(&vol, &held.file_label));
    drop(c);

    // The process is gone at the next start: its hold is released, after
    // its volume is restored.
    std::fs::remove_dir_all(proc_root.join("900")).unwrap();
    d.terminate();
    d.launch().unwrap();
    let mut c = d.client().await;
    assert_eq!(code(c.get("pid:900").await), Code::NotFound);
    assert!(all_labeled(&vol, USR), "restored before the pair was freed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_racing_a_relabel_leaves_no_file_with_the_freed_pair() {
    require_root();
    let temp = tempfile::tempdir().unwrap();
    let d = daemon(temp.path(), CONFIG, "c0.c9");
    let mut c = d.client().await;
    let vol = tree(&temp.path().join("vol"), 20, 100, VAR);
    let (mut cancelled, mut finished_first, mut released_first) = (0, 0, 0);
    for round in 0..24u64 {
        let id = format!("r{round}");
        let a = c.allocate(Allocate::new(&id)).await.unwrap();
        let mut relabeler = d.client().await;
        let (root, rid) = (vol[0].clone(), id.clone());
        let walk = tokio::spawn(async move { relabel(&mut relabeler, &rid, &root, false).await });
        // From before the relabel has registered the root to mid-walk.
        tokio::time::sleep(Duration::from_millis(round % 12 * 3)).await;
        let r = c.release(&id).await.unwrap();
        assert!(r.released, "round {round}: {r:?}");
        let (_, status) = walk.await.unwrap();
        match status {
            Ok(()) => finished_first += 1,
            Err(s) if s.code() == Code::Aborted => cancelled += 1,
            Err(s) if s.code() == Code::FailedPrecondition => {
                assert!(s.message().contains("holds no allocation"), "{s:?}");
                released_first += 1
            }
            Err(s) => panic!("round {round}: unexpected relabel status {s:?}"),
        }
        let kept: Vec<_> = vol
            .iter()
            .filter(|p| label(p).as_deref() == Some(a.file_label.as_str()))
            .collect();
        assert!(
            kept.is_empty(),
            "round {round}: {} file(s) keep the freed pair {}, e.g. {}",
            kept.len(),
            a.level,
            kept[0].display()
        );
        assert_eq!(code(c.get(&id).await), Code::NotFound);
    }
    eprintln!("relabel finished first {finished_first}, cancelled {cancelled}, refused after release {released_first}");
    assert!(
        cancelled + finished_first > 0,
        "no round overlapped a walk: the race was not exercised"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_volume_is_restored_only_when_its_last_registrant_is_released() {
    require_root();
    let temp = tempfile::tempdir().unwrap();
    let d = daemon(temp.path(), CONFIG, "c0.c9");
    let mut c = d.client().await;
    let a = c.allocate(Allocate::new("a")).await.unwrap();
    c.allocate(Allocate::new("b")).await.unwrap();
    let vol = tree(&temp.path().join("shared"), 2, 5, USR);
    relabel(&mut c, "a", &vol[0], true).await.1.unwrap();
    relabel(&mut c, "b", &vol[0], true).await.1.unwrap();
    let b_root = &c.get("b").await.unwrap().roots[0];
    assert_eq!(
        b_root.original_label, USR,
        "the label before the first relabel is the one to restore"
    );
    // A file a's container wrote there carries a's pair.
    let written = vol[0].join("d0").join("by-a");
    std::fs::write(&written, "x").unwrap();
    set_label(&written, &a.file_label);

    let r = c.release("a").await.unwrap();
    assert!(r.released);
    assert!(
        r.restored[0]
            .error
            .contains("still a volume of 1 other container(s) (b)"),
        "{:?}",
        r.restored[0]
    );
    assert!(all_labeled(&vol, SHARED), "b keeps its shared volume");
    assert_eq!(
        label(&written).as_deref(),
        Some(SHARED),
        "the freed pair is taken off what a wrote"
    );

    c.release("b").await.unwrap();
    assert!(
        all_labeled(&vol, USR),
        "the last release restores the volume"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_volume_taken_over_by_another_container_is_handed_on_not_restored() {
    require_root();
    let temp = tempfile::tempdir().unwrap();
    let d = daemon(temp.path(), CONFIG, "c0.c9");
    let mut c = d.client().await;
    c.allocate(Allocate::new("a")).await.unwrap();
    let b = c.allocate(Allocate::new("b")).await.unwrap();
    let vol = tree(&temp.path().join("vol"), 2, 5, VAR);
    relabel(&mut c, "a", &vol[0], false).await.1.unwrap();
    relabel(&mut c, "b", &vol[0], false).await.1.unwrap();
    c.release("a").await.unwrap();
    assert!(all_labeled(&vol, &b.file_label), "b's volume stays b's");
    c.release("b").await.unwrap();
    assert!(all_labeled(&vol, VAR));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_frees_its_pair_only_after_every_member_volume_is_restored() {
    require_root();
    let temp = tempfile::tempdir().unwrap();
    let d = daemon(temp.path(), CONFIG, "c0.c9");
    let mut c = d.client().await;
    let a = c.allocate(Allocate::new("a").group("pod")).await.unwrap();
    let b = c.allocate(Allocate::new("b").group("pod")).await.unwrap();
    assert_eq!(a.level, b.level, "members share the pod's pair");
    let vol_a = tree(&temp.path().join("vol-a"), 2, 5, VAR);
    let vol_b = tree(&temp.path().join("vol-b"), 2, 5, USR);
    relabel(&mut c, "a", &vol_a[0], false).await.1.unwrap();
    relabel(&mut c, "b", &vol_b[0], false).await.1.unwrap();

    // The first member out restores its own volume; the pair stays with a.
    let r = c.release("b").await.unwrap();
    assert!(r.released && !r.level_freed, "{r:?}");
    assert!(all_labeled(&vol_b, USR));
    assert!(
        all_labeled(&vol_a, &a.file_label),
        "a still uses its volume"
    );

    // The last member's release restores before the pair goes back.
    let cover = Mount::new("ramfs", &vol_a[0]);
    assert_eq!(
        code(c.release("a").await),
        Code::FailedPrecondition,
        "a volume that cannot be restored keeps the group's pair"
    );
    drop(cover);
    let r = c.release("a").await.unwrap();
    assert!(r.released && r.level_freed, "{r:?}");
    assert!(all_labeled(&vol_a, VAR));
    let again = c
        .allocate(Allocate::new("next").level(a.level.as_str()))
        .await
        .unwrap();
    assert_eq!(
        again.level, a.level,
        "the pair is free once both are restored"
    );
}
