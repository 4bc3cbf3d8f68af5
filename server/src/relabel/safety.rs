//! Which roots may be relabeled at all.
//!
//! The request path is resolved first (`..`, symlinked components), so a
//! path that only *looks* harmless is judged by where it really leads. Then:
//! - system trees are refused with everything below them (`/usr/share/x`
//!   as much as `/usr`): relabeling any of it to a container type breaks the
//!   host or hands it to containers;
//! - other well-known directories, every user's home directory from the
//!   passwd database, and mcsd's own state directory are refused exactly,
//!   as are all of their ancestors (`/` included); directories below them
//!   (a volume under `/home/alice` or `/srv`) are allowed;
//! - when the configuration has an allowlist, anything outside it is
//!   refused too.

use std::path::{Path, PathBuf};

/// Trees refused with everything below them.
const SYSTEM_TREES: &[&str] = &[
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sbin",
    "/sys", "/usr", "/var/log",
];

/// Directories refused exactly (and, with the trees, their ancestors).
const SYSTEM_DIRS: &[&str] = &[
    "/",
    "/home",
    "/media",
    "/mnt",
    "/opt",
    "/root",
    "/run",
    "/srv",
    "/tmp",
    "/var",
    "/var/lib",
    "/var/tmp",
    "/var/lib/containers",
    "/var/lib/docker",
];

/// Why a root was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not absolute.
    #[error("{0} is not an absolute path")]
    Relative(PathBuf),
    /// Cannot be resolved (missing, unreadable).
    #[error("{path} cannot be resolved: {error}")]
    Unresolvable {
        /// As asked.
        path: PathBuf,
        /// Why.
        error: String,
    },
    /// Exists, but is not a directory.
    #[error("{0} is not a directory; relabel takes a volume's root directory")]
    NotADirectory(PathBuf),
    /// A system path.
    #[error("{resolved} is refused: {reason}{}", via(.asked, .resolved))]
    System {
        /// As asked.
        asked: PathBuf,
        /// Where it leads.
        resolved: PathBuf,
        /// Which rule refused it.
        reason: String,
    },
    /// Outside the configured allowlist.
    #[error("{resolved} is outside the allowed relabel roots ({allowed}){}", via(.asked, .resolved))]
    NotAllowed {
        /// As asked.
        asked: PathBuf,
        /// Where it leads.
        resolved: PathBuf,
        /// The allowlist, for the message.
        allowed: String,
    },
}

fn via(asked: &Path, resolved: &Path) -> String {
    if asked == resolved {
        String::new()
    } else {
        format!(" (asked as {})", asked.display())
    }
}

