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

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_deque::{Injector, Steal, Stealer, Worker};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::mounts::{self, MountPoints};
use super::xattr::{self, Compared};

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

/// Running totals, readable while the walk goes on.
#[derive(Debug, Default)]
pub struct Counters {
    /// Entries examined.
    pub seen: AtomicU64,
    /// Entries whose label was written.
    pub changed: AtomicU64,
    /// Of `changed`, labels written without reading first (see
    /// [`Totals::blind`]).
    pub blind: AtomicU64,
    /// Entries that already had the label (nothing written).
    pub unchanged: AtomicU64,
    /// Entries that could not be labeled.
    pub failed: AtomicU64,
    /// Mount points not entered.
    pub mounts_skipped: AtomicU64,
    /// Names of hard-linked entries not labeled because the walk did not
    /// meet all of their links (some may be outside the tree).
    pub hardlinks_skipped: AtomicU64,
    /// Set to stop the walk early: directories not yet read are left.
    cancelled: AtomicBool,
}

/// A copy of [`Counters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Entries examined.
    pub seen: u64,
    /// Labels written. Exact for every entry whose label was read first;
    /// see [`blind`](Self::blind) for the others.
    pub changed: u64,
    /// Of [`changed`](Self::changed), labels written without reading the
    /// old one first (blind mode, see [`Streak`]). Each came after at least
    /// [`BLIND_AFTER`] reads in a row by the same worker that all found
    /// another label, the last of them at most [`PROBE_EVERY`] entries
    /// before; an entry that already had the label wanted can be among them
    /// only where it sits amid a run of mislabeled ones, and is then counted
    /// as changed (its label stays right; only its ctime moves). Zero on a
    /// tree that is mostly right: blind mode never starts there.
    pub blind: u64,
    /// Labels already right.
    pub unchanged: u64,
    /// Entries that could not be labeled.
    pub failed: u64,
    /// Mount points not entered.
    pub mounts_skipped: u64,
    /// Hard-linked names left alone: not every link is inside the tree.
    pub hardlinks_skipped: u64,
}

impl Counters {
    /// Adds a worker's local tally (workers count locally and publish once
    /// per directory: shared counters bumped per entry would bounce their
    /// cache line between cores on every file).
    fn publish(&self, t: &mut Totals) {
        let add = |c: &AtomicU64, n: u64| {
            if n > 0 {
                c.fetch_add(n, Ordering::Relaxed);
            }
        };
        add(&self.seen, t.seen);
        add(&self.changed, t.changed);
        add(&self.blind, t.blind);
        add(&self.unchanged, t.unchanged);
        add(&self.failed, t.failed);
        add(&self.mounts_skipped, t.mounts_skipped);
        add(&self.hardlinks_skipped, t.hardlinks_skipped);
        *t = Totals::default();
    }

    /// Asks the walk to stop: directories not read yet are left as they
    /// are, so the walk ends within one directory per worker.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// The totals now.
    pub fn totals(&self) -> Totals {
        Totals {
            seen: self.seen.load(Ordering::Relaxed),
            changed: self.changed.load(Ordering::Relaxed),
            blind: self.blind.load(Ordering::Relaxed),
            unchanged: self.unchanged.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            mounts_skipped: self.mounts_skipped.load(Ordering::Relaxed),
            hardlinks_skipped: self.hardlinks_skipped.load(Ordering::Relaxed),
        }
    }
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

/// Hard-linked entries the walk left alone (see the module
/// documentation): one path per inode, the first [`KEPT_ERRORS`] of them.
#[derive(Debug, Default)]
pub struct HardLinks {
    /// Inodes not yet labeled, by `(st_dev, st_ino)`.
    pending: HashMap<(u64, u64), Linked>,
    /// Paths of skipped inodes, filled when the walk ends.
    skipped: Vec<PathBuf>,
}

/// An inode with several links, met through some of them.
#[derive(Debug)]
struct Linked {
    /// Names met so far.
    met: u64,
    /// The first name met.
    path: PathBuf,
}

impl HardLinks {
    /// The first [`KEPT_ERRORS`] skipped entries, one path per inode.
    pub fn skipped(&self) -> &[PathBuf] {
        &self.skipped
    }

