//! The relabeler on real trees, reading the xattrs back: ext4 (the temp
//! dir), tmpfs and ramfs (no xattr support) mounted for the test. Needs root
//! (writing `security.*` xattrs and mounting).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::*;

const PRIVATE: &[u8] = b"system_u:object_r:container_file_t:s0:c1,c2";
const SHARED: &[u8] = b"system_u:object_r:container_file_t:s0";

fn require_root() {
    assert_eq!(
        rustix::process::geteuid().as_raw(),
        0,
        "relabel tests write security.selinux xattrs and mount file systems: run them as root"
    );
}

/// A file system mounted for one test, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn new(fstype: &str, at: &Path) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", fstype, fstype])
            .arg(at)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount -t {fstype} {} failed", at.display());
        Mount(at.to_owned())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The label of `path` itself (not following a symlink).
fn label(path: &Path) -> Option<Vec<u8>> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    xattr::get_at(c.as_bytes()).unwrap()
}

fn relabeler() -> Relabeler {
    relabeler_with(2)
}

fn relabeler_with(threads: usize) -> Relabeler {
    Relabeler::new(
        RelabelConfig {
            threads,
            ..Default::default()
        },
        Path::new("/var/lib/mcsd"),
    )
}

fn run(root: &Path, want: &[u8], cross_mounts: bool) -> Outcome {
    run_with(root, want, cross_mounts, false)
}

fn run_with(root: &Path, want: &[u8], cross_mounts: bool, hard_links: bool) -> Outcome {
    run_by(&relabeler(), root, want, cross_mounts, hard_links)
}

fn run_by(
    r: &Relabeler,
    root: &Path,
    want: &[u8],
    cross_mounts: bool,
    hard_links: bool,
) -> Outcome {
    let resolved = r.resolve(root).unwrap();
    r.run(
        &resolved,
        &Fixed(want.to_vec()),
        cross_mounts,
        hard_links,
        &Counters::default(),
    )
    .unwrap()
}

/// Every kind of entry, plus links that point out of the tree.
fn build_tree(root: &Path, outside: &Path) -> Vec<PathBuf> {
    let mut entries = vec![root.to_owned()];
    for d in ["a", "a/b", "a/b/c", "empty"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
        entries.push(root.join(d));
    }
    for f in ["f1", "a/f2", "a/b/c/f3"] {
        std::fs::write(root.join(f), f).unwrap();
        entries.push(root.join(f));
    }
    std::fs::hard_link(root.join("f1"), root.join("a/hardlink")).unwrap();
    entries.push(root.join("a/hardlink"));
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("a/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    entries.push(root.join("a/fifo"));
    let _socket = std::os::unix::net::UnixListener::bind(root.join("a/socket")).unwrap();
    entries.push(root.join("a/socket"));
    for (link, target) in [
        ("passwd-link", Path::new("/etc/passwd")),
        ("outside-dir", outside),
        ("a/dangling", Path::new("/no/such/target")),
        ("a/b/loop", Path::new("../b")),
    ] {
        std::os::unix::fs::symlink(target, root.join(link)).unwrap();
        entries.push(root.join(link));
    }
    entries
}

fn check_tree(root: &Path, fstype: &str) {
    let outside = root.with_file_name(format!(
        "{}-outside",
        root.file_name().unwrap().to_string_lossy()
    ));
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "s").unwrap();
    let before_outside = (label(&outside), label(&outside.join("secret")));
    let before_passwd = label(Path::new("/etc/passwd"));
    let entries = build_tree(root, &outside);

    let out = run(root, PRIVATE, false);
    assert_eq!(out.totals.failed, 0, "{fstype}: {:?}", out.errors);
    assert_eq!(out.totals.seen, entries.len() as u64, "{fstype}");
    for e in &entries {
        assert_eq!(
            label(e).as_deref(),
            Some(PRIVATE),
            "{fstype}: {}",
            e.display()
        );
    }
    // Links were labeled themselves; what they point at was not touched.
    assert_eq!(label(Path::new("/etc/passwd")), before_passwd);
    assert_eq!(
        (label(&outside), label(&outside.join("secret"))),
        before_outside
    );

    // Already labeled: a second run only reads, and ctimes stay the same.
    let ctimes: Vec<i64> = entries
        .iter()
        .map(|e| std::fs::symlink_metadata(e).unwrap().ctime_nsec())
        .collect();
    let again = run(root, PRIVATE, false);
    assert_eq!(
        (again.totals.changed, again.totals.unchanged),
        (0, entries.len() as u64)
    );
    let after: Vec<i64> = entries
        .iter()
        .map(|e| std::fs::symlink_metadata(e).unwrap().ctime_nsec())
        .collect();
    assert_eq!(ctimes, after, "{fstype}: a read-only pass changed ctimes");

    // Shared: level s0 on everything.
    let shared = run(root, SHARED, false);
    // The hard link shares f1's inode: whichever name comes second finds
    // the label already written.
    assert_eq!(
        (shared.totals.changed, shared.totals.unchanged),
        (entries.len() as u64 - 1, 1)
    );
    assert!(entries.iter().all(|e| label(e).as_deref() == Some(SHARED)));
}

