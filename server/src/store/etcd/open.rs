//! Opening the etcd store: how to reach etcd ([`Settings`]), the
//! connection (TLS, credentials, keep-alives) and the check that the prefix
//! holds mcsd's format and category range.
//!
//! The settings are plain values: the configuration reads and validates
//! them (`[store.etcd]`) and hands them down, so the store knows no file
//! format.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, Identity, TlsOptions, Txn as EtcdTxn,
    TxnOp, TxnOpResponse,
};

use super::{EtcdStore, RANGE_KEY};
use crate::level::CategoryRange;
use crate::store::codec::{FORMAT_KEY, FORMAT_VERSION};
use crate::store::StoreError;

/// Default key prefix in etcd.
pub const DEFAULT_PREFIX: &str = "/mcsd/";
/// Default time limit of one etcd request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Client URLs, `http://host:port` or `https://host:port`.
    pub endpoints: Vec<String>,
    /// Every key mcsd writes starts with this; instances that share it
    /// share one pool. Ends with `/`.
    pub prefix: String,
    /// TLS, required for `https://` endpoints.
    pub tls: Option<Tls>,
    /// etcd user and password, if etcd has authentication enabled.
    pub auth: Option<Auth>,
    /// Time limit of one request.
    pub timeout: Duration,
}

/// TLS files for etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// CA certificate (PEM) that signed the etcd servers' certificates.
    pub ca: PathBuf,
    /// Client certificate and key (PEM), for etcd's `--client-cert-auth`.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// etcd credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Auth {
    /// The etcd user.
    pub user: String,
    /// Its password.
    pub password: Password,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdAuth")
            .field("user", &self.user)
            .field("password", &self.password)
            .finish()
    }
}

/// Where the etcd password comes from. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub enum Password {
    /// Written in the configuration file.
    Inline(String),
    /// Read from this file at start (trailing newline removed).
    File(PathBuf),
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Password::Inline(_) => f.write_str("Inline(<redacted>)"),
            Password::File(path) => write!(f, "File({})", path.display()),
        }
    }
}

impl Password {
    /// The password itself.
    pub fn read(&self) -> Result<String, String> {
        match self {
            Password::Inline(p) => Ok(p.clone()),
            Password::File(path) => std::fs::read_to_string(path)
                .map(|p| p.trim_end_matches(['\n', '\r']).to_owned())
                .map_err(|e| format!("cannot read the etcd password file {}: {e}", path.display())),
        }
    }
}

/// etcd hangs up on a TLS client without a certificate when it requires
/// one, and the transport only says the connection broke: say what to check.
fn with_tls_hint(settings: &Settings, detail: String) -> String {
    let broke = ["connection closed", "broken pipe", "transport error"]
        .iter()
        .any(|m| detail.contains(m));
    match &settings.tls {
        Some(tls) if tls.identity.is_none() && broke => format!(
            "{detail}; if etcd requires client certificates (--client-cert-auth), set store.etcd.cert and store.etcd.key"
        ),
        _ => detail,
    }
}

fn read_file(what: &str, path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the etcd {what} {}: {e}", path.display()))
}

