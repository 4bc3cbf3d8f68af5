//! Where other file systems are mounted below a root.
//!
//! A device number is not enough: a bind mount from the same file system
//! (`mount --bind /etc vol/etc`, or a single file bound over
//! `vol/shadow`) has the root's `st_dev`. Directories are checked by mount
//! id (`statx` `STATX_MNT_ID`, which a bind mount changes); entries that are
//! not directories cannot be opened safely to ask, so the mount table
//! (`/proc/self/mountinfo`, read once per walk) names the mount points
//! below the root. A file bind-mounted during the walk can still slip past
//! the table; directories cannot.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// The mount id of an open file or directory; `None` where the kernel
/// cannot tell (before Linux 5.8).
pub fn mount_id(fd: impl AsFd) -> Option<u64> {
    let st = rustix::fs::statx(
        fd,
        c"",
        rustix::fs::AtFlags::EMPTY_PATH,
        rustix::fs::StatxFlags::MNT_ID,
    )
    .ok()?;
    (st.stx_mask & rustix::fs::StatxFlags::MNT_ID.bits() != 0).then_some(st.stx_mnt_id)
}

/// Mount points strictly below a root, by parent directory.
#[derive(Debug, Default, Clone)]
pub struct MountPoints(HashMap<PathBuf, HashSet<OsString>>);

impl MountPoints {
    /// The mount points below `root` in `mountinfo` text.
    pub fn below(root: &Path, mountinfo: &str) -> Self {
        let mut points: HashMap<PathBuf, HashSet<OsString>> = HashMap::new();
        for line in mountinfo.lines() {
            let Some(field) = line.split(' ').nth(4) else {
                continue;
            };
            let point = PathBuf::from(OsString::from_vec(unescape(field)));
            if point == root || !point.starts_with(root) {
                continue;
            }
            if let (Some(parent), Some(name)) = (point.parent(), point.file_name()) {
                points
                    .entry(parent.to_owned())
                    .or_default()
                    .insert(name.to_owned());
            }
        }
        Self(points)
    }

    /// The mount points below `root` in this process's mount table.
    pub fn read(root: &Path) -> Self {
        std::fs::read_to_string("/proc/self/mountinfo")
            .map(|text| Self::below(root, &text))
            .unwrap_or_default()
    }

    /// The names in `dir` that are mount points, if any.
    pub fn in_dir(&self, dir: &Path) -> Option<&HashSet<OsString>> {
        self.0.get(dir)
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let n = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(n);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_below_the_root_are_found_with_escapes() {
        let info = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
41 22 254:0 /etc /srv/vol/etc rw,relatime shared:1 - ext4 /dev/vda rw
42 22 254:0 /etc/shadow /srv/vol/a\\040b/shadow rw shared:1 - ext4 /dev/vda rw
43 22 0:50 / /srv/vol rw shared:2 - tmpfs tmpfs rw
44 22 0:51 / /srv/volume2/x rw shared:2 - tmpfs tmpfs rw
";
        let m = MountPoints::below(Path::new("/srv/vol"), info);
        assert!(m
            .in_dir(Path::new("/srv/vol"))
            .unwrap()
            .contains(&OsString::from("etc")));
        assert!(m
            .in_dir(Path::new("/srv/vol/a b"))
            .unwrap()
            .contains(&OsString::from("shadow")));
        assert_eq!(
            m.0.len(),
            2,
            "the root itself and siblings are not below it: {m:?}"
        );
    }
}