    /// Records meeting one name of an inode with `nlink` links; true when
    /// every link has now been met (label it, through this name).
    fn meet(&mut self, key: (u64, u64), nlink: u64, path: impl FnOnce() -> PathBuf) -> Met {
        let linked = self.pending.entry(key).or_insert_with(|| Linked {
            met: 0,
            path: path(),
        });
        linked.met += 1;
        if linked.met >= nlink {
            let met = linked.met;
            self.pending.remove(&key);
            Met::All { met }
        } else {
            Met::Some
        }
    }

    /// Ends the walk: every inode still pending is skipped. Returns how
    /// many names that leaves unlabeled.
    fn finish(&mut self) -> u64 {
        let mut pending: Vec<Linked> = self.pending.drain().map(|(_, l)| l).collect();
        pending.sort_by(|a, b| a.path.cmp(&b.path));
        let names = pending.iter().map(|l| l.met).sum();
        self.skipped = pending
            .into_iter()
            .take(KEPT_ERRORS)
            .map(|l| l.path)
            .collect();
        names
    }
}

/// What meeting one more link of an inode means.
enum Met {
    /// Others are still to be met: leave it for now.
    Some,
    /// This was the last: label it; `met` names in all.
    All { met: u64 },
}

/// Reads in a row that must all find another label before a worker
/// writes without reading.
///
/// Why 16: a tree that is mostly right (a container started again on its
/// volume) must never go blind, or a second run would rewrite labels that
/// are right. Under SELinux a right tree still holds the odd wrong entry
/// (a file copied in with its old label, a restored subtree), but 16 wrong
/// ones in a row, each in readdir's hash order, is a tree whose labels are
/// mostly wrong. The cost is 16 reads per worker per mislabeled stretch,
/// against 100k entries: nothing.
pub const BLIND_AFTER: u32 = 16;

/// In blind mode, every `PROBE_EVERY`-th entry is read first anyway, and
/// a read that finds the label wanted ends blind mode.
///
/// Why 32: a probe costs one read, about 40 % of what a blind entry costs
/// (the relabel bench, CPU for 100k entries on ext4: reading and writing
/// each 0.65 s, writing only 0.47 s), so 1 in 32 adds about 1 % to a blind
/// walk, well inside the 5 % that the bare loop allows; 64 would save
/// half of that and double the bound below.
/// It also bounds the harm where a right stretch follows a wrong one in
/// the same worker's order: at most 31 right labels rewritten (counted in
/// [`Totals::blind`]) before a probe sees it. Each directory's own label is
/// read too (through its descriptor, as before), and serves as a probe:
/// blind mode goes on into a directory only if its label was wrong.
pub const PROBE_EVERY: u32 = 32;

/// Whether a worker reads before writing: see [`BLIND_AFTER`] and
/// [`PROBE_EVERY`]. One per worker, carried from directory to directory.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Streak {
    /// Reads in a row that found another label.
    differing: u32,
    /// Entries written blind since the last read.
    since_read: u32,
}

impl Streak {
    /// Write the next entry without reading it first.
    fn blind(&self) -> bool {
        self.differing >= BLIND_AFTER && self.since_read + 1 < PROBE_EVERY
    }

    /// A read found the label wanted (`differs` false) or another one.
    fn read(&mut self, differs: bool) {
        self.differing = if differs {
            self.differing.saturating_add(1)
        } else {
            0
        };
        self.since_read = 0;
    }

    /// A label was written without reading.
    fn wrote_blind(&mut self) {
        self.since_read += 1;
    }

    /// Something failed: read first again.
    fn reset(&mut self) {
        *self = Self::default();
    }
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

