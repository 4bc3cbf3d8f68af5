//! What the relabel and restore benches share: the trees and the timing.

use std::path::Path;
use std::time::{Duration, Instant};

/// Times one pass, after writing back what earlier passes dirtied (so no
/// pass pays for another's writeback).
pub(crate) fn time(f: impl FnOnce()) -> Duration {
    rustix::fs::sync();
    let started = Instant::now();
    f();
    started.elapsed()
}

/// Wall and CPU time of one pass.
#[derive(Clone, Copy)]
pub(crate) struct Timed {
    pub wall: Duration,
    /// User + system time of this process (all threads) and of the
    /// children it waited for meanwhile: what a busy machine disturbs
    /// less than wall time.
    pub cpu: Duration,
}

/// [`time`], and the CPU the pass took.
pub(crate) fn timed(f: impl FnOnce()) -> Timed {
    let mut before = Duration::ZERO;
    let wall = time(|| {
        before = cpu_now();
        f()
    });
    Timed {
        wall,
        cpu: cpu_now() - before,
    }
}

/// User + system time so far of this process and its waited-for children.
pub(crate) fn cpu_now() -> Duration {
    let mut total = Duration::ZERO;
    for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
        // SAFETY: rusage is plain C data, for which all zeroes is valid.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage only fills the struct it is given.
        assert_eq!(unsafe { libc::getrusage(who, &mut usage) }, 0);
        for t in [usage.ru_utime, usage.ru_stime] {
            total += Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        }
    }
    total
}

/// Builds about `size` entries: 3 levels of directories, leaves of 100
/// entries of which 2 are symlinks. Returns the exact count, root included.
pub(crate) fn build(root: &Path, size: usize) -> usize {
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

/// Fails unless run as root, saying why the bench needs it.
pub(crate) fn require_root(why: &str) {
    assert_eq!(
        rustix::process::geteuid().as_raw(),
        0,
        "{why}: run it as root"
    );
}

/// Tree sizes from the comma-separated variable `var`, else `default`.
pub(crate) fn sizes(var: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(var)
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}