#[test]
fn every_entry_is_labeled_and_links_are_not_followed_on_ext4() {
    require_root();
    let base = tempfile::tempdir().unwrap();
    check_tree(&base.path().join("volume"), "ext4 (temp dir)");
}

#[test]
fn every_entry_is_labeled_and_links_are_not_followed_on_tmpfs() {
    require_root();
    let base = tempfile::tempdir().unwrap();
    let _m = Mount::new("tmpfs", &base.path().join("shm"));
    check_tree(&base.path().join("shm/volume"), "tmpfs");
}

#[test]
fn mounted_file_systems_are_entered_only_when_asked() {
    require_root();
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("volume");
    std::fs::create_dir_all(&root).unwrap();
    let _m = Mount::new("tmpfs", &root.join("mnt"));
    std::fs::write(root.join("mnt/inside"), "x").unwrap();
    let mount_label = label(&root.join("mnt"));
    let out = run(&root, PRIVATE, false);
    assert_eq!(out.totals.mounts_skipped, 1);
    assert_eq!(
        label(&root.join("mnt")),
        mount_label,
        "the mount point's root was labeled"
    );
    assert_ne!(label(&root.join("mnt/inside")).as_deref(), Some(PRIVATE));
    let out = run(&root, PRIVATE, true);
    assert_eq!(out.totals.mounts_skipped, 0);
    assert_eq!(label(&root.join("mnt/inside")).as_deref(), Some(PRIVATE));
}

#[test]
fn entries_that_cannot_be_labeled_are_counted_and_named() {
    require_root();
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("ramfs");
    let _m = Mount::new("ramfs", &root);
    std::fs::create_dir(root.join("d")).unwrap();
    std::fs::write(root.join("d/f"), "x").unwrap();
    let out = run(&root, PRIVATE, false);
    assert_eq!(out.totals.failed, 3, "{out:?}");
    assert_eq!(out.totals.changed, 0);
    assert!(
        out.errors.iter().all(|e| e.error.contains("ENOTSUP")),
        "{:?}",
        out.errors
    );
    assert!(
        out.errors.iter().any(|e| e.path == root.join("d/f")),
        "{:?}",
        out.errors
    );
}