    fn read_directory(
        &self,
        job: Job,
        local: &Worker<Job>,
        own_cwd: bool,
        streak: &mut Streak,
        tally: &mut Totals,
    ) {
        let fd = match job.source {
            Source::Root(fd) => fd,
            Source::Child { parent, name } => {
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                match rustix::fs::openat(&*parent, name.as_c_str(), flags, Mode::empty()) {
                    Ok(fd) => fd,
                    Err(e) => {
                        tally.seen += 1;
                        return self.fail(tally, || job.path.clone(), describe(e.into(), true));
                    }
                }
            }
        };
        match rustix::fs::fstat(&fd) {
            Ok(st)
                if !self.cross_mounts
                    && (st.st_dev != self.root_dev
                        || (self.root_mount.is_some()
                            && mounts::mount_id(&fd) != self.root_mount)) =>
            {
                tally.mounts_skipped += 1;
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tally.seen += 1;
                return self.fail(tally, || job.path.clone(), describe(e.into(), false));
            }
        }
        tally.seen += 1;
        match self.want(&job.path, Kind::Dir) {
            Ok(Some(want)) => self.apply(
                tally,
                // The directory's label is always read: it is the probe
                // that decides whether blind mode goes on into it.
                xattr::get_fd(&fd).map(|l| {
                    let same = l.as_deref() == Some(&want[..]);
                    // Only another label counts towards blind mode; none
                    // (SELinux disabled) has create-only writes instead.
                    streak.read(!same && l.is_some());
                    same
                }),
                &want,
                |label| xattr::set_fd(&fd, label),
                || job.path.clone(),
            ),
            Ok(None) => {}
            Err(e) => self.fail(tally, || job.path.clone(), e),
        }

        // Entries are named relative to this directory: through the thread's
        // own working directory if it has one, else through /proc.
        let relative = own_cwd && rustix::process::fchdir(&fd).is_ok();
        let fd = Arc::new(fd);
        let mut dir = match rustix::fs::Dir::read_from(&*fd) {
            Ok(dir) => dir,
            Err(e) => return self.fail(tally, || job.path.clone(), describe(e.into(), false)),
        };
        let mount_points = self.mounts.in_dir(&job.path);
        while let Some(entry) = dir.read() {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => return self.fail(tally, || job.path.clone(), describe(e.into(), false)),
            };
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            // A mount point (a bind-mounted file, say): its label belongs to
            // another tree.
            if mount_points.is_some_and(|m| m.contains(OsStr::from_bytes(name.to_bytes()))) {
                tally.mounts_skipped += 1;
                continue;
            }
            let mut file_type = entry.file_type();
            let mut stat = None;
            // Some file systems do not fill d_type; and unless told to
            // label hard links anyway, the link count of every entry that
            // is not a directory is needed.
            if file_type == FileType::Unknown
                || (!self.hard_links && file_type != FileType::Directory)
            {
                match rustix::fs::statat(&*fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => {
                        file_type = FileType::from_raw_mode(st.st_mode);
                        stat = Some(st);
                    }
                    Err(e) => {
                        tally.seen += 1;
                        self.fail(tally, || child(&job.path, name), describe(e.into(), true));
                        continue;
                    }
                }
            }
            let kind = match file_type {
                FileType::Directory => {
                    self.pending.fetch_add(1, Ordering::AcqRel);
                    local.push(Job {
                        source: Source::Child {
                            parent: fd.clone(),
                            name: name.to_owned(),
                        },
                        path: child(&job.path, name),
                    });
                    continue;
                }
                FileType::RegularFile => Kind::File,
                FileType::Symlink => Kind::Symlink,
                _ => Kind::Other,
            };
            tally.seen += 1;
            // Other names this label lands on (already met links of the
            // same inode), counted as already right once it is written.
            let mut others = 0;
            if let Some(st) = stat.filter(|st| !self.hard_links && st.st_nlink > 1) {
                let met = self.links.lock().unwrap_or_else(|e| e.into_inner()).meet(
                    (st.st_dev, st.st_ino),
                    st.st_nlink,
                    || child(&job.path, name),
                );
                match met {
                    Met::Some => continue,
                    Met::All { met } => others = met - 1,
                }
            }
            tally.unchanged += others;
            let want = match self.labels.fixed() {
                Some(label) => Ok(Some(Cow::Borrowed(label))),
                None => self.labels.label_for(&child(&job.path, name), kind),
            };
            match want {
                Ok(Some(want)) => {
                    let proc_path;
                    let at: &CStr = if relative {
                        name
                    } else {
                        proc_path = CString::new(xattr::entry_path(fd.as_fd(), name))
                            .expect("no NUL in a /proc path");
                        &proc_path
                    };
                    self.entry(tally, streak, at, &want, || child(&job.path, name))
                }
                Ok(None) => {}
                Err(e) => self.fail(tally, || child(&job.path, name), e),
            }
        }
    }

    /// Labels one entry that is not a directory. Reads first, writes only
    /// if the label differs. Where SELinux is disabled, unlabeled trees are
    /// common (fresh volumes): after meeting an entry without a label, a
    /// worker tries a create-only write first, one syscall instead of two,
    /// which fails without touching a labeled entry (and switches back to
    /// reading first). Under SELinux every entry has a label, so this path
    /// never starts there.
    ///
    /// Under SELinux, a tree labeled otherwise (every volume's first
    /// relabel) would cost a read and a write per entry; once the worker's
    /// [`Streak`] says the labels it meets are all wrong, it writes without
    /// reading, reading only every [`PROBE_EVERY`]-th entry (and each
    /// directory's label) to notice when they are right again. Such writes
    /// count in `changed` and in `blind`.
    fn entry(
        &self,
        tally: &mut Totals,
        streak: &mut Streak,
        at: &CStr,
        want: &[u8],
        path: impl FnOnce() -> PathBuf,
    ) {
        thread_local! {
            static UNLABELED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        }
        if UNLABELED.get() {
            match xattr::create_name(at, want) {
                Ok(true) => {
                    tally.changed += 1;
                    return;
                }
                Ok(false) => UNLABELED.set(false),
                Err(e) => return self.fail(tally, path, describe(e, true)),
            }
        }
        if streak.blind() {
            return match xattr::set_name(at, want) {
                Ok(()) => {
                    tally.changed += 1;
                    tally.blind += 1;
                    streak.wrote_blind();
                }
                Err(e) => {
                    streak.reset();
                    self.fail(tally, path, describe(e, true))
                }
            };
        }
        match xattr::compare_at(at, want) {
            Ok(Compared::Same) => {
                tally.unchanged += 1;
                streak.read(false);
            }
            Ok(compared) => {
                streak.read(compared == Compared::Different);
                match xattr::set_name(at, want) {
                    Ok(()) => {
                        tally.changed += 1;
                        UNLABELED.set(compared == Compared::Missing);
                    }
                    Err(e) => {
                        streak.reset();
                        self.fail(tally, path, describe(e, true))
                    }
                }
            }
            Err(e) => {
                streak.reset();
                self.fail(tally, path, describe(e, true))
            }
        }
    }

    fn want(&self, path: &Path, kind: Kind) -> Result<Option<Cow<'_, [u8]>>, String> {
        match self.labels.fixed() {
            Some(label) => Ok(Some(Cow::Borrowed(label))),
            None => self.labels.label_for(path, kind),
        }
    }

    /// Writes `want` unless `current` already is it.
    fn apply(
        &self,
        tally: &mut Totals,
        current: std::io::Result<bool>,
        want: &[u8],
        set: impl FnOnce(&[u8]) -> std::io::Result<()>,
        path: impl FnOnce() -> PathBuf,
    ) {
        match current {
            Ok(true) => {
                tally.unchanged += 1;
            }
            Ok(false) => match set(want) {
                Ok(()) => {
                    tally.changed += 1;
                }
                Err(e) => self.fail(tally, path, describe(e, true)),
            },
            Err(e) => self.fail(tally, path, describe(e, true)),
        }
    }
}

