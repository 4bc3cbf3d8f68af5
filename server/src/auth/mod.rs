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
//! call needs. Group membership counts the caller's primary gid and the
//! supplementary groups it had when it connected (`SO_PEERGROUPS`, see
//! [`peer`]).
//!
//! A caller running in a container domain (its SELinux type, from
//! `SO_PEERSEC`, is one of `[auth] container_types`) is refused whatever its
//! uid: root inside a container is not the host's root, and a container that
//! could allocate, release or relabel could take or free other containers'
//! labels. `spc_t` (the "super-privileged container", run to manage the host)
//! is not a container type by default. `[auth] allow_containers = true` turns
//! the check off. Where no security module labels sockets there is no
//! context and nothing to refuse.

pub mod accounts;
pub mod peer;

use std::collections::BTreeSet;
use std::fmt;

pub use peer::PeerLabel;

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
    /// Supplementary groups at connect time; empty when the kernel could
    /// not say (then they grant nothing).
    pub groups: Vec<u32>,
    /// Its security label at connect time.
    pub label: PeerLabel,
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
pub enum Denied {
    /// The caller lacks the role.
    #[error("uid {uid} may not call {method}: it needs the {needed} role ({who})")]
    Role {
        /// The caller's uid.
        uid: u32,
        /// The RPC.
        method: &'static str,
        /// The role it needs.
        needed: Role,
        /// Who has that role, for the operator reading the message.
        who: String,
    },
    /// The caller runs in a container domain.
    #[error("uid {uid} may not call {method}: it runs in the container domain {domain} (SELinux context {context}), and a container may not manage the host's labels whatever its uid; if this caller must, set [auth] allow_containers = true in mcsd's configuration, or remove {domain} from [auth] container_types")]
    Container {
        /// The caller's uid.
        uid: u32,
        /// The RPC.
        method: &'static str,
        /// Its SELinux type.
        domain: String,
        /// Its full context.
        context: String,
    },
    /// The caller's label could not be read, so mcsd cannot tell whether it
    /// is a container: fail closed.
    #[error("uid {uid} may not call {method}: mcsd could not read its SELinux context ({reason}), so it cannot tell whether the caller runs in a container; set [auth] allow_containers = true to skip this check")]
    LabelUnreadable {
        /// The caller's uid.
        uid: u32,
        /// The RPC.
        method: &'static str,
        /// Why reading failed.
        reason: String,
    },
}

impl Denied {
    /// The refused caller's uid.
    pub fn uid(&self) -> u32 {
        match self {
            Denied::Role { uid, .. }
            | Denied::Container { uid, .. }
            | Denied::LabelUnreadable { uid, .. } => *uid,
        }
    }
}

/// The container domains refused by default: the types container-selinux
/// runs containers in (`svirt_lxc_net_t` is the older name of
/// `container_t`). Not `spc_t`: a super-privileged container is run on
/// purpose to manage the host.
pub const DEFAULT_CONTAINER_TYPES: &[&str] = &[
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_userns_t",
    "container_engine_t",
    "container_logreader_t",
    "svirt_lxc_net_t",
];

/// The configured role members. Admins are readers too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Extra admin uids (root and mcsd's own uid always are).
    pub admin_uids: BTreeSet<u32>,
    /// Groups whose members are admins.
    pub admin_gids: BTreeSet<u32>,
    /// Reader uids.
    pub reader_uids: BTreeSet<u32>,
    /// Groups whose members are readers.
    pub reader_gids: BTreeSet<u32>,
    /// SELinux types whose processes are refused every call (containers).
    pub container_types: BTreeSet<String>,
    /// Lets callers in container types through to the role check.
    pub allow_containers: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            admin_uids: BTreeSet::new(),
            admin_gids: BTreeSet::new(),
            reader_uids: BTreeSet::new(),
            reader_gids: BTreeSet::new(),
            container_types: DEFAULT_CONTAINER_TYPES
                .iter()
                .map(|t| (*t).to_owned())
                .collect(),
            allow_containers: false,
        }
    }
}