#[test]
fn swapping_a_directory_for_a_symlink_during_the_walk_never_escapes() {
    require_root();
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("volume");
    let outside = base.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    for i in 0..50 {
        std::fs::write(outside.join(format!("o{i}")), "x").unwrap();
    }
    for d in 0..20 {
        let dir = root.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..50 {
            std::fs::write(dir.join(format!("f{f}")), "x").unwrap();
        }
    }
    let stop = AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_secs(3);
    std::thread::scope(|s| {
        // The attacker: swap d0 between a real directory and a symlink to
        // `outside`, as fast as it can, while the walks run.
        s.spawn(|| {
            let (real, parked) = (root.join("d0"), root.join("d0-parked"));
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let _ = std::fs::rename(&real, &parked);
                let _ = std::os::unix::fs::symlink(&outside, &real);
                let _ = std::fs::remove_file(&real);
                let _ = std::fs::rename(&parked, &real);
            }
        });
        let r = relabeler();
        let resolved = r.resolve(&root).unwrap();
        let mut runs = 0;
        while Instant::now() < deadline {
            let label = if runs % 2 == 0 { PRIVATE } else { SHARED };
            // Entries may vanish or change type mid-walk; that is reported,
            // never followed.
            r.run(
                &resolved,
                &Fixed(label.to_vec()),
                false,
                false,
                &Counters::default(),
            )
            .unwrap();
            runs += 1;
        }
        stop.store(true, Ordering::Relaxed);
        assert!(runs > 0);
    });
    for i in 0..50 {
        let l = label(&outside.join(format!("o{i}")));
        assert!(
            l.as_deref() != Some(PRIVATE) && l.as_deref() != Some(SHARED),
            "escaped to o{i}"
        );
    }
    let l = label(&outside);
    assert!(
        l.as_deref() != Some(PRIVATE) && l.as_deref() != Some(SHARED),
        "escaped to outside"
    );
}

#[test]
fn restore_modes_parse_and_policy_needs_selinux() {
    assert_eq!(
        "original".parse::<RestoreMode>().unwrap(),
        RestoreMode::Original
    );
    assert_eq!("none".parse::<RestoreMode>().unwrap(), RestoreMode::None);
    assert_eq!(
        "policy".parse::<RestoreMode>().unwrap(),
        RestoreMode::Policy
    );
    assert!("restorecon"
        .parse::<RestoreMode>()
        .unwrap_err()
        .contains("original"));
    assert_eq!(RestoreMode::default(), RestoreMode::Original);
    if selinux::kernel_support() == selinux::KernelSupport::Unsupported {
        let err = FromPolicy::new()
            .err()
            .expect("no policy without SELinux")
            .to_string();
        assert!(err.contains("SELinux is disabled"), "{err}");
    }
}

/// `restore = "policy"` with the file_contexts named (as `setfiles SPEC`
/// takes it): works where SELinux is disabled, reads the file's types
/// (`-d`), and leaves `<<none>>` entries alone.
#[test]
fn policy_restore_reads_an_explicit_file_contexts() {
    require_root();
    let base = tempfile::tempdir().unwrap();
    let fc = base.path().join("file_contexts");
    std::fs::write(
        &fc,
        "/.*/vol(/.*)?\tsystem_u:object_r:var_lib_t:s0\n\
         /.*/vol/sub\t-d\tsystem_u:object_r:etc_t:s0\n\
         /.*/vol/keep\t<<none>>\n",
    )
    .unwrap();
    let root = base.path().join("vol");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("file"), "").unwrap();
    std::fs::write(root.join("keep"), "").unwrap();
    run(&root, PRIVATE, false);
    let policy = FromPolicy::with_file_contexts(&fc).unwrap();
    let r = relabeler();
    let resolved = r.resolve(&root).unwrap();
    let out = r
        .run(&resolved, &policy, false, false, &Counters::default())
        .unwrap();
    assert_eq!(out.totals.failed, 0, "{:?}", out.errors);
    let var_lib: &[u8] = b"system_u:object_r:var_lib_t:s0";
    assert_eq!(label(&root).as_deref(), Some(var_lib));
    assert_eq!(label(&root.join("file")).as_deref(), Some(var_lib));
    assert_eq!(
        label(&root.join("sub")).as_deref(),
        Some(&b"system_u:object_r:etc_t:s0"[..])
    );
    assert_eq!(label(&root.join("keep")).as_deref(), Some(PRIVATE));
    let missing = FromPolicy::with_file_contexts(&base.path().join("missing"))
        .err()
        .expect("no such file_contexts")
        .to_string();
    assert!(missing.contains("missing"), "{missing}");
}

