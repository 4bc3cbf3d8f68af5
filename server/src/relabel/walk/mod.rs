//! The tree walk: parallel over directories, relative to directory
//! descriptors, never following a symlink, writing only labels that differ.
//!
//! Each directory is a job. Workers keep their own LIFO deque (depth-first,
//! so few directories are pending at once) and steal from the others when
//! idle. A job holds its parent's descriptor and its own name, and is opened
//! with `O_NOFOLLOW | O_DIRECTORY` only when a worker takes it: memory and
//! open descriptors grow with the tree's depth and the pending directories,
//! never with the number of files.
//!
//! Reads before writes: every entry's label is read and written only if
//! it differs, so a second run over a labeled tree writes nothing. On a
//! tree labeled otherwise that is two syscalls an entry; a worker whose
//! recent reads all differed writes blind instead (one syscall), probing
//! now and then: see [`BLIND_AFTER`], [`PROBE_EVERY`] and
//! [`Totals::blind`].
//!
//! Hard links: an entry that is not a directory and has more than one link
//! (`st_nlink > 1`) may share its inode with a name outside the tree (a
//! root-only file linked into a volume), and a label is the inode's, not
//! the name's. So unless [`Options::hard_links`] says otherwise, the walk
//! counts the names it meets per `(st_dev, st_ino)` and labels such an
//! inode only when it has met all of its links, through the last one;
//! inodes with links it never met are left as they are, counted in
//! [`Totals::hardlinks_skipped`] and named in the walk's [`HardLinks`].
//! The link count costs a `statat`, so it is asked only before a write: an
//! entry whose label is already the one wanted is left unchanged and
//! counted so without it (reading a label changes nothing, whatever else
//! links to the inode), which keeps a second run over a labeled tree at
//! one syscall an entry.

mod counters;
mod entries;
mod hardlinks;
mod streak;

use std::borrow::Cow;
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_deque::{Injector, Steal, Stealer, Worker};

use super::mounts::{self, MountPoints};
use super::xattr;
pub use counters::{Counters, Totals};
pub use hardlinks::HardLinks;
use streak::Streak;
pub use streak::{BLIND_AFTER, PROBE_EVERY};

/// What kind of entry a label is for (policy lookups depend on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link (the link itself).
    Symlink,
    /// A fifo, socket or device node.
    Other,
}

/// Decides the label each entry should have.
pub trait LabelFor: Sync {
    /// The one label every entry gets, if it does not depend on the entry:
    /// lets the walk skip building paths.
    fn fixed(&self) -> Option<&[u8]>;
    /// The label for the entry at `path`; `None` leaves it as it is.
    fn label_for(&self, path: &Path, kind: Kind) -> Result<Option<Cow<'_, [u8]>>, String>;
}

/// One entry that could not be labeled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryError {
    /// Where.
    pub path: PathBuf,
    /// Why.
    pub error: String,
}

/// How many entry errors are kept with their paths; the rest are counted.
pub const KEPT_ERRORS: usize = 8;

/// Walk settings.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Enter file systems mounted below the root.
    pub cross_mounts: bool,
    /// Worker threads.
    pub threads: usize,
    /// Label entries with several hard links even when the walk does not
    /// meet all of them (some may be outside the tree). Off by default:
    /// see the module documentation.
    pub hard_links: bool,
}

enum Source {
    Root(OwnedFd),
    Child { parent: Arc<OwnedFd>, name: CString },
}

struct Job {
    source: Source,
    path: PathBuf,
}

struct Shared<'a> {
    labels: &'a dyn LabelFor,
    counters: &'a Counters,
    errors: &'a Mutex<Vec<EntryError>>,
    root_dev: u64,
    /// The root's mount id, where the kernel reports one.
    root_mount: Option<u64>,
    /// Mount points below the root (for entries that are not directories).
    mounts: MountPoints,
    cross_mounts: bool,
    hard_links: bool,
    /// Inodes with several links, until all are met.
    links: &'a Mutex<HardLinks>,
    injector: Injector<Job>,
    stealers: Vec<Stealer<Job>>,
    /// Jobs queued or running; the walk ends when it drops to zero.
    pending: AtomicUsize,
}

