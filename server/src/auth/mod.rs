//! Who may do what: roles decided per call from the Unix socket's peer
//! credentials (SO_PEERCRED), never from anything the client says.
//!
//! - **admin** may change state: Allocate, Release, Relabel, Reserve,
//!   Unreserve, Reconcile. Root, the uid mcsd itself runs as (it owns the
//!   store anyway; this is what lets `mcsd --dev` work without root), and the
//!   configured `admin_uids` / `admin_groups`.
//! - **reader** may look: Get, List, Stats, ListReservations. The configured
//!   `reader_uids` / `reader_groups`, and every admin.
//!
//! Anyone else is refused, with a message naming the uid and the role the
//! call needs. Group membership counts the caller's primary gid and its
//! supplementary groups, read from `/proc/<pid>/status` only when the uid and
//! primary gid did not already decide (root, the common caller, costs no
//! I/O).

pub mod accounts;

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read-only calls.
    Reader,
    /// State-changing calls.
    Admin,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Reader => "reader",
            Role::Admin => "admin",
        })
    }
}

/// The process on the other end of a connection, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Effective uid at connect time.
    pub uid: u32,
    /// Effective primary gid at connect time.
    pub gid: u32,
    /// Its pid, when the kernel reports one (not across pid namespaces).
    pub pid: Option<i32>,
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "uid {} (pid {pid})", self.uid),
            None => write!(f, "uid {}", self.uid),
        }
    }
}

/// A refused call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("uid {uid} may not call {method}: it needs the {needed} role ({who})")]
pub struct Denied {
    /// The caller's uid.
    pub uid: u32,
    /// The RPC.
    pub method: &'static str,
    /// The role it needs.
    pub needed: Role,
    /// Who has that role, for the operator reading the message.
    pub who: String,
}

/// The configured role members. Admins are readers too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// Extra admin uids (root and mcsd's own uid always are).
    pub admin_uids: BTreeSet<u32>,
    /// Groups whose members are admins.
    pub admin_gids: BTreeSet<u32>,
    /// Reader uids.
    pub reader_uids: BTreeSet<u32>,
    /// Groups whose members are readers.
    pub reader_gids: BTreeSet<u32>,
}

/// Decides roles; built once from the configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    config: AuthConfig,
    /// The uid mcsd runs as.
    own_uid: u32,
    /// Where per-process status files live (`/proc`; tests point elsewhere).
    proc_root: std::path::PathBuf,
}

impl Policy {
    /// A policy for a daemon running as `own_uid`.
    pub fn new(config: AuthConfig, own_uid: u32) -> Self {
        Self {
            config,
            own_uid,
            proc_root: "/proc".into(),
        }
    }

    /// Reads supplementary groups under `root` instead of `/proc`.
    pub fn with_proc_root(mut self, root: impl AsRef<Path>) -> Self {
        self.proc_root = root.as_ref().to_owned();
        self
    }

    /// The role settings in force.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Allows `caller` to call `method` if it holds `needed`.
    pub fn check(&self, caller: &Caller, method: &'static str, needed: Role) -> Result<(), Denied> {
        let (uids, gids) = self.members(needed);
        let own = [0, self.own_uid];
        let allowed = own.contains(&caller.uid)
            || uids.iter().any(|set| set.contains(&caller.uid))
            || gids.iter().any(|set| set.contains(&caller.gid))
            || (gids.iter().any(|set| !set.is_empty())
                && self
                    .supplementary_groups(caller)
                    .iter()
                    .any(|g| gids.iter().any(|set| set.contains(g))));
        if allowed {
            Ok(())
        } else {
            Err(Denied {
                uid: caller.uid,
                method,
                needed,
                who: self.describe(needed),
            })
        }
    }

    /// The uid and gid sets that grant `role` (admins are readers too).
    fn members(&self, role: Role) -> (Vec<&BTreeSet<u32>>, Vec<&BTreeSet<u32>>) {
        let c = &self.config;
        match role {
            Role::Admin => (vec![&c.admin_uids], vec![&c.admin_gids]),
            Role::Reader => (
                vec![&c.admin_uids, &c.reader_uids],
                vec![&c.admin_gids, &c.reader_gids],
            ),
        }
    }

