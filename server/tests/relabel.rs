//! Relabel over the real socket: labels land (read back from the xattrs),
//! roots are recorded durably and restored on release, refused roots and
//! unlabelable entries are errors, progress streams, and a relabel killed
//! midway completes when run again. Needs root (security.* xattrs, mounts).

mod common;

use std::path::{Path, PathBuf};

use common::volume::{label, relabel, require_root, set_label, tree, Mount, SHARED};
use common::{TestDaemon, CONFIG};
use mcs_client::{proto, Allocate};
use tonic::Code;

fn daemon_with(temp: &Path, extra: &str, categories: &str) -> TestDaemon {
    std::fs::write(temp.join("mcsd.toml"), format!("{CONFIG}{extra}")).unwrap();
    let mut d = TestDaemon::in_dir(temp, &["--categories", categories]);
    d.launch().unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_and_shared_labels_land_are_recorded_and_restored_on_release() {
    require_root();
    let temp = tempfile::tempdir().unwrap();
    let mut d = daemon_with(temp.path(), "", "c0.c9");
    let mut c = d.client().await;
    let a = c.allocate(Allocate::new("a")).await.unwrap();
    let vol_a = tree(
        &temp.path().join("vol-a"),
        5,
        20,
        "system_u:object_r:var_t:s0",
    );
    let shared = tree(
        &temp.path().join("shared"),
        2,
        10,
        "system_u:object_r:usr_t:s0",
    );

    let (messages, status) = relabel(&mut c, "a", &vol_a[0], false).await;
    status.unwrap();
    let first = messages.first().unwrap();
    assert!(!first.done, "progress comes before the summary");
    assert_eq!(first.root, vol_a[0].display().to_string());
    let done = messages.last().unwrap();
    assert!(done.done);
    assert_eq!((done.seen, done.changed, done.failed), (106, 106, 0));
    assert_eq!(done.label, a.file_label);
    assert!(vol_a
        .iter()
        .all(|p| label(p).as_deref() == Some(a.file_label.as_str())));

    let (messages, status) = relabel(&mut c, "a", &shared[0], true).await;
    status.unwrap();
    assert_eq!(messages.last().unwrap().label, SHARED);
    assert!(shared.iter().all(|p| label(p).as_deref() == Some(SHARED)));

    // Already labeled: nothing written.
    let (messages, _) = relabel(&mut c, "a", &vol_a[0], false).await;
    assert_eq!(
        (
            messages.last().unwrap().changed,
            messages.last().unwrap().unchanged
        ),
        (0, 106)
    );

    // Recorded with the allocation, durably.
    drop(c);
    d.crash_and_restart();
    let mut c = d.client().await;
    let got = c.get("a").await.unwrap();
    let roots: Vec<(String, bool, String)> = got
        .roots
        .iter()
        .map(|r| (r.path.clone(), r.shared, r.original_label.clone()))
        .collect();
    assert_eq!(
        roots,
        [
            (
                vol_a[0].display().to_string(),
                false,
                "system_u:object_r:var_t:s0".into()
            ),
            (
                shared[0].display().to_string(),
                true,
                "system_u:object_r:usr_t:s0".into()
            ),
        ]
    );

    // Release restores each root to its original label (the default mode).
    let r = c.release("a").await.unwrap();
    assert!(r.released);
    assert_eq!(r.restored.len(), 2);
    assert!(r
        .restored
        .iter()
        .all(|x| x.mode == "original" && x.failed == 0));
    assert!(vol_a
        .iter()
        .all(|p| label(p).as_deref() == Some("system_u:object_r:var_t:s0")));
    assert!(shared
        .iter()
        .all(|p| label(p).as_deref() == Some("system_u:object_r:usr_t:s0")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_none_leaves_labels_and_policy_needs_selinux() {
    require_root();
    let temp = tempfile::tempdir().unwrap();
    let d = daemon_with(temp.path(), "[relabel]\nrestore = \"none\"\n", "c0.c9");
    let mut c = d.client().await;
    let a = c.allocate(Allocate::new("a")).await.unwrap();
    let vol = tree(&temp.path().join("vol"), 1, 3, "system_u:object_r:var_t:s0");
    relabel(&mut c, "a", &vol[0], false).await.1.unwrap();
    let r = c.release("a").await.unwrap();
    assert_eq!(r.restored[0].mode, "none");
    assert!(vol
        .iter()
        .all(|p| label(p).as_deref() == Some(a.file_label.as_str())));

    if selinux::kernel_support() == selinux::KernelSupport::Unsupported {
        let other = tempfile::tempdir().unwrap();
        std::fs::write(
            other.path().join("mcsd.toml"),
            format!("{CONFIG}[relabel]\nrestore = \"policy\"\n"),
        )
        .unwrap();
        let mut d = TestDaemon::in_dir(other.path(), &["--categories", "c0.c9"]);
        let err = d.launch().unwrap_err();
        assert!(err.contains("SELinux is disabled"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_roots_and_missing_allocations() {
    require_root();
    let temp = tempfile::tempdir().unwrap();
    let allowed = temp.path().join("volumes");
    std::fs::create_dir_all(allowed.join("ok")).unwrap();
    std::fs::create_dir_all(temp.path().join("elsewhere")).unwrap();
    std::fs::write(allowed.join("file"), "x").unwrap();
    std::os::unix::fs::symlink("/usr/share", allowed.join("sneaky")).unwrap();
    let d = daemon_with(
        temp.path(),
        &format!(
            "[relabel]\nallowlist = [{:?}]\n",
            allowed.display().to_string()
        ),
        "c0.c9",
    );
    let mut c = d.client().await;
    let (_, status) = relabel(&mut c, "nobody", &allowed.join("ok"), false).await;
    let status = status.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("holds no allocation"),
        "{status:?}"
    );

    c.allocate(Allocate::new("a")).await.unwrap();
    let etc_label = label(Path::new("/etc"));
    let cases: Vec<(PathBuf, Code, &str)> = vec![
        ("/etc".into(), Code::PermissionDenied, "protected tree"),
        ("/usr/share".into(), Code::PermissionDenied, "inside /usr"),
        ("/".into(), Code::PermissionDenied, "is refused"),
        (
            allowed.join("ok/../../../../etc"),
            Code::PermissionDenied,
            "/etc is refused",
        ),
        (
            allowed.join("sneaky"),
            Code::PermissionDenied,
            "/usr/share is refused",
        ),
        (
            temp.path().join("elsewhere"),
            Code::PermissionDenied,
            "outside the allowed relabel roots",
        ),
        (
            allowed.join("file"),
            Code::InvalidArgument,
            "not a directory",
        ),
        (
            allowed.join("missing"),
            Code::InvalidArgument,
            "cannot be resolved",
        ),
        (
            "relative/dir".into(),
            Code::InvalidArgument,
            "not an absolute path",
        ),
    ];
    for (path, code, hint) in cases {
        let (_, status) = relabel(&mut c, "a", &path, false).await;
        let status = status.unwrap_err();
        assert_eq!(status.code(), code, "{}: {status:?}", path.display());
        assert!(
            status.message().contains(hint),
            "{}: {}",
            path.display(),
            status.message()
        );
    }
    assert_eq!(label(Path::new("/etc")), etc_label);
    assert!(
        c.get("a").await.unwrap().roots.is_empty(),
        "refused roots are not recorded"
    );
    relabel(&mut c, "a", &allowed.join("ok"), false)
        .await
        .1
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_that_cannot_be_labeled_fail_the_call_and_keep_the_pair_on_release() {
    require_root();
    let temp = tempfile::tempdir().unwrap();
    let d = daemon_with(temp.path(), "", "c0.c9");
    let mut c = d.client().await;
    c.allocate(Allocate::new("a")).await.unwrap();
    let root = temp.path().join("ramfs");
    let mount = Mount::new("ramfs", &root);
    std::fs::write(root.join("f"), "x").unwrap();
    let (messages, status) = relabel(&mut c, "a", &root, false).await;
    let status = status.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status
            .message()
            .contains("2 of 2 entries could not be labeled"),
        "{}",
        status.message()
    );
    assert!(status.message().contains("ENOTSUP"), "{}", status.message());
    let summary = messages.last().unwrap();
    assert!(summary.done && summary.failed == 2 && !summary.errors.is_empty());

    // The root is recorded even so; it had no label to go back to (ramfs
    // has none), so release leaves it as is and says why.
    assert_eq!(c.get("a").await.unwrap().roots.len(), 1);
    drop(mount);
    let r = c.release("a").await.unwrap();
    assert!(r.released);
    assert!(
        r.restored[0].error.contains("had no label"),
        "{:?}",
        r.restored
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_that_cannot_be_restored_keeps_its_pair_held() {
    require_root();
    let temp = tempfile::tempdir().unwrap();
    let d = daemon_with(temp.path(), "", "c0.c9");
    let mut c = d.client().await;
    let a = c.allocate(Allocate::new("a")).await.unwrap();
    let vol = tree(&temp.path().join("vol"), 1, 2, "system_u:object_r:var_t:s0");
    relabel(&mut c, "a", &vol[0], false).await.1.unwrap();
    // The root can no longer take labels: a ramfs is mounted over it.
    let _root = Mount::new("ramfs", &vol[0]);
    let err = c.release("a").await.unwrap_err();
    assert_eq!(err.code(), Some(Code::FailedPrecondition));
    assert!(err.to_string().contains("was not released"), "{err}");
    assert!(err.to_string().contains(&a.level), "{err}");
    assert_eq!(
        c.get("a").await.unwrap().level,
        a.level,
        "the pair is still held"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relabel_killed_midway_completes_when_run_again() {
    require_root();
    let temp = tempfile::tempdir().unwrap();
    let mut d = daemon_with(temp.path(), "[relabel]\nthreads = 1\n", "c0.c9");
    let mut c = d.client().await;
    let a = c.allocate(Allocate::new("a")).await.unwrap();
    let vol = tree(
        &temp.path().join("vol"),
        100,
        200,
        "system_u:object_r:var_t:s0",
    );

    // Start the relabel and kill mcsd as soon as it reports progress.
    let request = proto::RelabelRequest {
        container_id: "a".into(),
        path: vol[0].display().to_string(),
        shared: false,
        ..Default::default()
    };
    let mut stream = c.relabel(request).await.unwrap();
    let first = stream.message().await.unwrap().unwrap();
    assert!(!first.done);
    d.kill();
    let partly = vol
        .iter()
        .filter(|p| label(p).as_deref() == Some(a.file_label.as_str()))
        .count();
    assert!(
        partly < vol.len(),
        "the kill came too late to interrupt the walk"
    );

    d.launch().unwrap();
    let mut c = d.client().await;
    let got = c.get("a").await.unwrap();
    assert_eq!(got.roots.len(), 1, "the root was recorded before the walk");
    assert_eq!(got.roots[0].original_label, "system_u:object_r:var_t:s0");
    let (messages, status) = relabel(&mut c, "a", &vol[0], false).await;
    status.unwrap();
    let done = messages.last().unwrap();
    assert_eq!(done.changed + done.unchanged, vol.len() as u64);
    assert_eq!(done.unchanged as usize, partly);
    assert!(vol
        .iter()
        .all(|p| label(p).as_deref() == Some(a.file_label.as_str())));
    c.release("a").await.unwrap();
    assert!(vol
        .iter()
        .all(|p| label(p).as_deref() == Some("system_u:object_r:var_t:s0")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_node_that_allocated_labels_and_restores_the_volumes() {
    require_root();
    let cluster = common::etcd::EtcdCluster::start(1);
    let a = cluster.daemon("node-a", "c0.c9");
    let b = cluster.daemon("node-b", "c0.c9");
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    ca.allocate(Allocate::new("x")).await.unwrap();
    let temp = tempfile::tempdir().unwrap();
    let before = "system_u:object_r:var_t:s0";
    let vol = tree(&temp.path().join("vol"), 1, 2, before);

    // The path would name a directory on the wrong host.
    let (_, status) = relabel(&mut cb, "x", &vol[0], false).await;
    let e = status.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(
        e.message()
            .contains("allocated on node \"node-a\", not this one (\"node-b\")"),
        "{e}"
    );
    assert!(vol.iter().all(|p| label(p).as_deref() == Some(before)));

    relabel(&mut ca, "x", &vol[0], false).await.1.unwrap();
    // Freeing the pair from B would leave A's volume carrying it.
    let e = cb.release("x").await.unwrap_err();
    assert_eq!(e.code(), Some(Code::FailedPrecondition), "{e}");
    assert!(e.to_string().contains("release it through"), "{e}");
    assert!(cb.get("x").await.is_ok(), "still held");
    assert!(ca.release("x").await.unwrap().released);
    assert!(vol.iter().all(|p| label(p).as_deref() == Some(before)));

    // Without volumes, any node may release.
    ca.allocate(Allocate::new("y")).await.unwrap();
    assert!(cb.release("y").await.unwrap().released);
}

/// The escape over the socket: a root-only host file hard-linked
/// into a volume keeps its label through relabel and release, and the
/// summary counts and names it; with `hard_links` it is labeled, recorded
/// so, and restored on release with the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_file_hard_linked_into_a_volume_keeps_its_label_unless_asked() {
    require_root();
    const HOME: &str = "unconfined_u:object_r:user_home_t:s0";
    const VAR: &str = "system_u:object_r:var_t:s0";
    let temp = tempfile::tempdir().unwrap();
    let d = daemon_with(temp.path(), "", "c0.c9");
    let mut c = d.client().await;
    let a = c.allocate(Allocate::new("a")).await.unwrap();
    let vol = tree(&temp.path().join("vol"), 2, 3, VAR);
    let home = temp.path().join("root-home");
    std::fs::create_dir_all(&home).unwrap();
    let secret = home.join("secret");
    std::fs::write(&secret, "s").unwrap();
    set_label(&secret, HOME);
    std::fs::hard_link(&secret, vol[0].join("d1/secret")).unwrap();

    let (messages, status) = relabel(&mut c, "a", &vol[0], false).await;
    status.unwrap();
    let done = messages.last().unwrap();
    assert_eq!(label(&secret).as_deref(), Some(HOME), "relabel escaped");
    assert_eq!(
        (done.seen, done.changed, done.failed, done.hardlinks_skipped),
        (10, 9, 0, 1)
    );
    assert_eq!(
        done.hardlinks_skipped_paths,
        [vol[0].join("d1/secret").display().to_string()]
    );
    assert!(vol
        .iter()
        .all(|p| label(p).as_deref() == Some(a.file_label.as_str())));
    assert!(!c.get("a").await.unwrap().roots[0].hard_links);

    let r = c.release("a").await.unwrap();
    assert_eq!(r.restored.len(), 1);
    assert_eq!(
        (r.restored[0].failed, r.restored[0].hardlinks_skipped),
        (0, 1)
    );
    assert_eq!(label(&secret).as_deref(), Some(HOME), "restore escaped");
    assert!(vol.iter().all(|p| label(p).as_deref() == Some(VAR)));

    // The opt-in labels it, is recorded, and release restores it too.
    let b = c.allocate(Allocate::new("b")).await.unwrap();
    let request = proto::RelabelRequest {
        container_id: "b".into(),
        path: vol[0].display().to_string(),
        hard_links: true,
        ..Default::default()
    };
    let mut stream = c.relabel(request).await.unwrap();
    let mut last = None;
    while let Some(m) = stream.message().await.unwrap() {
        last = Some(m);
    }
    let done = last.unwrap();
    assert_eq!((done.failed, done.hardlinks_skipped), (0, 0));
    assert_eq!(label(&secret).as_deref(), Some(b.file_label.as_str()));
    assert!(c.get("b").await.unwrap().roots[0].hard_links);
    let r = c.release("b").await.unwrap();
    assert_eq!(r.restored[0].hardlinks_skipped, 0);
    assert_eq!(label(&secret).as_deref(), Some(VAR));
}

/// A read-only bind mount of a directory onto itself, undone when dropped.
struct ReadOnlyBind(PathBuf);
impl ReadOnlyBind {
    fn new(at: &Path) -> Self {
        let mount = |args: &[&str]| {
            let status = std::process::Command::new("mount")
                .args(args)
                .status()
                .unwrap();
            assert!(status.success(), "mount {args:?} failed");
        };
        let at_str = at.to_str().unwrap();
        mount(&["--bind", at_str, at_str]);
        mount(&["-o", "remount,bind,ro", at_str]);
        ReadOnlyBind(at.to_owned())
    }
}
impl Drop for ReadOnlyBind {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_on_a_read_only_mount_is_refused_up_front_naming_read_write_paths() {
    require_root();
    let temp = tempfile::tempdir().unwrap();
    let d = daemon_with(temp.path(), "", "c0.c9");
    let mut c = d.client().await;
    c.allocate(Allocate::new("a")).await.unwrap();
    let root = temp.path().join("outside");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("sub/f"), "x").unwrap();
    let before = label(&root.join("sub/f"));
    // What mcsd.service's ProtectSystem=strict makes of a path outside
    // ReadWritePaths=.
    let _ro = ReadOnlyBind::new(&root);
    let (messages, status) = relabel(&mut c, "a", &root, false).await;
    let status = status.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("is read-only for mcsd")
            && status.message().contains("ReadWritePaths="),
        "{}",
        status.message()
    );
    assert!(messages.is_empty(), "no walk started: {messages:?}");
    assert!(c.get("a").await.unwrap().roots.is_empty());
    assert_eq!(label(&root.join("sub/f")), before);
}