/// Bind mounts of the same file system have the root's device number:
/// only the mount id (directories) and the mount table (files) tell.
#[test]
fn bind_mounts_from_the_same_file_system_are_not_entered() {
    require_root();
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("volume");
    let outside = base.path().join("outside");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "s").unwrap();
    std::fs::write(outside.join("shadow"), "x").unwrap();
    std::fs::write(root.join("shadow"), "").unwrap();
    let bind = |from: &Path, to: &Path| {
        let ok = Command::new("mount")
            .arg("--bind")
            .arg(from)
            .arg(to)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount --bind {} {}", from.display(), to.display());
        Mount(to.to_owned())
    };
    let _dir = bind(&outside, &root.join("etc"));
    let _file = bind(&outside.join("shadow"), &root.join("shadow"));
    let before = (
        label(&outside),
        label(&outside.join("secret")),
        label(&outside.join("shadow")),
    );
    let out = run(&root, PRIVATE, false);
    assert_eq!(out.totals.mounts_skipped, 2, "{out:?}");
    assert_eq!(
        (
            label(&outside),
            label(&outside.join("secret")),
            label(&outside.join("shadow"))
        ),
        before,
        "a bind mount was relabeled"
    );
    assert_eq!(label(&root).as_deref(), Some(PRIVATE));
}