/// The type field of an SELinux context (`user:role:type[:level]`), or
/// `None` when `label` is not one (another security module's label, such as
/// AppArmor's `unconfined`).
pub fn selinux_type(label: &str) -> Option<&str> {
    let mut fields = label.splitn(4, ':');
    let (user, role, ty) = (fields.next()?, fields.next()?, fields.next()?);
    let ident = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    };
    (ident(user) && ident(role) && ident(ty)).then_some(ty)
}

/// Decides roles; built once from the configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    config: AuthConfig,
    /// The uid mcsd runs as.
    own_uid: u32,
}

impl Policy {
    /// A policy for a daemon running as `own_uid`.
    pub fn new(config: AuthConfig, own_uid: u32) -> Self {
        Self { config, own_uid }
    }

    /// The role settings in force.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Allows `caller` to call `method` if it is not a container (unless
    /// containers are allowed) and holds `needed`.
    pub fn check(&self, caller: &Caller, method: &'static str, needed: Role) -> Result<(), Denied> {
        self.check_container(caller, method)?;
        let (uids, gids) = self.members(needed);
        let own = [0, self.own_uid];
        let allowed = own.contains(&caller.uid)
            || uids.iter().any(|set| set.contains(&caller.uid))
            || gids.iter().any(|set| set.contains(&caller.gid))
            || caller
                .groups
                .iter()
                .any(|g| gids.iter().any(|set| set.contains(g)));
        if allowed {
            Ok(())
        } else {
            Err(Denied::Role {
                uid: caller.uid,
                method,
                needed,
                who: self.describe(needed),
            })
        }
    }

