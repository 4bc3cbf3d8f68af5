//! Relabeling volumes: the container's file label onto a directory tree,
//! as fast as the kernel allows and without escaping the tree.
//!
//! - [`safety`] decides which roots may be relabeled at all;
//! - [`walk`] walks the tree in parallel, relative to directory descriptors,
//!   never following a symlink, and writes a label only where it differs (a
//!   second run over a labeled tree only reads);
//! - [`xattr`] reads and writes one entry's label;
//! - this module ties them together and restores roots when their
//!   container is released ([`RestoreMode`]).
//!
//! Where SELinux is disabled (development machines), the label is still
//! written as the `security.selinux` extended attribute, which root may set
//! on ext4 and tmpfs; that is how the tests check it.

pub mod mounts;
pub mod safety;
pub mod walk;
pub mod xattr;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags, ResolveFlags};

pub use safety::{Refused, RootPolicy};
pub use walk::{Counters, EntryError, HardLinks, Kind, LabelFor, Totals};

/// What Release does to the trees a container had relabeled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestoreMode {
    /// Leave them as they are.
    None,
    /// The label the host's policy gives each entry (restorecon); needs
    /// SELinux enabled.
    Policy,
    /// The label the root had before its first relabel, on every entry.
    /// The default: it gives back exactly what the operator had, needs no
    /// policy lookups, and works where SELinux is disabled.
    #[default]
    Original,
}

impl FromStr for RestoreMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "policy" => Ok(Self::Policy),
            "original" => Ok(Self::Original),
            other => Err(format!(
                "unknown restore mode {other:?}; use \"original\", \"policy\" or \"none\""
            )),
        }
    }
}

impl std::fmt::Display for RestoreMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Policy => "policy",
            Self::Original => "original",
        })
    }
}

/// The relabel settings (`[relabel]` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RelabelConfig {
    /// When non-empty, only roots under these may be relabeled.
    pub allowlist: Vec<PathBuf>,
    /// What Release does.
    pub restore: RestoreMode,
    /// Worker threads; 0 means one per core.
    pub threads: usize,
}

/// Why a relabel could not run at all (per-entry failures are counted in
/// the [`Outcome`] instead).
#[derive(Debug, thiserror::Error)]
pub enum RelabelError {
    /// The root is refused.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The root could not be opened.
    #[error("cannot open {path}: {error}")]
    Open {
        /// The resolved root.
        path: PathBuf,
        /// Why.
        error: String,
    },
    /// Policy lookups are unavailable.
    #[error("restoring labels from the policy needs SELinux enabled and its file contexts: {0}")]
    NoPolicy(String),
}

/// The result of one walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The resolved root.
    pub root: PathBuf,
    /// Counts.
    pub totals: Totals,
    /// The first few entries that failed.
    pub errors: Vec<EntryError>,
    /// The first few hard-linked entries left alone because not all of
    /// their links are inside the tree (one path per file).
    pub hardlinks_skipped: Vec<PathBuf>,
    /// How long it took.
    pub elapsed: Duration,
}

/// Every entry gets the same label.
pub struct Fixed(pub Vec<u8>);

impl LabelFor for Fixed {
    fn fixed(&self) -> Option<&[u8]> {
        Some(&self.0)
    }
    fn label_for(&self, _: &Path, _: Kind) -> Result<Option<Cow<'_, [u8]>>, String> {
        Ok(Some(Cow::Borrowed(&self.0)))
    }
}

/// Each entry gets what the host policy's file contexts say (restorecon).
/// The labeling handle is not thread-safe, so each walker thread opens its
/// own.
pub struct FromPolicy {
    /// The file_contexts to read instead of the loaded policy's (what
    /// `setfiles` takes as its argument); `None` for the policy's own.
    file_contexts: Option<std::ffi::CString>,
}