/// The create-only fast path for unlabeled entries never rewrites an entry
/// that already has a label: mixed trees keep their ctimes where the label
/// was right, and get the label where it was wrong.
#[test]
fn unlabeled_labeled_and_mislabeled_entries_mixed() {
    require_root();
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("mixed");
    std::fs::create_dir_all(&root).unwrap();
    let mut right = Vec::new();
    for i in 0..300 {
        let f = root.join(format!("f{i:03}"));
        std::fs::write(&f, "x").unwrap();
        let c = CString::new(f.as_os_str().as_bytes()).unwrap();
        match i % 3 {
            0 => {}
            1 => {
                xattr::set_at(c.as_bytes(), PRIVATE).unwrap();
                right.push(f);
            }
            _ => xattr::set_at(c.as_bytes(), SHARED).unwrap(),
        }
    }
    let ctimes: Vec<(i64, i64)> = right
        .iter()
        .map(|f| {
            let m = std::fs::symlink_metadata(f).unwrap();
            (m.ctime(), m.ctime_nsec())
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    let out = run(&root, PRIVATE, false);
    // 100 unlabeled + 100 mislabeled files and the directory changed.
    assert_eq!(
        (out.totals.changed, out.totals.unchanged, out.totals.failed),
        (201, 100, 0)
    );
    for i in 0..300 {
        assert_eq!(
            label(&root.join(format!("f{i:03}"))).as_deref(),
            Some(PRIVATE)
        );
    }
    let after: Vec<(i64, i64)> = right
        .iter()
        .map(|f| {
            let m = std::fs::symlink_metadata(f).unwrap();
            (m.ctime(), m.ctime_nsec())
        })
        .collect();
    assert_eq!(ctimes, after, "an entry that had the label was rewritten");
}

const HOME: &[u8] = b"unconfined_u:object_r:user_home_t:s0";
const ORIGINAL: &[u8] = b"system_u:object_r:var_t:s0";

/// A volume with one ordinary file and, linked into it from a directory
/// next to it (outside the tree), a root-only file and a fifo labeled
/// [`HOME`]. Returns (volume, outside secret, outside fifo).
fn volume_with_outside_links(base: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let root = base.join("volume");
    let outside = base.join("root-home");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(root.join("own"), "x").unwrap();
    let secret = outside.join("secret");
    std::fs::write(&secret, "s").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let fifo = outside.join("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    for p in [&secret, &fifo] {
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        xattr::set_at(c.as_bytes(), HOME).unwrap();
    }
    std::fs::hard_link(&secret, root.join("sub/secret")).unwrap();
    std::fs::hard_link(&fifo, root.join("fifo")).unwrap();
    (root, secret, fifo)
}

/// The escape: a host file hard-linked into a volume must keep its
/// own label, on relabel (else the container reads it) and on restore
/// (else it gets the volume's label).
#[test]
fn a_file_linked_from_outside_keeps_its_label_on_relabel_and_restore() {
    require_root();
    let base = tempfile::tempdir().unwrap();
    let (root, secret, fifo) = volume_with_outside_links(base.path());
    let out = run(&root, PRIVATE, false);
    assert_eq!(out.totals.failed, 0, "{:?}", out.errors);
    assert_eq!(label(&secret).as_deref(), Some(HOME), "relabel escaped");
    assert_eq!(label(&fifo).as_deref(), Some(HOME), "relabel escaped");
    assert_eq!(out.totals.hardlinks_skipped, 2, "{out:?}");
    assert_eq!(
        out.hardlinks_skipped,
        vec![root.join("fifo"), root.join("sub/secret")]
    );
    // The root, sub and own were labeled: 5 entries seen in all.
    assert_eq!(
        (out.totals.seen, out.totals.changed, out.totals.unchanged),
        (5, 3, 0)
    );
    assert_eq!(label(&root.join("own")).as_deref(), Some(PRIVATE));

    // Restore (the walk with the root's original label) leaves them too.
    let restored = run(&root, ORIGINAL, false);
    assert_eq!(label(&secret).as_deref(), Some(HOME), "restore escaped");
    assert_eq!(label(&fifo).as_deref(), Some(HOME), "restore escaped");
    assert_eq!(restored.totals.hardlinks_skipped, 2);
    assert_eq!(label(&root.join("own")).as_deref(), Some(ORIGINAL));
}

/// Links that are all inside the tree are labeled, however the directories
/// holding them are spread over the workers; an inode is written once.
#[test]
fn hard_links_all_inside_the_tree_are_labeled() {
    require_root();
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("volume");
    let mut names = Vec::new();
    for d in 0..6 {
        std::fs::create_dir_all(root.join(format!("d{d}/deeper"))).unwrap();
    }
    for i in 0..20 {
        let first = root.join(format!("d0/f{i}"));
        std::fs::write(&first, "x").unwrap();
        names.push(first.clone());
        // Two or three names per inode, in other directories.
        for d in 1..(3 + i % 2) {
            let other = root.join(format!("d{d}/deeper/l{i}"));
            std::fs::hard_link(&first, &other).unwrap();
            names.push(other);
        }
    }
    let out = run(&root, PRIVATE, false);
    assert_eq!(out.totals.failed, 0, "{:?}", out.errors);
    assert_eq!(out.totals.hardlinks_skipped, 0, "{out:?}");
    assert!(out.hardlinks_skipped.is_empty());
    for n in &names {
        assert_eq!(label(n).as_deref(), Some(PRIVATE), "{}", n.display());
    }
    // 1 root + 12 directories + the names; 20 inodes written, the other
    // names found their label already right.
    assert_eq!(out.totals.seen, 13 + names.len() as u64);
    assert_eq!(out.totals.changed, 13 + 20);
    assert_eq!(out.totals.unchanged, names.len() as u64 - 20);
}

/// A worker writing create-only (it has just met unlabeled entries) that
/// meets the last link of an inode carrying another label: the create
/// fails, the worker falls back to reading and writing, and the inode is
/// labeled, having been counted once. One worker, so the unlabeled files of
/// the root come before the links in `links/` on the same thread.
#[test]
fn the_last_link_is_labeled_after_a_create_only_write_finds_a_label() {
    require_root();
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("volume");
    std::fs::create_dir_all(root.join("links")).unwrap();
    for i in 0..4 {
        std::fs::write(root.join(format!("new{i}")), "x").unwrap();
    }
    let first = root.join("links/a");
    std::fs::write(&first, "x").unwrap();
    let c = CString::new(first.as_os_str().as_bytes()).unwrap();
    xattr::set_at(c.as_bytes(), HOME).unwrap();
    std::fs::hard_link(&first, root.join("links/b")).unwrap();

    let out = run_by(&relabeler_with(1), &root, PRIVATE, false, false);
    assert_eq!(out.totals.failed, 0, "{:?}", out.errors);
    assert_eq!(out.totals.hardlinks_skipped, 0, "{out:?}");
    assert_eq!(label(&first).as_deref(), Some(PRIVATE));
    // root, links/, 4 new files and the inode written; its other name
    // counted as already right.
    assert_eq!(
        (out.totals.seen, out.totals.changed, out.totals.unchanged),
        (8, 7, 1)
    );
}

/// With the opt-in, hard-linked files are labeled whatever else links them.
#[test]
fn the_hard_links_opt_in_labels_a_file_linked_from_outside() {
    require_root();
    let base = tempfile::tempdir().unwrap();
    let (root, secret, fifo) = volume_with_outside_links(base.path());
    let out = run_with(&root, PRIVATE, false, true);
    assert_eq!(out.totals.failed, 0, "{:?}", out.errors);
    assert_eq!(out.totals.hardlinks_skipped, 0);
    assert!(out.hardlinks_skipped.is_empty());
    assert_eq!(label(&secret).as_deref(), Some(PRIVATE));
    assert_eq!(label(&fifo).as_deref(), Some(PRIVATE));
    // Without the opt-in, a run that finds their labels already right has
    // nothing to write: they are unchanged, not skipped (the link count is
    // asked only before a write).
    let again = run(&root, PRIVATE, false);
    assert_eq!(again.totals.failed, 0, "{:?}", again.errors);
    assert_eq!(again.totals.hardlinks_skipped, 0, "{again:?}");
    assert!(again.hardlinks_skipped.is_empty());
    assert_eq!(
        (
            again.totals.seen,
            again.totals.changed,
            again.totals.unchanged
        ),
        (5, 0, 5)
    );
    // And a restore with the opt-in gives them the root's original label.
    run_with(&root, ORIGINAL, false, true);
    assert_eq!(label(&secret).as_deref(), Some(ORIGINAL));
}

/// The root opened without `openat2` (kernels before 5.6): the same
/// refusals, one component at a time. The fallback is forced by handing
/// `open_root_with` an `openat2` that answers ENOSYS.
#[test]
fn without_openat2_a_root_is_opened_by_components_and_symlinks_are_refused() {
    let temp = tempfile::tempdir().unwrap();
    let real = temp.path().join("real").join("vol");
    std::fs::create_dir_all(&real).unwrap();
    std::os::unix::fs::symlink(temp.path().join("real"), temp.path().join("link")).unwrap();
    std::os::unix::fs::symlink(&real, temp.path().join("last")).unwrap();
    let nosys = |_: &Path| Err(rustix::io::Errno::NOSYS);

    let fd = open_root_with(&real, nosys).expect("a real directory opens");
    let opened = rustix::fs::fstat(&fd).unwrap();
    let expected = std::fs::metadata(&real).unwrap();
    assert_eq!(
        (opened.st_dev, opened.st_ino),
        (expected.dev(), expected.ino()),
        "the descriptor is the root's"
    );
    for through in [
        temp.path().join("link").join("vol"), // a symlinked component
        temp.path().join("last"),             // the root itself a symlink
        PathBuf::from("/proc/self/cwd"),      // a magic link
    ] {
        let err = open_root_with(&through, nosys).unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(libc_eloop()),
            "{}: {err}",
            through.display()
        );
    }
    let err = open_root_with(&temp.path().join("real/../real/vol"), nosys).unwrap_err();
    assert!(err.to_string().contains("not a resolved path"), "{err}");
    let err = open_root_with(Path::new("relative/vol"), nosys).unwrap_err();
    assert!(err.to_string().contains("not an absolute path"), "{err}");
    // Other errors of openat2 are not papered over by the fallback.
    let err = open_root_with(&real, |_| Err(rustix::io::Errno::XDEV)).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(rustix::io::Errno::XDEV.raw_os_error())
    );
}