    /// Refuses a caller whose SELinux type is a container type.
    fn check_container(&self, caller: &Caller, method: &'static str) -> Result<(), Denied> {
        if self.config.allow_containers {
            return Ok(());
        }
        match &caller.label {
            PeerLabel::None => Ok(()),
            PeerLabel::Unreadable(reason) => Err(Denied::LabelUnreadable {
                uid: caller.uid,
                method,
                reason: reason.clone(),
            }),
            PeerLabel::Label(context) => match selinux_type(context) {
                Some(ty) if self.config.container_types.contains(ty) => Err(Denied::Container {
                    uid: caller.uid,
                    method,
                    domain: ty.to_owned(),
                    context: context.clone(),
                }),
                _ => Ok(()),
            },
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uid: u32, gid: u32, pid: Option<i32>) -> Caller {
        Caller {
            uid,
            gid,
            pid,
            groups: Vec::new(),
            label: PeerLabel::None,
        }
    }

    fn labeled(uid: u32, context: &str) -> Caller {
        Caller {
            label: PeerLabel::Label(context.to_owned()),
            ..caller(uid, uid, Some(7))
        }
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
        assert_eq!(denied.uid(), 1001);
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
    fn supplementary_groups_are_the_ones_the_caller_connected_with() {
        let p = Policy::new(
            AuthConfig {
                admin_gids: set(&[30]),
                reader_gids: set(&[40]),
                ..Default::default()
            },
            0,
        );
        let with = |groups: &[u32]| Caller {
            groups: groups.to_vec(),
            ..caller(1500, 1500, Some(41))
        };
        assert!(p.check(&with(&[10, 30]), "Allocate", Role::Admin).is_ok());
        assert!(p.check(&with(&[10, 30]), "List", Role::Reader).is_ok());
        assert!(p.check(&with(&[40]), "List", Role::Reader).is_ok());
        assert!(p.check(&with(&[40]), "Allocate", Role::Admin).is_err());
        // Groups unknown (empty): nothing granted by groups.
        assert!(p.check(&with(&[]), "List", Role::Reader).is_err());
    }

    #[test]
    fn selinux_type_is_the_third_field_of_a_context() {
        assert_eq!(
            selinux_type("system_u:system_r:container_t:s0:c1,c2"),
            Some("container_t")
        );
        assert_eq!(
            selinux_type("unconfined_u:unconfined_r:unconfined_t:s0-s0:c0.c1023"),
            Some("unconfined_t")
        );
        assert_eq!(
            selinux_type("system_u:system_r:spc_t"),
            Some("spc_t"),
            "a context without MLS field"
        );
        assert_eq!(
            selinux_type("system_u:object_r:unlabeled_t:s0"),
            Some("unlabeled_t")
        );
        // Not SELinux contexts: AppArmor labels, garbage.
        assert_eq!(selinux_type("unconfined"), None);
        assert_eq!(selinux_type("docker-default (enforce)"), None);
        assert_eq!(selinux_type("/usr/bin/podman (enforce)"), None);
        assert_eq!(selinux_type("a::container_t:s0"), None);
        assert_eq!(selinux_type("user:role"), None);
        assert_eq!(selinux_type(""), None);
    }

    #[test]
    fn container_domains_are_refused_even_as_root_unless_allowed() {
        let p = Policy::new(AuthConfig::default(), 0);
        let container = labeled(0, "system_u:system_r:container_t:s0:c1,c2");
        let denied = p.check(&container, "Allocate", Role::Admin).unwrap_err();
        assert_eq!(
            denied,
            Denied::Container {
                uid: 0,
                method: "Allocate",
                domain: "container_t".into(),
                context: "system_u:system_r:container_t:s0:c1,c2".into(),
            }
        );
        let message = denied.to_string();
        assert!(
            message.contains("container domain container_t")
                && message.contains("[auth] allow_containers = true")
                && message.contains("[auth] container_types"),
            "{message}"
        );
        // Reading is refused too: a container has no business with the
        // host's allocations.
        assert!(p.check(&container, "List", Role::Reader).is_err());
        for ty in DEFAULT_CONTAINER_TYPES {
            let c = labeled(0, &format!("system_u:system_r:{ty}:s0:c5,c6"));
            assert!(p.check(&c, "Release", Role::Admin).is_err(), "{ty}");
        }

        // Host domains, the super-privileged container, an unlabeled peer,
        // another module's label and no label at all pass to the role check.
        for context in [
            "unconfined_u:unconfined_r:unconfined_t:s0-s0:c0.c1023",
            "system_u:system_r:spc_t:s0",
            "system_u:system_r:init_t:s0",
            "system_u:object_r:unlabeled_t:s0",
            "unconfined",
        ] {
            assert!(
                p.check(&labeled(0, context), "Allocate", Role::Admin)
                    .is_ok(),
                "{context}"
            );
        }
        assert!(p
            .check(&caller(0, 0, None), "Allocate", Role::Admin)
            .is_ok());
        // A container that is not root still fails the role check after
        // containers are allowed.
        let allowing = Policy::new(
            AuthConfig {
                allow_containers: true,
                ..Default::default()
            },
            0,
        );
        assert!(allowing.check(&container, "Allocate", Role::Admin).is_ok());
        assert!(matches!(
            allowing.check(
                &labeled(1234, "system_u:system_r:container_t:s0:c1,c2"),
                "List",
                Role::Reader
            ),
            Err(Denied::Role { uid: 1234, .. })
        ));

        // The configured list replaces the default one.
        let custom = Policy::new(
            AuthConfig {
                container_types: ["my_sandbox_t".to_owned()].into(),
                ..Default::default()
            },
            0,
        );
        assert!(custom.check(&container, "Allocate", Role::Admin).is_ok());
        assert!(custom
            .check(
                &labeled(0, "system_u:system_r:my_sandbox_t:s0"),
                "Allocate",
                Role::Admin
            )
            .is_err());
    }

    #[test]
    fn an_unreadable_label_fails_closed_unless_containers_are_allowed() {
        let c = Caller {
            label: PeerLabel::Unreadable("Cannot allocate memory (os error 12)".into()),
            ..caller(0, 0, Some(9))
        };
        let denied = Policy::new(AuthConfig::default(), 0)
            .check(&c, "Allocate", Role::Admin)
            .unwrap_err();
        assert!(
            matches!(denied, Denied::LabelUnreadable { uid: 0, .. }),
            "{denied:?}"
        );
        assert!(
            denied
                .to_string()
                .contains("could not read its SELinux context"),
            "{denied}"
        );
        let allowing = Policy::new(
            AuthConfig {
                allow_containers: true,
                ..Default::default()
            },
            0,
        );
        assert!(allowing.check(&c, "Allocate", Role::Admin).is_ok());
    }
}
