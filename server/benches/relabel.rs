//! Relabel benchmark: files per second on trees of 100k and 1M entries
//! (directories of ~100 entries, 3 levels, 2 % symlinks) on ext4 (the
//! temp dir) and tmpfs (mounted here), for, in one run:
//! - `chcon -R -h LABEL DIR` (coreutils): what tools do today;
//! - go-selinux's recursive relabel, as podman, CRI-O and docker do it for
//!   a volume mounted with `:Z` (`label.Relabel` → `selinux.Chcon` → a
//!   parallel `pwalkdir` walk writing every label): the peer in
//!   `benches/peers/goselinux`, built here at run time with Debian's
//!   `golang-go` and `golang-github-opencontainers-selinux-dev` (`./dev.sh
//!   bench-deps`); its main.go says which part of podman's path it skips;
//! - a bare 2-thread read_dir + lsetxattr loop: the floor, writing blindly;
//! - mcsd's relabeler; on `other` also with hard links allowed (the
//!   opt-in `--hard-links`), which saves the `fstatat` per entry that the
//!   default pays to find a link count (go-selinux has no such check, and
//!   so labels a file hard-linked in from outside): the column says what
//!   that safety costs;
//!
//! each on three trees: `other`, labeled otherwise (as every volume is
//! under SELinux); `same`, already labeled with the label asked (a
//! container started again on its volume: mcsd only reads, go-selinux
//! rewrites every label); `new`, without labels (what a fresh volume is
//! where SELinux is disabled).
//!
//! Each row has a second line with the CPU time (user + system, all
//! threads and waited-for children) each took and mcsd's ratios in CPU:
//! a busy machine disturbs them less than wall time, and they do not
//! favour whichever tool runs more threads than another.
//!
//! Targets on the 2-core machine: `other` ≥ 2.2× chcon, ≥ 1.5× go-selinux
//! and ≥ 0.95× the bare loop; `same` ≥ 2.5× chcon (its chcon figure is the
//! `other` run) and ≥ 3× go-selinux. Needs root (security.* xattrs,
//! mounting tmpfs). `MCSD_RELABEL_BENCH_SIZES=100000` picks the sizes.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use common::{build, cpu_now, timed, Timed};
use mcsd::relabel::{Counters, Fixed, RelabelConfig, Relabeler};

mod common;

const LABELS: [&str; 5] = [
    "system_u:object_r:container_file_t:s0:c1,c2",
    "system_u:object_r:container_file_t:s0:c3,c4",
    "system_u:object_r:container_file_t:s0:c5,c6",
    "system_u:object_r:container_file_t:s0:c7,c8",
    "system_u:object_r:container_file_t:s0:c9,c10",
];

fn main() {
    common::require_root("the relabel bench writes security.selinux xattrs and mounts tmpfs");
    let sizes = common::sizes("MCSD_RELABEL_BENCH_SIZES", &[100_000, 1_000_000]);
    let goselinux = build_goselinux();
    println!(
        "mcsd relabel benchmark ({} cores); files/s, higher is better; ratios are mcsd's speed over the peer's",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "targets: other >= 2.2x chcon, >= 1.5x go-selinux, >= 0.95x bare; same >= 2.5x chcon, >= 3x go-selinux"
    );
    println!();
    println!(
        "{:<6} {:>9} {:<6} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>10} {:>9}",
        "fs",
        "entries",
        "tree",
        "chcon",
        "go-selinux",
        "bare",
        "mcsd",
        "mcsd/go",
        "mcsd/ch",
        "mcsd/bare",
        "mcsd+links",
        "+links/go"
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
            // Wall time is the peer's own timing of its walk, without its
            // process start (podman walks inside its running process); CPU
            // is its whole process's (the Go runtime's start adds a few ms).
            let go = |label: &str| {
                rustix::fs::sync();
                let before = cpu_now();
                let out = Command::new(&goselinux)
                    .args(["Z", label])
                    .arg(&root)
                    .output()
                    .expect("run the go-selinux peer");
                assert!(
                    out.status.success(),
                    "the go-selinux peer failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let nanos = String::from_utf8_lossy(&out.stdout);
                Timed {
                    wall: Duration::from_nanos(
                        nanos.trim().parse().expect("the peer prints nanoseconds"),
                    ),
                    cpu: cpu_now() - before,
                }
            };
            // A new tree has no labels where SELinux is disabled: measure
            // that first, for each (labels removed in between, unmeasured).
            let bare_new = timed(|| bare_loop(&root, LABELS[3]));
            unlabel(&root);
            let go_new = go(LABELS[3]);
            unlabel(&root);
            let new = timed(|| assert_eq!(mcsd(&root, LABELS[3]).changed, entries as u64));
            // Then a tree labeled otherwise: what every volume is under
            // SELinux. Each pass leaves a label the next one changes.
            let chcon = timed(|| {
                let ok = Command::new("chcon")
                    .args(["-R", "-h", LABELS[0]])
                    .arg(&root)
                    .status()
                    .expect("run chcon")
                    .success();
                assert!(ok, "chcon failed");
            });
            let bare = timed(|| bare_loop(&root, LABELS[1]));
            let go_other = go(LABELS[2]);
            let links =
                timed(|| assert_eq!(mcsd_with(&root, LABELS[4], true).changed, entries as u64));
            let other = timed(|| assert_eq!(mcsd(&root, LABELS[3]).changed, entries as u64));
            // Then the same label again.
            let same = timed(|| assert_eq!(mcsd(&root, LABELS[3]).unchanged, entries as u64));
            let go_same = go(LABELS[3]);
            check_labeled(&root, LABELS[3]);
            let rate = |t: Timed| format!("{:.0}", entries as f64 / t.wall.as_secs_f64());
            let ratio = |peer: Duration, ours: Duration| {
                format!("{:.2}x", peer.as_secs_f64() / ours.as_secs_f64())
            };
            let secs = |t: Timed| format!("{:.2}s", t.cpu.as_secs_f64());
            let rows = [
                (
                    "other",
                    Some(chcon),
                    go_other,
                    Some(bare),
                    other,
                    Some(links),
                ),
                ("same", None, go_same, None, same, None),
                ("new", None, go_new, Some(bare_new), new, None),
            ];
            for (tree, chcon_t, go_t, bare_t, ours, links_t) in rows {
                let dash = || "-".to_string();
                println!(
                    "{:<6} {:>9} {:<6} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>10} {:>9}",
                    fs,
                    entries,
                    tree,
                    chcon_t.map_or_else(dash, rate),
                    rate(go_t),
                    bare_t.map_or_else(dash, rate),
                    rate(ours),
                    ratio(go_t.wall, ours.wall),
                    // `same` is compared with chcon's run on `other`.
                    ratio(chcon.wall, ours.wall),
                    bare_t.map_or_else(dash, |b| ratio(b.wall, ours.wall)),
                    links_t.map_or_else(dash, rate),
                    links_t.map_or_else(dash, |l| ratio(go_t.wall, l.wall)),
                );
                println!(
                    "{:<6} {:>9} {:<6} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>10} {:>9}",
                    "",
                    "",
                    "  cpu",
                    chcon_t.map_or_else(dash, secs),
                    secs(go_t),
                    bare_t.map_or_else(dash, secs),
                    secs(ours),
                    ratio(go_t.cpu, ours.cpu),
                    ratio(chcon.cpu, ours.cpu),
                    bare_t.map_or_else(dash, |b| ratio(b.cpu, ours.cpu)),
                    links_t.map_or_else(dash, secs),
                    links_t.map_or_else(dash, |l| ratio(go_t.cpu, l.cpu)),
                );
            }
        }
    }
}