    fn describe(&self, role: Role) -> String {
        let (uids, gids) = self.members(role);
        let mut all_uids: BTreeSet<u32> = uids.into_iter().flatten().copied().collect();
        all_uids.insert(0);
        all_uids.insert(self.own_uid);
        let all_gids: BTreeSet<u32> = gids.into_iter().flatten().copied().collect();
        let list = |s: &BTreeSet<u32>| {
            s.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        if all_gids.is_empty() {
            format!("granted to uids {}", list(&all_uids))
        } else {
            format!(
                "granted to uids {} and members of gids {}",
                list(&all_uids),
                list(&all_gids)
            )
        }
    }

    /// The caller's supplementary groups; empty when they cannot be read
    /// (the process is gone, or in another pid namespace): a caller that
    /// cannot be checked gets no role from its groups.
    fn supplementary_groups(&self, caller: &Caller) -> Vec<u32> {
        let Some(pid) = caller.pid else {
            return Vec::new();
        };
        let path = self.proc_root.join(pid.to_string()).join("status");
        let Ok(status) = std::fs::read_to_string(&path) else {
            return Vec::new();
        };
        // The uid check guards against a recycled pid: the file must still
        // describe a process of the same effective uid.
        let field = |key: &str| status.lines().find_map(|l| l.strip_prefix(key));
        let euid = field("Uid:").and_then(|v| v.split_whitespace().nth(1)?.parse::<u32>().ok());
        if euid != Some(caller.uid) {
            return Vec::new();
        }
        field("Groups:")
            .map(|v| {
                v.split_whitespace()
                    .filter_map(|g| g.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uid: u32, gid: u32, pid: Option<i32>) -> Caller {
        Caller { uid, gid, pid }
    }

    fn set(v: &[u32]) -> BTreeSet<u32> {
        v.iter().copied().collect()
    }

    #[test]
    fn root_and_own_uid_are_admins_and_others_are_nobody_by_default() {
        let p = Policy::new(AuthConfig::default(), 1000);
        assert!(p
            .check(&caller(0, 0, None), "Allocate", Role::Admin)
            .is_ok());
        assert!(p
            .check(&caller(1000, 1000, None), "Allocate", Role::Admin)
            .is_ok());
        let denied = p
            .check(&caller(1001, 1001, None), "Stats", Role::Reader)
            .unwrap_err();
        assert_eq!(denied.uid, 1001);
        assert_eq!(
            denied.to_string(),
            "uid 1001 may not call Stats: it needs the reader role (granted to uids 0, 1000)"
        );
    }

    #[test]
    fn readers_read_and_admins_do_both() {
        let p = Policy::new(
            AuthConfig {
                admin_uids: set(&[500]),
                reader_uids: set(&[600]),
                reader_gids: set(&[70]),
                ..Default::default()
            },
            0,
        );
        assert!(p
            .check(&caller(600, 600, None), "List", Role::Reader)
            .is_ok());
        assert!(p
            .check(&caller(600, 600, None), "Release", Role::Admin)
            .is_err());
        assert!(p.check(&caller(601, 70, None), "Get", Role::Reader).is_ok());
        assert!(p
            .check(&caller(500, 500, None), "Get", Role::Reader)
            .is_ok());
        assert!(p
            .check(&caller(500, 500, None), "Reserve", Role::Admin)
            .is_ok());
        let denied = p
            .check(&caller(601, 70, None), "Reserve", Role::Admin)
            .unwrap_err();
        assert!(
            denied.to_string().contains("needs the admin role"),
            "{denied}"
        );
    }

    #[test]
    fn supplementary_groups_come_from_the_callers_status_and_must_match_its_uid() {
        let proc = tempfile::tempdir().unwrap();
        let status = |pid: i32, uid: u32, groups: &str| {
            let dir = proc.path().join(pid.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("status"),
                format!("Name:\tpodman\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nGroups:\t{groups}\n"),
            )
            .unwrap();
        };
        status(41, 1500, "10 20 30 ");
        status(42, 1234, "30");
        let p = Policy::new(
            AuthConfig {
                admin_gids: set(&[30]),
                ..Default::default()
            },
            0,
        )
        .with_proc_root(proc.path());
        assert!(p
            .check(&caller(1500, 1500, Some(41)), "Allocate", Role::Admin)
            .is_ok());
        // pid 42 now belongs to another uid: a recycled pid grants nothing.
        assert!(p
            .check(&caller(1500, 1500, Some(42)), "Allocate", Role::Admin)
            .is_err());
        // No pid, or a vanished process: no supplementary groups.
        assert!(p
            .check(&caller(1500, 1500, None), "Allocate", Role::Admin)
            .is_err());
        assert!(p
            .check(&caller(1500, 1500, Some(43)), "Allocate", Role::Admin)
            .is_err());
    }
}