fn libc_eloop() -> i32 {
    rustix::io::Errno::LOOP.raw_os_error()
}

/// A tree of `dirs` directories of `files` files each (plus a symlink in
/// each), every entry labeled `with` by a first relabel. Returns every
/// path in it, root included.
fn labeled_tree(root: &Path, dirs: usize, files: usize, with: &[u8]) -> Vec<PathBuf> {
    std::fs::create_dir_all(root).unwrap();
    let mut all = vec![root.to_owned()];
    for d in 0..dirs {
        let dir = root.join(format!("d{d}"));
        std::fs::create_dir(&dir).unwrap();
        all.push(dir.clone());
        for f in 0..files {
            let file = dir.join(format!("f{f:04}"));
            std::fs::write(&file, "x").unwrap();
            all.push(file);
        }
        let link = dir.join("link");
        std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
        all.push(link);
    }
    let out = run(root, with, false);
    assert_eq!(out.totals.failed, 0, "{:?}", out.errors);
    for p in &all {
        assert_eq!(label(p).as_deref(), Some(with), "{}", p.display());
    }
    all
}

fn ctimes(paths: &[PathBuf]) -> Vec<(i64, i64)> {
    paths
        .iter()
        .map(|p| {
            let m = std::fs::symlink_metadata(p).unwrap();
            (m.ctime(), m.ctime_nsec())
        })
        .collect()
}