/// Builds the go-selinux peer into the target directory, offline, from
/// Debian's packages (GOPATH mode). Fails, naming the packages, when the Go
/// toolchain or go-selinux's source is missing: the comparison is the
/// point of this bench, so it does not skip it.
fn build_goselinux() -> PathBuf {
    const GOPATH: &str = "/usr/share/gocode";
    const PACKAGES: &str = "golang-go golang-github-opencontainers-selinux-dev";
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers/goselinux");
    let missing = |what: &str| -> ! {
        panic!(
            "the relabel bench compares mcsd with go-selinux and needs {what}: \
             install Debian's {PACKAGES} (`./dev.sh bench-deps`)"
        )
    };
    if !Path::new(GOPATH)
        .join("src/github.com/opencontainers/selinux/go-selinux")
        .is_dir()
    {
        missing(&format!("go-selinux's source in {GOPATH}"));
    }
    // target/<profile>/deps/relabel-HASH → target/<profile>/peers.
    let exe = std::env::current_exe().expect("current_exe");
    let out_dir = exe
        .ancestors()
        .nth(2)
        .expect("the bench runs from target/<profile>/deps")
        .join("peers");
    std::fs::create_dir_all(&out_dir).expect("create target/<profile>/peers");
    let binary = out_dir.join("goselinux");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(&source)
        .env("GOPATH", GOPATH)
        .env("GO111MODULE", "off")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "")
        .env("GOCACHE", out_dir.join("gocache"))
        .status();
    match status {
        Ok(s) if s.success() => binary,
        Ok(s) => panic!(
            "go build of {} failed ({s}); it needs Debian's {PACKAGES} (`./dev.sh bench-deps`)",
            source.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing("the Go toolchain (go)"),
        Err(e) => panic!("cannot run go: {e}"),
    }
}

/// Every entry under `root` has `label` (the last pass, go-selinux's,
/// wrote it): each peer really walked the whole tree.
fn check_labeled(path: &Path, label: &str) {
    let mut buf = [0u8; 256];
    let n = rustix::fs::lgetxattr(path.as_os_str().as_bytes(), "security.selinux", &mut buf)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let got = buf[..n].strip_suffix(b"\0").unwrap_or(&buf[..n]);
    assert_eq!(got, label.as_bytes(), "{}", path.display());
    if std::fs::symlink_metadata(path).unwrap().is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            check_labeled(&entry.unwrap().path(), label);
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
    mcsd_with(root, label, false)
}

/// mcsd's relabeler; `hard_links` as `mcsctl relabel --hard-links`.
fn mcsd_with(root: &Path, label: &str, hard_links: bool) -> mcsd::relabel::Totals {
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
            hard_links,
            &Counters::default(),
        )
        .expect("relabel");
    assert_eq!(out.totals.failed, 0, "{:?}", out.errors);
    out.totals
}
