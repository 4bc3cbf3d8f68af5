//! Restore-by-policy benchmark: mcsd's `[relabel] restore = "policy"` (each
//! entry gets what the policy's file contexts say, written only where it
//! differs) against `setfiles -F SPEC DIR`, on a tree of 100k entries
//! (the relabel bench's shape) on ext4 that a container left labeled
//! `container_file_t:s0:c1,c2`, and again on the restored tree.
//!
//! `restorecon -R -F DIR` is `setfiles` in restorecon mode (the same
//! binary, the same `selinux_restorecon()` walk in libselinux), but it
//! takes the file contexts from the loaded policy and, where SELinux is
//! disabled, exits 0 without touching anything; `setfiles` takes the
//! file_contexts path as its argument and works there, so it stands for
//! restorecon here. It is timed single-threaded (restorecon's and
//! setfiles' default) and with `-T 0` (one thread per core).
//!
//! Both read the same file_contexts: `MCSD_RESTORE_BENCH_FILE_CONTEXTS`, or
//! the installed policy's (Debian's `selinux-policy-default`, Fedora's
//! `selinux-policy-targeted`; `./dev.sh bench-deps`). Installing a policy
//! does not enable SELinux. The tree is made under /var/lib (the policy
//! gives it `var_lib_t`, as it does to podman's volumes there; under /tmp
//! the policy says `<<none>>` and neither tool would write anything).
//!
//! Besides wall time it prints the CPU time each took (user + system, all
//! threads; setfiles' from its rusage), which a busy machine disturbs less.
//!
//! Target on the 2-core machine: mcsd ≥ 2× `setfiles -F` (single-threaded,
//! what `restorecon -R -F` does). Needs root (security.* xattrs).
//! `MCSD_RESTORE_BENCH_SIZES=10000` picks the sizes.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{build, timed};
use mcsd::relabel::{Counters, Fixed, FromPolicy, LabelFor, RelabelConfig, Relabeler};

mod common;

const CONTAINER: &str = "system_u:object_r:container_file_t:s0:c1,c2";