/// A tree labeled otherwise (every volume under SELinux) is written blind
/// after the first reads, and still ends with every entry labeled, every
/// write counted once.
fn blind_mode_labels_every_entry(fstype: &str) {
    require_root();
    let base = tempfile::tempdir().unwrap();
    let _mount = (fstype == "tmpfs").then(|| Mount::new("tmpfs", &base.path().join("m")));
    let root = base.path().join("m/vol");
    let all = labeled_tree(&root, 4, 500, SHARED);
    let out = run(&root, PRIVATE, false);
    assert_eq!(
        (out.totals.changed, out.totals.unchanged, out.totals.failed),
        (all.len() as u64, 0, 0),
        "{:?}",
        out.errors
    );
    // Blind mode did run, for most entries: all but the reads that start
    // it and the probes.
    assert!(
        out.totals.blind > all.len() as u64 / 2,
        "{} of {} written blind",
        out.totals.blind,
        all.len()
    );
    for p in &all {
        assert_eq!(label(p).as_deref(), Some(PRIVATE), "{}", p.display());
    }
    // The symlinks' target was not touched.
    assert_ne!(label(Path::new("/etc/passwd")).as_deref(), Some(PRIVATE));
}

#[test]
fn a_tree_labeled_otherwise_ends_fully_labeled_in_blind_mode_on_ext4() {
    blind_mode_labels_every_entry("ext4");
}

#[test]
fn a_tree_labeled_otherwise_ends_fully_labeled_in_blind_mode_on_tmpfs() {
    blind_mode_labels_every_entry("tmpfs");
}

/// How many attribute writes (`setxattr` calls among them) the kernel
/// reports on `dirs` and their entries while `f` runs: inotify's
/// `IN_ATTRIB`, sent for every successful `setxattr`, even one that ext4
/// turns into nothing because the value is the same (it keeps the ctime
/// then, so ctimes alone cannot tell a rewrite there).
fn attribute_writes<T>(dirs: &[&Path], f: impl FnOnce() -> T) -> (T, usize) {
    use rustix::fs::inotify;
    let fd = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC).unwrap();
    for d in dirs {
        inotify::add_watch(&fd, *d, inotify::WatchFlags::ATTRIB).unwrap();
    }
    let out = f();
    let mut buf = [std::mem::MaybeUninit::uninit(); 1 << 16];
    let mut reader = inotify::Reader::new(&fd, &mut buf);
    let mut n = 0;
    loop {
        match reader.next() {
            Ok(_) => n += 1,
            Err(rustix::io::Errno::AGAIN) => break,
            Err(e) => panic!("reading inotify events: {e}"),
        }
    }
    (out, n)
}

