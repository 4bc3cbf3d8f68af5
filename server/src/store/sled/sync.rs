//! Making what sled wrote survive a power cut.
//!
//! sled 0.34's `flush()` ends in `sync_file_range(WAIT_BEFORE | WRITE |
//! WAIT_AFTER)` on its log. That pushes the pages to the device but neither
//! asks the device to empty its volatile cache nor commits the file's new
//! size and extents to the file system's journal, so after a power cut the
//! tail of the log (the latest acknowledged batches) can be gone. sled also
//! creates files it never syncs (`conf`, `blobs/<lsn>`) and renames
//! snapshots without syncing their directory.
//!
//! [`Syncer`] closes those gaps after every flush, before the engine
//! replies:
//! 1. files sled created or rewrote since the last batch (seen through
//!    inotify on the store's directories) are `fsync`ed, blobs first, since
//!    the log may point at them;
//! 2. the log (`db`) is `fdatasync`ed: its data, its size and the device's
//!    cache, which is what a batch's records need;
//! 3. a directory whose entries changed (a snapshot renamed, a blob created)
//!    is `fsync`ed, so the new names survive too.
//!
//! One [`Syncer::sync`] serves a whole batch: the requests of a group commit
//! share its fsyncs. An unchanged directory costs one non-blocking `read` of
//! the inotify descriptor, not an fsync.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

/// The subdirectory sled keeps large values in.
const BLOBS: &str = "blobs";

/// Events that mean a directory entry changed or a file was written and
/// closed. Not `MODIFY`: every write to the log would queue an event, and
/// the log is synced on every call anyway; the other files sled writes are
/// closed once written.
fn watched() -> WatchFlags {
    WatchFlags::CREATE
        | WatchFlags::MOVED_TO
        | WatchFlags::MOVED_FROM
        | WatchFlags::DELETE
        | WatchFlags::CLOSE_WRITE
}

/// Syncs what a sled database wrote; see the module documentation.
pub(super) struct Syncer {
    dir: PathBuf,
    /// The log, opened read-only: `fdatasync` works on any descriptor of
    /// the inode.
    log: OwnedFd,
    inotify: OwnedFd,
    dir_watch: i32,
    /// The blobs directory's watch, once it exists.
    blobs_watch: Option<i32>,
}

/// What changed since the last sync.
#[derive(Default)]
struct Changes {
    /// Files to fsync, by path.
    files: BTreeSet<PathBuf>,
    dir: bool,
    blobs_dir: bool,
    /// The kernel's event queue overflowed: sync everything.
    everything: bool,
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// `fsync`s one file or directory by path; one that vanished meanwhile
/// (an old snapshot sled removed) needs nothing.
fn fsync_path(path: &Path) -> io::Result<()> {
    let fd = match rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(with_path(e.into(), "opening", path)),
    };
    rustix::fs::fsync(&fd).map_err(|e| with_path(e.into(), "fsync of", path))
}

fn with_path(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Every regular file directly in `dir`.
fn files_in(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(with_path(e, "listing", dir)),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            out.push(entry.path());
        }
    }
    Ok(out)
}