fn main() {
    common::require_root("the restore bench writes security.selinux xattrs");
    let sizes = common::sizes("MCSD_RESTORE_BENCH_SIZES", &[100_000]);
    let file_contexts = file_contexts();
    // With no arguments setfiles prints its usage; only a missing binary fails to run.
    if let Err(e) = Command::new("setfiles").output() {
        panic!(
            "the restore bench compares mcsd with setfiles and cannot run it ({e}): install \
             policycoreutils (`./dev.sh bench-deps`)"
        );
    }
    let policy = FromPolicy::with_file_contexts(&file_contexts)
        .unwrap_or_else(|e| panic!("mcsd cannot read {}: {e}", file_contexts.display()));
    println!(
        "mcsd restore-by-policy benchmark ({} cores); file contexts {}; files/s, higher is better",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        file_contexts.display()
    );
    println!("target: container-labeled tree >= 2x setfiles -F (what restorecon -R -F does)");
    println!();
    println!(
        "{:<6} {:>9} {:<9} {:>10} {:>10} {:>10} {:>10} {:>11}",
        "fs", "entries", "tree", "setfiles", "setfiles", "mcsd", "mcsd/sf", "mcsd/sf -T0"
    );
    println!(
        "{:<6} {:>9} {:<9} {:>10} {:>10}",
        "", "", "", "-F", "-F -T 0"
    );
    for &size in &sizes {
        let base = tempfile::Builder::new()
            .prefix("mcsd-restore-bench.")
            .tempdir_in("/var/lib")
            .expect("tempdir in /var/lib");
        let root = base.path().join("volume");
        let entries = build(&root, size);
        let expected = policy_label(&policy, &root);
        let setfiles = |threads: bool| {
            let mut cmd = Command::new("setfiles");
            cmd.arg("-F");
            if threads {
                cmd.args(["-T", "0"]);
            }
            let out = cmd
                .arg(&file_contexts)
                .arg(&root)
                .output()
                .expect("run setfiles");
            assert!(
                out.status.success(),
                "setfiles failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let restore = || mcsd(&root, &policy);
        // A container's volume at release: every entry carries its label.
        let contained = || assert_eq!(mcsd(&root, &Fixed(CONTAINER.into())).failed, 0);
        contained();
        let sf = timed(|| setfiles(false));
        check(&root, &expected);
        contained();
        let sf_t = timed(|| setfiles(true));
        check(&root, &expected);
        contained();
        let ours = timed(|| assert_eq!(restore().changed, entries as u64));
        check(&root, &expected);
        // Already restored: both only read and look up.
        let sf_again = timed(|| setfiles(false));
        let sf_t_again = timed(|| setfiles(true));
        let again = timed(|| assert_eq!(restore().unchanged, entries as u64));
        let rate = |d: Duration| entries as f64 / d.as_secs_f64();
        let ratio = |peer: Duration, ours: Duration| peer.as_secs_f64() / ours.as_secs_f64();
        for (tree, sf, sf_t, ours) in [
            ("container", sf, sf_t, ours),
            ("restored", sf_again, sf_t_again, again),
        ] {
            println!(
                "{:<6} {:>9} {:<9} {:>10.0} {:>10.0} {:>10.0} {:>9.2}x {:>10.2}x",
                "ext4",
                entries,
                tree,
                rate(sf.wall),
                rate(sf_t.wall),
                rate(ours.wall),
                ratio(sf.wall, ours.wall),
                ratio(sf_t.wall, ours.wall),
            );
            println!(
                "{:<6} {:>9} {:<9} {:>9.2}s {:>9.2}s {:>9.2}s {:>9.2}x {:>10.2}x",
                "",
                "",
                "  cpu",
                sf.cpu.as_secs_f64(),
                sf_t.cpu.as_secs_f64(),
                ours.cpu.as_secs_f64(),
                ratio(sf.cpu, ours.cpu),
                ratio(sf_t.cpu, ours.cpu),
            );
        }
    }
}

/// The file_contexts both tools read.
fn file_contexts() -> PathBuf {
    if let Some(path) = std::env::var_os("MCSD_RESTORE_BENCH_FILE_CONTEXTS") {
        return path.into();
    }
    ["default", "targeted"]
        .iter()
        .map(|policy| {
            PathBuf::from(format!(
                "/etc/selinux/{policy}/contexts/files/file_contexts"
            ))
        })
        .find(|path| path.exists())
        .unwrap_or_else(|| {
            panic!(
                "the restore bench needs a policy's file contexts: install Debian's \
                 selinux-policy-default and policycoreutils (`./dev.sh bench-deps`), or set \
                 MCSD_RESTORE_BENCH_FILE_CONTEXTS"
            )
        })
}

/// What the policy gives `root` (a directory): every entry of the tree
/// gets it too under /var/lib, which [`check`] verifies after each pass.
fn policy_label(policy: &FromPolicy, root: &Path) -> Vec<u8> {
    let label = policy
        .label_for(root, mcsd::relabel::Kind::Dir)
        .expect("look up")
        .unwrap_or_else(|| panic!("the policy has no label for {}", root.display()))
        .into_owned();
    assert_ne!(
        label,
        CONTAINER.as_bytes(),
        "the policy must change the tree"
    );
    label
}

/// Every entry under `path` has `label`: the pass restored the whole tree.
fn check(path: &Path, label: &[u8]) {
    let mut buf = [0u8; 256];
    let n = rustix::fs::lgetxattr(path.as_os_str().as_bytes(), "security.selinux", &mut buf)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let got = buf[..n].strip_suffix(b"\0").unwrap_or(&buf[..n]);
    assert_eq!(
        got,
        label,
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(got)
    );
    if std::fs::symlink_metadata(path).unwrap().is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            check(&entry.unwrap().path(), label);
        }
    }
}

fn mcsd(root: &Path, labels: &dyn LabelFor) -> mcsd::relabel::Totals {
    let relabeler = Relabeler::new(
        RelabelConfig {
            threads: 0, // the default: one per core
            ..Default::default()
        },
        Path::new("/var/lib/mcsd"),
    );
    let resolved = relabeler.resolve(root).expect("root allowed");
    let out = relabeler
        .run(&resolved, labels, false, false, &Counters::default())
        .expect("restore");
    assert_eq!(out.totals.failed, 0, "{:?}", out.errors);
    out.totals
}
