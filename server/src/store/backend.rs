//! Which store mcsd keeps its records in, and opening it.
//!
//! sled, embedded under the state directory, is the default: one host, one
//! authority, nothing to run beside mcsd. etcd makes several hosts one
//! authority: every mcsd pointed at the same prefix shares one pool, so a
//! pair held on one host is held on all of them (needed when hosts share
//! volumes over NFS, CephFS or GlusterFS). Switching is configuration only.
//!
//! The settings are plain values: the configuration (`[store]`) reads and
//! validates them, so the store knows no file format.

use std::path::Path;
use std::sync::Arc;

use super::etcd::{self, EtcdStore};
use super::sled::SledStore;
use super::{Store, StoreError};
use crate::level::CategoryRange;

/// etcd's settings live with the etcd store; these are the names the
/// store's users (the benches, the etcd tests) know them by.
pub use super::etcd::{
    Auth as EtcdAuth, Password, Settings as EtcdSettings, Tls as EtcdTls,
    DEFAULT_PREFIX as DEFAULT_ETCD_PREFIX, DEFAULT_TIMEOUT as DEFAULT_ETCD_TIMEOUT,
};

/// Where the records live.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StoreSettings {
    /// The embedded sled database under the state directory (the default).
    #[default]
    Sled,
    /// An etcd cluster, shared with other mcsd instances.
    Etcd(etcd::Settings),
}

/// Opens the configured store. sled lives in `state_dir`; etcd is checked
/// to hold mcsd's format and the same category `range` (every instance
/// sharing a prefix must hand out the same categories).
pub async fn open(
    settings: &StoreSettings,
    state_dir: &Path,
    range: CategoryRange,
) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match settings {
        StoreSettings::Sled => Arc::new(SledStore::open(state_dir)?),
        StoreSettings::Etcd(etcd) => Arc::new(EtcdStore::connect(etcd, range).await?),
    })
}