/// After a relabel that went blind, a second one over the same tree only
/// reads: no label written, no ctime moved,
/// and no `setxattr` made (counted through inotify).
fn second_run_writes_nothing(fstype: &str) {
    require_root();
    let base = tempfile::tempdir().unwrap();
    let _mount = (fstype == "tmpfs").then(|| Mount::new("tmpfs", &base.path().join("m")));
    let root = base.path().join("m/vol");
    let all = labeled_tree(&root, 4, 500, SHARED);
    let first = run(&root, PRIVATE, false);
    assert!(first.totals.blind > 0, "the first run went blind");
    let before = ctimes(&all);
    std::thread::sleep(Duration::from_millis(20));
    let dirs: Vec<&Path> = all
        .iter()
        .filter(|p| p.symlink_metadata().unwrap().is_dir())
        .map(|p| p.as_path())
        .collect();
    let (second, writes) = attribute_writes(&dirs, || run(&root, PRIVATE, false));
    assert_eq!(writes, 0, "the second run wrote {writes} attributes");
    assert_eq!(
        (
            second.totals.changed,
            second.totals.blind,
            second.totals.unchanged,
            second.totals.failed
        ),
        (0, 0, all.len() as u64, 0)
    );
    let after = ctimes(&all);
    let moved = all
        .iter()
        .zip(before.iter().zip(&after))
        .filter(|(_, (b, a))| b != a)
        .count();
    assert_eq!(moved, 0, "{moved} entries rewritten by the second run");
}

#[test]
fn a_second_run_over_a_labeled_tree_writes_nothing_on_ext4() {
    second_run_writes_nothing("ext4");
}

#[test]
fn a_second_run_over_a_labeled_tree_writes_nothing_on_tmpfs() {
    second_run_writes_nothing("tmpfs");
}

/// A tree mostly right, a few entries wrong here and there: never blind,
/// so `changed` is exact and right entries keep their ctime.
#[test]
fn a_mostly_right_tree_never_goes_blind() {
    require_root();
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("vol");
    let all = labeled_tree(&root, 2, 500, PRIVATE);
    // One file in ten, directories left right.
    let wrong: Vec<&PathBuf> = all
        .iter()
        .filter(|p| p.symlink_metadata().unwrap().is_file())
        .step_by(10)
        .collect();
    for p in &wrong {
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        xattr::set_at(c.as_bytes(), SHARED).unwrap();
    }
    let right: Vec<PathBuf> = all.iter().filter(|p| !wrong.contains(p)).cloned().collect();
    let before = ctimes(&right);
    std::thread::sleep(Duration::from_millis(20));
    let dirs = [root.join("d0"), root.join("d1")];
    let dirs: Vec<&Path> = dirs.iter().map(|d| d.as_path()).collect();
    let (out, writes) = attribute_writes(&dirs, || run(&root, PRIVATE, false));
    assert_eq!(
        (out.totals.changed, out.totals.blind, out.totals.unchanged),
        (wrong.len() as u64, 0, right.len() as u64)
    );
    // Exactly the wrong files were written (ext4 keeps the ctime of a
    // same-value write, so the ctimes below alone would not tell).
    assert_eq!(writes, wrong.len());
    assert_eq!(before, ctimes(&right), "a right label was rewritten");
    for p in &all {
        assert_eq!(label(p).as_deref(), Some(PRIVATE), "{}", p.display());
    }
}

/// After blind mode, a release restores the original labels everywhere.
#[test]
fn restore_after_a_blind_relabel_gives_back_the_original_labels() {
    require_root();
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("vol");
    let all = labeled_tree(&root, 3, 400, ORIGINAL);
    let out = run(&root, PRIVATE, false);
    assert!(out.totals.blind > 0, "the relabel went blind");
    let back = run(&root, ORIGINAL, false);
    assert_eq!(
        (back.totals.changed, back.totals.failed),
        (all.len() as u64, 0)
    );
    for p in &all {
        assert_eq!(label(p).as_deref(), Some(ORIGINAL), "{}", p.display());
    }
}
