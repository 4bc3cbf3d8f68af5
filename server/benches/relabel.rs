//! Relabel benchmark: files per second on trees of 100k and 1M entries
//! (directories of ~100 entries, 3 levels, 2 % symlinks) on ext4 (the
//! temp dir) and tmpfs (mounted here), for, in one run:
//! - `chcon -R -h LABEL DIR` (coreutils): what tools do today;
//! - a bare 2-thread read_dir + lsetxattr loop: the floor, writing blindly;
//! - mcsd's relabeler on a tree that needs every label (fresh: labeled
//!   otherwise, as every volume is under SELinux);
//! - mcsd's relabeler on a tree that is already labeled (read-only);
//! - the bare loop and mcsd on a new tree without labels (what a fresh
//!   volume is where SELinux is disabled).
//!
//! Targets on the 2-core machine: fresh ≥ 2.2× chcon and ≥ 0.95× the bare
//! loop; already labeled ≥ 2.5× chcon. Needs root (security.* xattrs,
//! mounting tmpfs). `MCSD_RELABEL_BENCH_SIZES=100000` picks the sizes.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mcsd::relabel::{Counters, Fixed, RelabelConfig, Relabeler};

const LABELS: [&str; 4] = [
    "system_u:object_r:container_file_t:s0:c1,c2",
    "system_u:object_r:container_file_t:s0:c3,c4",
    "system_u:object_r:container_file_t:s0:c5,c6",
    "system_u:object_r:container_file_t:s0:c7,c8",
];

fn main() {
    assert_eq!(
        rustix::process::geteuid().as_raw(),
        0,
        "the relabel bench writes security.selinux xattrs and mounts tmpfs: run it as root"
    );
    let sizes: Vec<usize> = std::env::var("MCSD_RELABEL_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100_000, 1_000_000]);
    println!(
        "mcsd relabel benchmark ({} cores); files/s, higher is better",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("targets: fresh >= 2.2x chcon and >= 0.95x bare loop; already labeled >= 2.5x chcon");
    println!();
    println!(
        "{:<6} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "fs",
        "entries",
        "chcon",
        "bare",
        "mcsd",
        "mcsd",
        "bare",
        "mcsd",
        "fresh/ch",
        "fresh/bare",
        "new/bare",
        "again/ch"
    );
    println!(
        "{:<6} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "", "", "", "", "fresh", "again", "(new)", "(new)"
    );
    for &size in &sizes {
        for fs in ["ext4", "tmpfs"] {
            let base = tempfile::tempdir().expect("tempdir");
            let _mount = (fs == "tmpfs").then(|| Tmpfs::mount(&base.path().join("tmpfs")));
            let root = if fs == "tmpfs" {
                base.path().join("tmpfs/tree")
            } else {
                base.path().join("tree")
            };
            let entries = build(&root, size);
            let rate = |d: Duration| entries as f64 / d.as_secs_f64();
            // A new tree has no labels where SELinux is disabled: measure
            // that first, for the floor and for mcsd (labels removed in
            // between, unmeasured).
            let bare_new = time(|| bare_loop(&root, LABELS[3]));
            unlabel(&root);
            let new = time(|| assert_eq!(mcsd(&root, LABELS[3]).changed, entries as u64));
            // Then a tree labeled otherwise: what every volume is under SELinux.
            let chcon = time(|| {
                let ok = Command::new("chcon")
                    .args(["-R", "-h", LABELS[0]])
                    .arg(&root)
                    .status()
                    .expect("run chcon")
                    .success();
                assert!(ok, "chcon failed");
            });
            let bare = time(|| bare_loop(&root, LABELS[1]));
            let fresh = time(|| assert_eq!(mcsd(&root, LABELS[2]).changed, entries as u64));
            let again = time(|| assert_eq!(mcsd(&root, LABELS[2]).unchanged, entries as u64));
            println!(
                "{:<6} {:>9} {:>10.0} {:>10.0} {:>10.0} {:>10.0} {:>10.0} {:>10.0} {:>8.2}x {:>8.2}x {:>8.2}x {:>8.2}x",
                fs,
                entries,
                rate(chcon),
                rate(bare),
                rate(fresh),
                rate(again),
                rate(bare_new),
                rate(new),
                chcon.as_secs_f64() / fresh.as_secs_f64(),
                bare.as_secs_f64() / fresh.as_secs_f64(),
                bare_new.as_secs_f64() / new.as_secs_f64(),
                chcon.as_secs_f64() / again.as_secs_f64(),
            );
        }
    }
}

/// Removes every label under `root` (not measured).
fn unlabel(path: &Path) {
    let _ = rustix::fs::lremovexattr(path.as_os_str().as_bytes(), "security.selinux");
    if std::fs::symlink_metadata(path).unwrap().is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                unlabel(&entry.path());
            } else {
                let _ = rustix::fs::lremovexattr(
                    entry.path().as_os_str().as_bytes(),
                    "security.selinux",
                );
            }
        }
    }
}

