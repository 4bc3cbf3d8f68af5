//! The daemon's Unix socket: bound safely, removed on exit.
//!
//! Binding never deletes anything but a stale socket (one nobody listens
//! on), never steals the socket of a running mcsd, and never exposes the
//! socket with looser permissions than 0660, not even briefly: it binds a
//! temporary name in the same directory, sets the mode, then renames it over
//! the final path in one atomic step. What is let through it is decided by
//! [`guard`].

pub mod guard;

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of the socket file: owner and group may connect.
pub const SOCKET_MODE: u32 = 0o660;

/// Why the socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// A live process listens on the path.
    #[error("{path} is in use: another process is listening on it (is mcsd already running?)")]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// The path exists and is not a socket; mcsd will not remove it.
    #[error("refusing to replace {path}: it exists and is not a socket")]
    NotASocket {
        /// The socket path.
        path: PathBuf,
    },
    /// A system call failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What mcsd was doing.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SocketError + 'a {
    move |source| SocketError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// A listening socket that removes its file when dropped (if the file is
/// still the one it created).
#[derive(Debug)]
pub struct BoundSocket {
    listener: Option<std::os::unix::net::UnixListener>,
    path: PathBuf,
    /// The file's identity, to remove only our own; `None` when the socket
    /// came from systemd, which owns the file.
    inode: Option<(u64, u64)>,
}

impl BoundSocket {
    /// Binds `path` with mode 0660, replacing only a stale socket.
    pub fn bind(path: &Path) -> Result<Self, SocketError> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(io_err("create the socket directory", dir))?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(SocketError::NotASocket {
                    path: path.to_owned(),
                })
            }
            Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(SocketError::InUse {
                        path: path.to_owned(),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %path.display(), "replacing stale socket");
                }
                Err(e) => return Err(io_err("check the existing socket", path)(e)),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("inspect", path)(e)),
        }

        let name = path
            .file_name()
            .map_or_else(|| "mcsd.sock".into(), |n| n.to_string_lossy().into_owned());
        let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        match std::fs::remove_file(&temp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_err("remove", &temp)(e))
            }
            _ => {}
        }
        let listener =
            std::os::unix::net::UnixListener::bind(&temp).map_err(io_err("bind", &temp))?;
        let placed = std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(SOCKET_MODE))
            .map_err(io_err("set the mode of", &temp))
            .and_then(|()| {
                std::fs::rename(&temp, path).map_err(io_err("move the socket to", path))
            });
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        let meta = std::fs::symlink_metadata(path).map_err(io_err("inspect", path))?;
        listener
            .set_nonblocking(true)
            .map_err(io_err("configure", path))?;
        Ok(Self {
            listener: Some(listener),
            path: path.to_owned(),
            inode: Some((meta.dev(), meta.ino())),
        })
    }

    /// Serves on a listening socket systemd passed (socket activation);
    /// its file is systemd's and stays when mcsd stops.
    pub fn inherited(fd: std::os::fd::OwnedFd) -> Result<Self, SocketError> {
        let listener = std::os::unix::net::UnixListener::from(fd);
        let path = listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(Path::to_owned))
            .unwrap_or_else(|| PathBuf::from("(socket from systemd)"));
        listener
            .set_nonblocking(true)
            .map_err(io_err("configure", &path))?;
        Ok(Self {
            listener: Some(listener),
            path,
            inode: None,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the listener for the async runtime; the file stays owned by
    /// `self` and is removed when `self` drops.
    pub fn listener(&mut self) -> io::Result<tokio::net::UnixListener> {
        let std = self
            .listener
            .take()
            .ok_or_else(|| io::Error::other("listener already taken"))?;
        tokio::net::UnixListener::from_std(std)
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        // Another instance may have replaced the file since; only remove ours.
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if Some((meta.dev(), meta.ino())) == self.inode {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_with_mode_0660_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/mcsd.sock");
        let socket = BoundSocket::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, SOCKET_MODE);
        drop(socket);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn refuses_a_live_socket_and_non_sockets_replaces_a_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mcsd.sock");
        let mut live = BoundSocket::bind(&path).unwrap();
        let _listener = live.listener().unwrap();
        assert!(matches!(
            BoundSocket::bind(&path),
            Err(SocketError::InUse { .. })
        ));
        drop(_listener);
        // A socket file nobody listens on is stale: replaced.
        std::mem::forget(live);
        let replaced = BoundSocket::bind(&path).unwrap();
        drop(replaced);

        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, "keep me").unwrap();
        assert!(matches!(
            BoundSocket::bind(&file),
            Err(SocketError::NotASocket { .. })
        ));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    }
}