fn child(parent: &Path, name: &CStr) -> PathBuf {
    parent.join(OsStr::from_bytes(name.to_bytes()))
}

/// A per-entry error in words an operator can act on.
fn describe(e: std::io::Error, entry: bool) -> String {
    use rustix::io::Errno;
    let errno = e.raw_os_error().map(Errno::from_raw_os_error);
    match errno {
        Some(Errno::NOTSUP) => "the file system does not support security labels (ENOTSUP)".into(),
        Some(Errno::NOENT) if entry => "vanished during the relabel (ENOENT)".into(),
        Some(Errno::LOOP) | Some(Errno::NOTDIR) if entry => {
            "was replaced by a symlink or a file during the relabel; not followed".into()
        }
        Some(Errno::PERM) | Some(Errno::ACCESS) => format!("permission denied ({e})"),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod streak_tests {
    use super::*;

    #[test]
    fn blind_after_enough_differing_reads_probing_every_kth_entry() {
        let mut s = Streak::default();
        for _ in 1..BLIND_AFTER {
            s.read(true);
            assert!(!s.blind());
        }
        s.read(true);
        // Blind for PROBE_EVERY - 1 entries, then one read.
        for _ in 0..PROBE_EVERY - 1 {
            assert!(s.blind());
            s.wrote_blind();
        }
        assert!(!s.blind(), "the probe is due");
        s.read(true);
        assert!(s.blind(), "a differing probe keeps blind mode");
        // A probe that finds the label wanted ends it.
        s.read(false);
        assert!(!s.blind());
        // As does a label missing (create-only writes take over there), or
        // a failure.
        for _ in 0..BLIND_AFTER {
            s.read(true);
        }
        assert!(s.blind());
        s.reset();
        assert!(!s.blind());
    }
}