/// Times one pass, after writing back what earlier passes dirtied (so no
/// pass pays for another's writeback).
fn time(f: impl FnOnce()) -> Duration {
    rustix::fs::sync();
    let started = Instant::now();
    f();
    started.elapsed()
}

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8g,nr_inodes=0", "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount")
            .success();
        assert!(ok, "mount tmpfs failed");
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Builds about `size` entries: 3 levels of directories, leaves of 100
/// entries of which 2 are symlinks. Returns the exact count, root included.
fn build(root: &Path, size: usize) -> usize {
    let leaves = size.div_ceil(100).max(1);
    let fan = (leaves as f64).cbrt().ceil() as usize;
    let mut count = 1;
    std::fs::create_dir_all(root).unwrap();
    let mut made = 0;
    'outer: for a in 0..fan {
        for b in 0..fan {
            for c in 0..fan {
                if made == leaves {
                    break 'outer;
                }
                let dir = root.join(format!("a{a}/b{b}/c{c}"));
                let new_dirs = [root.join(format!("a{a}")), root.join(format!("a{a}/b{b}"))]
                    .iter()
                    .filter(|d| !d.exists())
                    .count();
                std::fs::create_dir_all(&dir).unwrap();
                count += new_dirs + 1;
                for f in 0..98 {
                    std::fs::File::create(dir.join(format!("f{f}"))).unwrap();
                }
                std::os::unix::fs::symlink("/etc/passwd", dir.join("l0")).unwrap();
                std::os::unix::fs::symlink("../..", dir.join("l1")).unwrap();
                count += 100;
                made += 1;
            }
        }
    }
    count
}

/// The floor: two threads, read_dir and lsetxattr by path, no reads.
fn bare_loop(root: &Path, label: &str) {
    let mut value = label.as_bytes().to_vec();
    value.push(0);
    set(root, &value);
    let tops: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let queue = Mutex::new(tops);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| loop {
                let Some(dir) = queue.lock().unwrap().pop() else {
                    return;
                };
                walk(&dir, &value);
            });
        }
    });
}

fn walk(path: &Path, value: &[u8]) {
    set(path, value);
    if std::fs::symlink_metadata(path).unwrap().is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                walk(&entry.path(), value);
            } else {
                set(&entry.path(), value);
            }
        }
    }
}

fn set(path: &Path, value: &[u8]) {
    rustix::fs::lsetxattr(
        path.as_os_str().as_bytes(),
        "security.selinux",
        value,
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
}

fn mcsd(root: &Path, label: &str) -> mcsd::relabel::Totals {
    let relabeler = Relabeler::new(
        RelabelConfig {
            threads: 0, // the default: one per core
            ..Default::default()
        },
        Path::new("/var/lib/mcsd"),
    );
    let resolved = relabeler.resolve(root).expect("root allowed");
    let out = relabeler
        .run(
            &resolved,
            &Fixed(label.as_bytes().to_vec()),
            false,
            false,
            &Counters::default(),
        )
        .expect("relabel");
    assert_eq!(out.totals.failed, 0, "{:?}", out.errors);
    out.totals
}