/// libselinux's `SELABEL_OPT_PATH` (`<selinux/label.h>`): the file_contexts
/// path for `selabel_open`.
const SELABEL_OPT_PATH: libc::c_int = 3;

type FileLabeler = selinux::label::Labeler<selinux::label::back_end::File>;

thread_local! {
    /// This thread's handle, with the file_contexts it was opened on.
    static LABELER: std::cell::RefCell<Option<(Option<std::ffi::CString>, FileLabeler)>> =
        const { std::cell::RefCell::new(None) };
}

impl FromPolicy {
    /// Checks that lookups work here, in the loaded policy's file contexts.
    pub fn new() -> Result<Self, RelabelError> {
        if selinux::kernel_support() == selinux::KernelSupport::Unsupported {
            return Err(RelabelError::NoPolicy(
                "SELinux is disabled on this host".into(),
            ));
        }
        let this = Self {
            file_contexts: None,
        };
        this.open().map_err(RelabelError::NoPolicy)?;
        Ok(this)
    }

    /// Looks labels up in the file_contexts at `path` (as `setfiles SPEC`
    /// does), which works where SELinux is disabled too: the lookups read
    /// only that file (and its compiled `.bin` beside it).
    pub fn with_file_contexts(path: &Path) -> Result<Self, RelabelError> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| RelabelError::NoPolicy(format!("{}: NUL in path", path.display())))?;
        let this = Self {
            file_contexts: Some(path),
        };
        this.open().map_err(RelabelError::NoPolicy)?;
        Ok(this)
    }

    fn open(&self) -> Result<FileLabeler, String> {
        let options: Vec<(libc::c_int, *const libc::c_void)> = self
            .file_contexts
            .iter()
            .map(|path| (SELABEL_OPT_PATH, path.as_ptr().cast()))
            .collect();
        FileLabeler::new(&options, false).map_err(|e| match &self.file_contexts {
            Some(path) => format!("{}: {e}", path.to_string_lossy()),
            None => e.to_string(),
        })
    }
}

impl LabelFor for FromPolicy {
    fn fixed(&self) -> Option<&[u8]> {
        None
    }
    fn label_for(&self, path: &Path, kind: Kind) -> Result<Option<Cow<'_, [u8]>>, String> {
        let mode = match kind {
            Kind::Dir => libc::S_IFDIR,
            Kind::File => libc::S_IFREG,
            Kind::Symlink => libc::S_IFLNK,
            Kind::Other => 0,
        };
        LABELER.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot
                .as_ref()
                .is_none_or(|(opened, _)| *opened != self.file_contexts)
            {
                *slot = Some((self.file_contexts.clone(), self.open()?));
            }
            let (_, labeler) = slot.as_ref().expect("just opened");
            let found = labeler
                .look_up_by_path(path, selinux::FileAccessMode::new(mode))
                .map(|context| xattr::trim(context.as_bytes()).to_vec());
            // No file context entry: restorecon leaves such files alone.
            Ok(found.ok().map(Cow::Owned))
        })
    }
}

/// Runs relabels under a [`RootPolicy`].
#[derive(Debug, Clone)]
pub struct Relabeler {
    policy: RootPolicy,
    config: RelabelConfig,
}