/// Labels the tree under the open directory `root` (at `root_path`, used in
/// messages and policy lookups), root included. Per-entry failures are
/// counted in `counters` and the first [`KEPT_ERRORS`] kept in `errors`;
/// hard-linked entries left alone are named in `links`.
pub fn walk(
    root: OwnedFd,
    root_path: &Path,
    labels: &dyn LabelFor,
    options: Options,
    counters: &Counters,
    errors: &Mutex<Vec<EntryError>>,
    links: &Mutex<HardLinks>,
) -> std::io::Result<()> {
    let root_dev = rustix::fs::fstat(&root)?.st_dev;
    let root_mount = mounts::mount_id(&root);
    let mounts = if options.cross_mounts {
        MountPoints::default()
    } else {
        MountPoints::read(root_path)
    };
    let threads = options.threads.max(1);
    let workers: Vec<Worker<Job>> = (0..threads).map(|_| Worker::new_lifo()).collect();
    let shared = Shared {
        labels,
        counters,
        errors,
        root_dev,
        root_mount,
        mounts,
        cross_mounts: options.cross_mounts,
        hard_links: options.hard_links,
        links,
        injector: Injector::new(),
        stealers: workers.iter().map(Worker::stealer).collect(),
        pending: AtomicUsize::new(1),
    };
    shared.injector.push(Job {
        source: Source::Root(root),
        path: root_path.to_owned(),
    });
    std::thread::scope(|scope| {
        for (index, local) in workers.into_iter().enumerate() {
            let shared = &shared;
            std::thread::Builder::new()
                .name(format!("mcsd-relabel-{index}"))
                .spawn_scoped(scope, move || {
                    let own_cwd = xattr::own_cwd().is_ok();
                    shared.run(index, &local, own_cwd)
                })
                .expect("spawn a relabel worker");
        }
    });
    let skipped = links.lock().unwrap_or_else(|e| e.into_inner()).finish();
    counters
        .hardlinks_skipped
        .fetch_add(skipped, Ordering::Relaxed);
    Ok(())
}

impl Shared<'_> {
    fn run(&self, index: usize, local: &Worker<Job>, own_cwd: bool) {
        let mut idle = 0u32;
        let mut streak = Streak::default();
        loop {
            match self.find(index, local) {
                Some(job) => {
                    idle = 0;
                    self.directory(job, local, own_cwd, &mut streak);
                    self.pending.fetch_sub(1, Ordering::AcqRel);
                }
                None if self.pending.load(Ordering::Acquire) == 0 => return,
                None => {
                    // Others are still reading directories that may hold
                    // more work: back off instead of burning a core.
                    idle += 1;
                    if idle < 64 {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                }
            }
        }
    }

    fn find(&self, index: usize, local: &Worker<Job>) -> Option<Job> {
        local.pop().or_else(|| loop {
            let mut retry = false;
            match self.injector.steal_batch_and_pop(local) {
                Steal::Success(job) => return Some(job),
                Steal::Retry => retry = true,
                Steal::Empty => {}
            }
            for (i, stealer) in self.stealers.iter().enumerate() {
                if i == index {
                    continue;
                }
                match stealer.steal() {
                    Steal::Success(job) => return Some(job),
                    Steal::Retry => retry = true,
                    Steal::Empty => {}
                }
            }
            if !retry {
                return None;
            }
        })
    }

    fn fail(&self, tally: &mut Totals, path: impl FnOnce() -> PathBuf, error: String) {
        tally.failed += 1;
        let mut kept = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < KEPT_ERRORS {
            kept.push(EntryError {
                path: path(),
                error,
            });
        }
    }

    /// Opens, labels and reads one directory; queues its subdirectories.
    fn directory(&self, job: Job, local: &Worker<Job>, own_cwd: bool, streak: &mut Streak) {
        if self.counters.is_cancelled() {
            return;
        }
        let mut tally = Totals::default();
        self.read_directory(job, local, own_cwd, streak, &mut tally);
        self.counters.publish(&mut tally);
    }
}