impl EtcdStore {
    /// Connects, and checks that the prefix holds mcsd's format and the same
    /// category `range` (recording both if the prefix is empty).
    pub async fn connect(settings: &Settings, range: CategoryRange) -> Result<Self, StoreError> {
        let description = format!(
            "etcd {} prefix {}",
            settings.endpoints.join(","),
            settings.prefix
        );
        let open_err = |detail: String| StoreError::Open {
            path: description.clone().into(),
            detail,
        };
        let mut options = ConnectOptions::new()
            .with_connect_timeout(settings.timeout)
            // Notices a member that vanished without closing the connection
            // (its host died); etcd refuses pings more often than every 5 s.
            .with_keep_alive(Duration::from_secs(10), settings.timeout)
            // A member cut off from the others has no leader: refuse its
            // answers rather than read stale data from it.
            .with_require_leader(true);
        if let Some(tls) = &settings.tls {
            let mut config = TlsOptions::new().ca_certificate(Certificate::from_pem(
                read_file("CA", &tls.ca).map_err(open_err)?,
            ));
            if let Some((cert, key)) = &tls.identity {
                config = config.identity(Identity::from_pem(
                    read_file("client certificate", cert).map_err(open_err)?,
                    read_file("client key", key).map_err(open_err)?,
                ));
            }
            options = options.with_tls(config);
        }
        if let Some(auth) = &settings.auth {
            let password = auth.password.read().map_err(open_err)?;
            options = options
                .with_user(auth.user.clone(), password)
                .with_auto_token_refresh(true);
        }
        let client = tokio::time::timeout(
            settings.timeout,
            Client::connect(&settings.endpoints, Some(options)),
        )
        .await
        .map_err(|_| open_err(format!("no answer within {:?}", settings.timeout)))?
        .map_err(|e| open_err(with_tls_hint(settings, e.to_string())))?;
        let store = Self {
            kv: client.kv_client(),
            client,
            prefix: settings.prefix.as_bytes().to_vec(),
            description: description.clone(),
            timeout: settings.timeout,
            own: Arc::default(),
            seen: Arc::default(),
            loaded_at: AtomicI64::new(0),
        };
        store.check_format(range).await.map_err(|e| match e {
            StoreError::Unreachable { detail, .. } | StoreError::Io { detail, .. } => {
                open_err(with_tls_hint(settings, detail))
            }
            other => other,
        })?;
        Ok(store)
    }

    /// Records the format and range in an empty prefix, or checks them.
    async fn check_format(&self, range: CategoryRange) -> Result<(), StoreError> {
        let format_key = self.key(FORMAT_KEY);
        let range_key = self.key(RANGE_KEY);
        let empty = Compare::version(self.prefix.clone(), CompareOp::Equal, 0).with_prefix();
        let response = self
            .txn(
                EtcdTxn::new()
                    .when([empty])
                    .and_then([
                        TxnOp::put(format_key.clone(), FORMAT_VERSION.to_be_bytes(), None),
                        TxnOp::put(range_key.clone(), range.to_string(), None),
                    ])
                    .or_else([TxnOp::get(format_key, None), TxnOp::get(range_key, None)]),
                false,
            )
            .await?;
        if response.succeeded() {
            return Ok(());
        }
        let values: Vec<Option<Vec<u8>>> = response
            .op_responses()
            .into_iter()
            .map(|r| match r {
                TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.value().to_vec()),
                _ => None,
            })
            .collect();
        let corrupt = |detail: String| StoreError::Corrupt {
            path: self.description.clone().into(),
            detail,
        };
        let Some(Some(format)) = values.first() else {
            return Err(corrupt("it holds records but no format version".into()));
        };
        let found = <[u8; 4]>::try_from(format.as_slice())
            .map(u32::from_be_bytes)
            .map_err(|_| {
                corrupt(format!(
                    "format version record is {} bytes, not 4",
                    format.len()
                ))
            })?;
        if found != FORMAT_VERSION {
            return Err(StoreError::UnknownFormat {
                path: self.description.clone().into(),
                found: found.to_string(),
                supported: FORMAT_VERSION,
            });
        }
        let Some(Some(stored)) = values.get(1) else {
            return Err(corrupt("it holds records but no category range".into()));
        };
        let stored = String::from_utf8_lossy(stored);
        if stored != range.to_string() {
            return Err(StoreError::Open {
                path: self.description.clone().into(),
                detail: format!(
                    "the mcsd instances sharing it hand out categories {stored}, but this one is configured with {range}; \
                     every instance sharing a prefix must use the same categories (to change them for all, stop them, \
                     set {}{} to the new range with etcdctl, and start them with it)",
                    String::from_utf8_lossy(&self.prefix),
                    String::from_utf8_lossy(RANGE_KEY),
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_printed() {
        let auth = Auth {
            user: "mcsd".into(),
            password: Password::Inline("hunter2".into()),
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        assert_eq!(Password::File(file).read().unwrap(), "s3cret");
        let missing = Password::File(dir.path().join("nope")).read().unwrap_err();
        assert!(
            missing.contains("cannot read the etcd password file"),
            "{missing}"
        );
    }
}
