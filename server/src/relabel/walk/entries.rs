//! One directory's entries: read each, decide its label, write it if it
//! differs, queue subdirectories as jobs.

use std::borrow::Cow;
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_deque::Worker;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::hardlinks::Met;
use super::mounts;
use super::streak::Streak;
use super::xattr::{self, Compared};
use super::{Job, Kind, Shared, Source, Totals};

impl Shared<'_> {
    pub(super) fn read_directory(
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
            // Some file systems do not fill d_type.
            if file_type == FileType::Unknown {
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
                    let links = Links {
                        dir: &fd,
                        name,
                        stat,
                    };
                    self.entry(tally, streak, at, &want, links, || child(&job.path, name))
                }
                Ok(None) => {}
                Err(e) => self.fail(tally, || child(&job.path, name), e),
            }
        }
    }

    /// Whether the entry may be written: unless told to label hard links
    /// anyway, an entry with several links only once the walk has met all
    /// of them (the others met before count as already right once it is
    /// written). Asked only before a write, so a label that is already
    /// right costs no `statat`: reading it changes nothing, whatever else
    /// links to it.
    fn may_write(&self, tally: &mut Totals, links: Links<'_>, path: impl Fn() -> PathBuf) -> bool {
        if self.hard_links {
            return true;
        }
        let st = match links.stat {
            Some(st) => st,
            None => match rustix::fs::statat(links.dir, links.name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(e) => {
                    self.fail(tally, path, describe(e.into(), true));
                    return false;
                }
            },
        };
        if st.st_nlink <= 1 {
            return true;
        }
        let met = self.links.lock().unwrap_or_else(|e| e.into_inner()).meet(
            (st.st_dev, st.st_ino),
            st.st_nlink,
            path,
        );
        match met {
            Met::Some => false,
            Met::All { met } => {
                tally.unchanged += met - 1;
                true
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
        links: Links<'_>,
        path: impl Fn() -> PathBuf,
    ) {
        thread_local! {
            static UNLABELED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        }
        // Decided once: a create-only write that finds a label falls back
        // to the paths below, and meeting a link twice would count it twice.
        let mut decided = None;
        let mut may_write = |tally: &mut Totals| {
            *decided.get_or_insert_with(|| self.may_write(tally, links, &path))
        };
        if UNLABELED.get() {
            if !may_write(tally) {
                return;
            }
            match xattr::create_name(at, want) {
                Ok(true) => {
                    tally.changed += 1;
                    return;
                }
                Ok(false) => UNLABELED.set(false),
                Err(e) => return self.fail(tally, &path, describe(e, true)),
            }
        }
        if streak.blind() {
            if !may_write(tally) {
                return;
            }
            return match xattr::set_name(at, want) {
                Ok(()) => {
                    tally.changed += 1;
                    tally.blind += 1;
                    streak.wrote_blind();
                }
                Err(e) => {
                    streak.reset();
                    self.fail(tally, &path, describe(e, true))
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
                if !may_write(tally) {
                    return;
                }
                match xattr::set_name(at, want) {
                    Ok(()) => {
                        tally.changed += 1;
                        UNLABELED.set(compared == Compared::Missing);
                    }
                    Err(e) => {
                        streak.reset();
                        self.fail(tally, &path, describe(e, true))
                    }
                }
            }
            Err(e) => {
                streak.reset();
                self.fail(tally, &path, describe(e, true))
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

/// What [`Shared::may_write`] needs to find an entry's links: its
/// directory and name, and its status if the walk already has it.
#[derive(Clone, Copy)]
struct Links<'a> {
    dir: &'a OwnedFd,
    name: &'a CStr,
    stat: Option<rustix::fs::Stat>,
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