impl Relabeler {
    /// A relabeler with these settings, refusing mcsd's `state_dir` too.
    pub fn new(config: RelabelConfig, state_dir: &Path) -> Self {
        Self {
            policy: RootPolicy::new(&config.allowlist, state_dir, Path::new("/etc/passwd")),
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> &RelabelConfig {
        &self.config
    }

    /// Resolves and checks a requested root.
    pub fn resolve(&self, asked: &Path) -> Result<PathBuf, Refused> {
        self.policy.check(asked)
    }

    /// The label `root` has now (for `original` restores).
    pub fn current_label(root: &Path) -> Option<String> {
        let fd = open_root(root).ok()?;
        let label = xattr::get_fd(&fd).ok()??;
        String::from_utf8(label).ok()
    }

    /// Labels the tree at the resolved `root` with `labels`. `counters` may
    /// be read meanwhile for progress. Entries with several hard links are
    /// labeled only when every link is inside the tree, unless `hard_links`
    /// (see [`walk`]).
    pub fn run(
        &self,
        root: &Path,
        labels: &dyn LabelFor,
        cross_mounts: bool,
        hard_links: bool,
        counters: &Counters,
    ) -> Result<Outcome, RelabelError> {
        let started = Instant::now();
        let fd = open_root(root).map_err(|e| RelabelError::Open {
            path: root.to_owned(),
            error: e.to_string(),
        })?;
        let threads = match self.config.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let errors = Mutex::new(Vec::new());
        let links = Mutex::new(HardLinks::default());
        walk::walk(
            fd,
            root,
            labels,
            walk::Options {
                cross_mounts,
                threads,
                hard_links,
            },
            counters,
            &errors,
            &links,
        )
        .map_err(|e| RelabelError::Open {
            path: root.to_owned(),
            error: e.to_string(),
        })?;
        Ok(Outcome {
            root: root.to_owned(),
            totals: counters.totals(),
            errors: errors.into_inner().unwrap_or_else(|e| e.into_inner()),
            hardlinks_skipped: links
                .into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .skipped()
                .to_vec(),
            elapsed: started.elapsed(),
        })
    }
}

/// Opens a resolved root, refusing if any component became a symlink since
/// it was resolved (a swap between the check and the open).
fn open_root(root: &Path) -> std::io::Result<OwnedFd> {
    open_root_with(root, |root| {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        rustix::fs::openat2(
            rustix::fs::CWD,
            root,
            flags,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
    })
}

/// [`open_root`] with the `openat2` call given, so the fallback can be
/// tested on a kernel that has it.
fn open_root_with(
    root: &Path,
    openat2: impl FnOnce(&Path) -> rustix::io::Result<OwnedFd>,
) -> std::io::Result<OwnedFd> {
    match openat2(root) {
        // Kernels before 5.6 (RHEL 8 runs 4.18) lack openat2; some seccomp
        // filters answer EPERM for system calls they do not know.
        Err(rustix::io::Errno::NOSYS) | Err(rustix::io::Errno::PERM) => open_by_components(root),
        other => other.map_err(Into::into),
    }
}

/// Opens the absolute, resolved `root` one component at a time, each
/// relative to its parent's descriptor with `O_NOFOLLOW|O_DIRECTORY`: a
/// component that is a symlink (magic links included) fails with `ELOOP`,
/// as `RESOLVE_NO_SYMLINKS` would, and `.` or `..` are refused outright (a
/// resolved root has none).
fn open_by_components(root: &Path) -> std::io::Result<OwnedFd> {
    use std::path::Component;
    let invalid = |why: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{}: {why}", root.display()),
        )
    };
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut components = root.components();
    if components.next() != Some(Component::RootDir) {
        return Err(invalid("not an absolute path"));
    }
    let mut dir = rustix::fs::open("/", flags, Mode::empty())?;
    for component in components {
        let Component::Normal(name) = component else {
            return Err(invalid("not a resolved path (it has . or ..)"));
        };
        dir = match rustix::fs::openat(&dir, name, flags, Mode::empty()) {
            Ok(next) => next,
            // O_DIRECTORY is checked first: a symlink answers ENOTDIR. Say
            // ELOOP, as openat2 would, so callers see one reason.
            Err(rustix::io::Errno::NOTDIR)
                if rustix::fs::statat(&dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| {
                        rustix::fs::FileType::from_raw_mode(st.st_mode)
                            == rustix::fs::FileType::Symlink
                    }) =>
            {
                return Err(rustix::io::Errno::LOOP.into())
            }
            Err(e) => return Err(e.into()),
        };
    }
    Ok(dir)
}