/// The rules, built once from the configuration and the passwd database.
#[derive(Debug, Clone)]
pub struct RootPolicy {
    trees: Vec<PathBuf>,
    dirs: Vec<(PathBuf, &'static str)>,
    allowlist: Vec<PathBuf>,
}

impl RootPolicy {
    /// Rules with the built-in system paths, the home directories listed in
    /// `passwd` (normally `/etc/passwd`), `state_dir`, and `allowlist`.
    pub fn new(allowlist: &[PathBuf], state_dir: &Path, passwd: &Path) -> Self {
        let mut dirs: Vec<(PathBuf, &'static str)> = SYSTEM_DIRS
            .iter()
            .map(|d| (PathBuf::from(d), "a system directory"))
            .collect();
        for home in homes(passwd) {
            dirs.push((home, "a user's home directory"));
        }
        let mut trees: Vec<PathBuf> = SYSTEM_TREES.iter().map(PathBuf::from).collect();
        // mcsd's own store: relabeling it would let containers touch it.
        trees.push(canonical_or_self(state_dir));
        Self {
            trees,
            dirs,
            allowlist: allowlist.iter().map(|p| canonical_or_self(p)).collect(),
        }
    }

    /// Resolves `asked` and checks it; returns the resolved directory.
    pub fn check(&self, asked: &Path) -> Result<PathBuf, Refused> {
        if !asked.is_absolute() {
            return Err(Refused::Relative(asked.to_owned()));
        }
        let resolved = std::fs::canonicalize(asked).map_err(|e| Refused::Unresolvable {
            path: asked.to_owned(),
            error: e.to_string(),
        })?;
        if !resolved.is_dir() {
            return Err(Refused::NotADirectory(resolved));
        }
        let refuse = |reason: String| Refused::System {
            asked: asked.to_owned(),
            resolved: resolved.clone(),
            reason,
        };
        for tree in &self.trees {
            if resolved.starts_with(tree) {
                return Err(refuse(format!(
                    "it is inside {}, a protected tree",
                    tree.display()
                )));
            }
            if tree.starts_with(&resolved) {
                return Err(refuse(format!(
                    "it contains {}, a protected tree",
                    tree.display()
                )));
            }
        }
        for (dir, what) in &self.dirs {
            if *dir == resolved {
                return Err(refuse(format!("it is {what}")));
            }
            if dir.starts_with(&resolved) {
                return Err(refuse(format!("it contains {} ({what})", dir.display())));
            }
        }
        if !self.allowlist.is_empty() && !self.allowlist.iter().any(|a| resolved.starts_with(a)) {
            return Err(Refused::NotAllowed {
                asked: asked.to_owned(),
                resolved,
                allowed: self
                    .allowlist
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(resolved)
    }
}

fn canonical_or_self(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned())
}

/// Home directories from a passwd file, resolved; unreadable files give none.
fn homes(passwd: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(passwd) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| line.split(':').nth(5))
        .filter(|home| home.starts_with('/'))
        .map(|home| canonical_or_self(Path::new(home)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[PathBuf], passwd: &str) -> (RootPolicy, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("passwd");
        std::fs::write(&file, passwd).unwrap();
        (
            RootPolicy::new(allow, Path::new("/var/lib/mcsd"), &file),
            dir,
        )
    }

    #[test]
    fn system_paths_their_insides_and_ancestors_are_refused() {
        let (p, _d) = policy(&[], "root:x:0:0:root:/root:/bin/bash\n");
        for path in [
            "/",
            "/usr",
            "/usr/share",
            "/etc",
            "/etc/ssl",
            "/var",
            "/var/lib",
            "/var/log/apt",
            "/home",
            "/root",
            "/tmp",
            "/proc/self",
            "/dev",
            "/sys/kernel",
        ] {
            if Path::new(path).exists() {
                assert!(p.check(Path::new(path)).is_err(), "{path} must be refused");
            }
        }
        // `..` is resolved before judging.
        let err = p.check(Path::new("/tmp/../etc")).unwrap_err().to_string();
        assert!(err.contains("/etc is refused"), "{err}");
        assert!(err.contains("asked as /tmp/../etc"), "{err}");
        assert!(matches!(
            p.check(Path::new("relative")),
            Err(Refused::Relative(_))
        ));
        assert!(matches!(
            p.check(Path::new("/no/such/dir")),
            Err(Refused::Unresolvable { .. })
        ));
        assert!(matches!(
            p.check(Path::new("/etc/passwd")),
            Err(Refused::NotADirectory(_))
        ));
    }

    #[test]
    fn homes_come_from_passwd_and_symlinked_roots_are_judged_by_their_target() {
        let base = tempfile::tempdir().unwrap();
        let home = base.path().join("alice");
        std::fs::create_dir_all(home.join("volume")).unwrap();
        let (p, _d) = policy(
            &[],
            &format!("alice:x:1000:1000::{}:/bin/sh\n", home.display()),
        );
        let err = p.check(&home).unwrap_err().to_string();
        assert!(err.contains("a user's home directory"), "{err}");
        assert!(p
            .check(base.path())
            .unwrap_err()
            .to_string()
            .contains("contains"));
        assert_eq!(
            p.check(&home.join("volume")).unwrap(),
            home.join("volume").canonicalize().unwrap()
        );
        let link = base.path().join("innocent");
        std::os::unix::fs::symlink("/usr/share", &link).unwrap();
        let err = p.check(&link).unwrap_err().to_string();
        assert!(err.contains("/usr/share is refused"), "{err}");
    }

    #[test]
    fn an_allowlist_refuses_everything_outside_it() {
        let base = tempfile::tempdir().unwrap();
        let allowed = base.path().join("volumes");
        let other = base.path().join("other");
        std::fs::create_dir_all(allowed.join("v1")).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        let (p, _d) = policy(std::slice::from_ref(&allowed), "");
        p.check(&allowed.join("v1")).unwrap();
        let err = p.check(&other).unwrap_err();
        assert!(matches!(err, Refused::NotAllowed { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("outside the allowed relabel roots"),
            "{err}"
        );
    }
}
