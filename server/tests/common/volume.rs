//! Volumes for relabel tests: trees with labels read back from the xattrs,
//! mounts, and a relabel call run to its end. Needs root.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use mcs_client::{proto, Client};
use mcsd::relabel::xattr;

/// The shared (level `s0`) file label of the test config.
pub(crate) const SHARED: &str = "system_u:object_r:container_file_t:s0";

/// Fails the test unless it runs as root.
pub(crate) fn require_root() {
    assert_eq!(
        rustix::process::geteuid().as_raw(),
        0,
        "relabel tests write security.selinux xattrs and mount file systems: run them as root"
    );
}

/// The label of `path`, read back from its xattr.
pub(crate) fn label(path: &Path) -> Option<String> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    xattr::get_at(c.as_bytes())
        .unwrap()
        .map(|l| String::from_utf8(l).unwrap())
}

/// Writes the label of `path`.
pub(crate) fn set_label(path: &Path, l: &str) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    xattr::set_at(c.as_bytes(), l.as_bytes()).unwrap();
}

/// A tree of `dirs` x `files` files, every entry labeled `initial`.
pub(crate) fn tree(root: &Path, dirs: usize, files: usize, initial: &str) -> Vec<PathBuf> {
    let mut all = vec![root.to_owned()];
    std::fs::create_dir_all(root).unwrap();
    for d in 0..dirs {
        let dir = root.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        all.push(dir.clone());
        for f in 0..files {
            let file = dir.join(format!("f{f}"));
            std::fs::write(&file, "x").unwrap();
            all.push(file);
        }
    }
    for p in &all {
        set_label(p, initial);
    }
    all
}

/// A file system mounted for the test, lazily unmounted when dropped.
pub(crate) struct Mount(PathBuf);
impl Mount {
    /// Mounts a `fstype` at `at`.
    pub(crate) fn new(fstype: &str, at: &Path) -> Self {
        std::fs::create_dir_all(at).unwrap();
        assert!(Command::new("mount")
            .args(["-t", fstype, fstype])
            .arg(at)
            .status()
            .unwrap()
            .success());
        Mount(at.to_owned())
    }
}
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Runs a relabel to its end: every message, and the final status.
pub(crate) async fn relabel(
    c: &mut Client,
    id: &str,
    path: &Path,
    shared: bool,
) -> (Vec<proto::RelabelProgress>, Result<(), tonic::Status>) {
    let request = proto::RelabelRequest {
        container_id: id.into(),
        path: path.display().to_string(),
        shared,
        ..Default::default()
    };
    let mut stream = match c.relabel(request).await {
        Ok(s) => s,
        Err(mcs_client::ClientError::Status(s)) => return (vec![], Err(s)),
        Err(e) => panic!("{e}"),
    };
    let mut messages = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(m)) => messages.push(m),
            Ok(None) => return (messages, Ok(())),
            Err(status) => return (messages, Err(status)),
        }
    }
}