impl Syncer {
    /// Starts watching the database at `dir` (already opened by sled) and
    /// makes everything there durable now, the directory entries up to the
    /// state directory included: a store created a moment ago must survive
    /// a power cut as much as its first batch.
    pub(super) fn open(dir: &Path) -> io::Result<Self> {
        let inotify = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        let dir_watch = inotify::add_watch(&inotify, dir, watched())
            .map_err(|e| with_path(e.into(), "watching", dir))?;
        let log_path = dir.join("db");
        let log = rustix::fs::open(&log_path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| with_path(e.into(), "opening", &log_path))?;
        let mut syncer = Self {
            dir: dir.to_owned(),
            log,
            inotify,
            dir_watch,
            blobs_watch: None,
        };
        syncer.watch_blobs()?;
        syncer.apply(Changes {
            everything: true,
            ..Changes::default()
        })?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            rustix::fs::fsync(open_dir(parent)?)
                .map_err(|e| with_path(e.into(), "fsync of", parent))?;
        }
        Ok(syncer)
    }

    /// Makes everything sled has written so far durable; call after
    /// `flush()` and before acknowledging the batch.
    pub(super) fn sync(&mut self) -> io::Result<()> {
        let changes = self.drain()?;
        self.apply(changes)
    }

    fn watch_blobs(&mut self) -> io::Result<()> {
        if self.blobs_watch.is_some() {
            return Ok(());
        }
        let blobs = self.dir.join(BLOBS);
        match inotify::add_watch(&self.inotify, &blobs, watched()) {
            Ok(wd) => {
                self.blobs_watch = Some(wd);
                Ok(())
            }
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(with_path(e.into(), "watching", &blobs)),
        }
    }

    /// Reads every queued event without blocking.
    fn drain(&mut self) -> io::Result<Changes> {
        let mut changes = Changes::default();
        let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = inotify::Reader::new(&self.inotify, &mut buf);
        let mut blobs_created = false;
        loop {
            let event = match reader.next() {
                Ok(event) => event,
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            };
            let flags = event.events();
            if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
                changes.everything = true;
                continue;
            }
            let name = event
                .file_name()
                .map(|n| OsString::from(std::ffi::OsStr::from_bytes(n.to_bytes())));
            let in_blobs = Some(event.wd()) == self.blobs_watch;
            if !in_blobs && event.wd() != self.dir_watch {
                continue; // a watch removed with its directory
            }
            let base = if in_blobs {
                self.dir.join(BLOBS)
            } else {
                self.dir.clone()
            };
            let entry_changed = flags.intersects(
                ReadFlags::CREATE | ReadFlags::MOVED_TO | ReadFlags::MOVED_FROM | ReadFlags::DELETE,
            );
            if entry_changed {
                if in_blobs {
                    changes.blobs_dir = true;
                } else {
                    changes.dir = true;
                }
            }
            let Some(name) = name else { continue };
            if !in_blobs && name == BLOBS {
                blobs_created |= flags.contains(ReadFlags::CREATE);
                continue;
            }
            // The log is synced on every call anyway.
            if !in_blobs && name == "db" {
                continue;
            }
            if flags.intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO | ReadFlags::CLOSE_WRITE) {
                changes.files.insert(base.join(name));
            }
        }
        if blobs_created || self.blobs_watch.is_none() {
            let before = self.blobs_watch.is_none();
            self.watch_blobs()?;
            if before && self.blobs_watch.is_some() {
                // Blobs written before the watch was in place.
                changes.dir = true;
                changes.blobs_dir = true;
                changes.files.extend(files_in(&self.dir.join(BLOBS))?);
            }
        }
        Ok(changes)
    }

    fn apply(&mut self, mut changes: Changes) -> io::Result<()> {
        if changes.everything {
            changes.dir = true;
            changes.blobs_dir = self.blobs_watch.is_some();
            changes.files.extend(files_in(&self.dir.join(BLOBS))?);
            changes.files.extend(
                files_in(&self.dir)?
                    .into_iter()
                    .filter(|p| p.file_name() != Some("db".as_ref())),
            );
        }
        // Blobs and new files first: the log may refer to them.
        for path in &changes.files {
            fsync_path(path)?;
        }
        rustix::fs::fdatasync(&self.log)
            .map_err(|e| with_path(e.into(), "fdatasync of", &self.dir.join("db")))?;
        if changes.blobs_dir {
            fsync_path(&self.dir.join(BLOBS))?;
        }
        if changes.dir {
            rustix::fs::fsync(open_dir(&self.dir)?)
                .map_err(|e| with_path(e.into(), "fsync of", &self.dir))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_and_rewritten_files_are_found_and_the_log_is_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), b"log").unwrap();
        let mut s = Syncer::open(dir.path()).unwrap();
        // Nothing changed since open.
        let c = s.drain().unwrap();
        assert!(c.files.is_empty() && !c.dir && !c.blobs_dir && !c.everything);

        std::fs::write(dir.path().join("db"), b"log2").unwrap();
        let c = s.drain().unwrap();
        assert!(
            c.files.is_empty(),
            "the log is synced anyway: {:?}",
            c.files
        );
        assert!(!c.dir, "rewriting a file changes no entry");

        std::fs::write(dir.path().join("snap.01.generating"), b"s").unwrap();
        std::fs::rename(
            dir.path().join("snap.01.generating"),
            dir.path().join("snap.01"),
        )
        .unwrap();
        let c = s.drain().unwrap();
        assert!(c.dir, "a rename changes the directory");
        assert!(
            c.files.contains(&dir.path().join("snap.01")),
            "{:?}",
            c.files
        );
        s.apply(c).unwrap();
    }

    #[test]
    fn blobs_are_found_once_their_directory_appears() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), b"log").unwrap();
        let mut s = Syncer::open(dir.path()).unwrap();
        std::fs::create_dir(dir.path().join(BLOBS)).unwrap();
        std::fs::write(dir.path().join(BLOBS).join("17"), b"blob").unwrap();
        let c = s.drain().unwrap();
        assert!(c.dir && c.blobs_dir);
        assert!(
            c.files.contains(&dir.path().join(BLOBS).join("17")),
            "{:?}",
            c.files
        );
        s.apply(c).unwrap();
        // Later blobs come through the new watch.
        std::fs::write(dir.path().join(BLOBS).join("18"), b"blob").unwrap();
        let c = s.drain().unwrap();
        assert!(c.blobs_dir && !c.dir);
        assert!(c.files.contains(&dir.path().join(BLOBS).join("18")));
        s.sync().unwrap();
    }

    #[test]
    fn a_file_removed_before_its_sync_is_no_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), b"log").unwrap();
        let mut s = Syncer::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("snap.02"), b"s").unwrap();
        std::fs::remove_file(dir.path().join("snap.02")).unwrap();
        s.sync().unwrap();
    }
}
