//! Which store mcsd keeps its records in (the `[store]` table), and opening
//! it.
//!
//! sled, embedded under the state directory, is the default: one host, one
//! authority, nothing to run beside mcsd. etcd makes several hosts one
//! authority: every mcsd pointed at the same prefix shares one pool, so a
//! pair held on one host is held on all of them (needed when hosts share
//! volumes over NFS, CephFS or GlusterFS). Switching is configuration only.
//!
//! Settings are validated here, when the configuration is read, so a typo is
//! refused with its line instead of failing at the first connection.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

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

impl StoreSettings {
    /// The `[store]` table spelled out (for `mcsd --check-config`). An
    /// inline password is never printed.
    pub fn to_toml(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
        let path = |p: &Path| q(&p.display().to_string());
        let etcd = match self {
            StoreSettings::Sled => return "\n[store]\nbackend = \"sled\"\n".to_owned(),
            StoreSettings::Etcd(etcd) => etcd,
        };
        let mut out = String::from("\n[store]\nbackend = \"etcd\"\n\n[store.etcd]\n");
        let endpoints: Vec<String> = etcd.endpoints.iter().map(|e| q(e)).collect();
        out.push_str(&format!("endpoints = [{}]\n", endpoints.join(", ")));
        out.push_str(&format!("prefix = {}\n", q(&etcd.prefix)));
        out.push_str(&format!("timeout_ms = {}\n", etcd.timeout.as_millis()));
        if let Some(tls) = &etcd.tls {
            out.push_str(&format!("ca = {}\n", path(&tls.ca)));
            if let Some((cert, key)) = &tls.identity {
                out.push_str(&format!("cert = {}\nkey = {}\n", path(cert), path(key)));
            }
        }
        if let Some(auth) = &etcd.auth {
            out.push_str(&format!("user = {}\n", q(&auth.user)));
            match &auth.password {
                Password::Inline(_) => out.push_str("# password: set in the file, not shown\n"),
                Password::File(p) => out.push_str(&format!("password_file = {}\n", path(p))),
            }
        }
        out
    }
}

/// The `[store]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoreSection {
    backend: Option<Spanned<String>>,
    etcd: Option<Spanned<EtcdSection>>,
}

/// The `[store.etcd]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EtcdSection {
    endpoints: Option<Spanned<Vec<String>>>,
    prefix: Option<Spanned<String>>,
    ca: Option<Spanned<PathBuf>>,
    cert: Option<Spanned<PathBuf>>,
    key: Option<Spanned<PathBuf>>,
    user: Option<Spanned<String>>,
    password: Option<Spanned<String>>,
    password_file: Option<Spanned<PathBuf>>,
    timeout_ms: Option<Spanned<u64>>,
}

/// A refused `[store]` value: the key, where it was written, and why.
pub(crate) type SettingError = (&'static str, Range<usize>, String);

impl StoreSection {
    /// Validates the table into settings.
    pub(crate) fn validate(self) -> Result<StoreSettings, SettingError> {
        let backend_span = self.backend.as_ref().map_or(0..0, Spanned::span);
        let etcd = match self.backend {
            None => "sled".to_owned(),
            Some(b) => match b.get_ref().as_str() {
                "sled" | "etcd" => b.into_inner(),
                other => {
                    return Err((
                        "store.backend",
                        b.span(),
                        format!("{other:?} is not a store backend; use \"sled\" (the default, one host) or \"etcd\" (shared by several hosts)"),
                    ))
                }
            },
        } == "etcd";
        match (etcd, self.etcd) {
            (false, None) => Ok(StoreSettings::Sled),
            (false, Some(section)) => Err((
                "store.etcd",
                section.span(),
                "[store.etcd] is set but store.backend is not \"etcd\"; add backend = \"etcd\" under [store] to use it, or remove [store.etcd]".into(),
            )),
            (true, None) => Err((
                "store.backend",
                backend_span,
                "backend = \"etcd\" needs a [store.etcd] table with at least endpoints".into(),
            )),
            (true, Some(section)) => {
                let span = section.span();
                section.into_inner().validate(span).map(StoreSettings::Etcd)
            }
        }
    }
}

fn absolute(key: &'static str, path: Spanned<PathBuf>) -> Result<PathBuf, SettingError> {
    if path.get_ref().is_absolute() {
        Ok(path.into_inner())
    } else {
        Err((
            key,
            path.span(),
            format!(
                "{} is relative; {key} must be an absolute path",
                path.get_ref().display()
            ),
        ))
    }
}

/// Checks one endpoint URL; returns whether it is `https`.
fn endpoint(url: &str) -> Result<bool, String> {
    let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(format!(
            "{url:?} is not an etcd client URL; write http://HOST:PORT or https://HOST:PORT"
        ));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let port_ok = authority
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !port_ok || authority.contains('/') {
        return Err(format!(
            "{url:?} needs a host and a port and nothing after them, e.g. http://127.0.0.1:2379"
        ));
    }
    Ok(https)
}

impl EtcdSection {
    fn validate(self, table: Range<usize>) -> Result<EtcdSettings, SettingError> {
        let Some(endpoints) = self.endpoints else {
            return Err((
                "store.etcd.endpoints",
                table,
                "is missing; list etcd's client URLs, e.g. endpoints = [\"http://127.0.0.1:2379\"]"
                    .into(),
            ));
        };
        let span = endpoints.span();
        let endpoints = endpoints.into_inner();
        if endpoints.is_empty() {
            return Err((
                "store.etcd.endpoints",
                span,
                "is empty; list at least one etcd client URL".into(),
            ));
        }
        let mut schemes = Vec::new();
        for url in &endpoints {
            schemes.push(endpoint(url).map_err(|m| ("store.etcd.endpoints", span.clone(), m))?);
        }
        let https = schemes[0];
        if schemes.iter().any(|&s| s != https) {
            return Err((
                "store.etcd.endpoints",
                span,
                "mixes http:// and https:// endpoints; use one scheme for all".into(),
            ));
        }

        let prefix = match self.prefix {
            None => DEFAULT_ETCD_PREFIX.to_owned(),
            Some(p) if p.get_ref().is_empty() || !p.get_ref().ends_with('/') => {
                return Err((
                    "store.etcd.prefix",
                    p.span(),
                    format!(
                        "{:?} must be non-empty and end with '/', so that one prefix cannot be the start of another (e.g. \"/mcsd/\")",
                        p.get_ref()
                    ),
                ))
            }
            Some(p) => p.into_inner(),
        };

        let ca = self.ca.map(|p| absolute("store.etcd.ca", p)).transpose()?;
        let identity = match (self.cert, self.key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((
                absolute("store.etcd.cert", cert)?,
                absolute("store.etcd.key", key)?,
            )),
            (Some(cert), None) => {
                return Err((
                    "store.etcd.cert",
                    cert.span(),
                    "a client certificate needs its key: set store.etcd.key too".into(),
                ))
            }
            (None, Some(key)) => {
                return Err((
                    "store.etcd.key",
                    key.span(),
                    "a client key needs its certificate: set store.etcd.cert too".into(),
                ))
            }
        };
        let tls = match (https, ca) {
            (true, Some(ca)) => Some(EtcdTls { ca, identity }),
            (true, None) => {
                return Err((
                    "store.etcd.ca",
                    span,
                    "https:// endpoints need store.etcd.ca, the CA certificate that signed etcd's server certificates".into(),
                ))
            }
            (false, None) if identity.is_none() => None,
            (false, _) => {
                return Err((
                    "store.etcd.endpoints",
                    span,
                    "TLS files (ca, cert, key) are set but the endpoints are http://; use https:// endpoints".into(),
                ))
            }
        };

        let password = match (self.password, self.password_file) {
            (Some(p), Some(f)) => {
                return Err((
                    "store.etcd.password_file",
                    f.span().start.min(p.span().start)..f.span().end,
                    "set password or password_file, not both".into(),
                ))
            }
            (Some(p), None) => Some((p.span(), Password::Inline(p.into_inner()))),
            (None, Some(f)) => {
                let span = f.span();
                Some((
                    span,
                    Password::File(absolute("store.etcd.password_file", f)?),
                ))
            }
            (None, None) => None,
        };
        let auth = match (self.user, password) {
            (None, None) => None,
            (Some(user), Some((_, password))) if !user.get_ref().is_empty() => Some(EtcdAuth {
                user: user.into_inner(),
                password,
            }),
            (Some(user), Some(_)) => {
                return Err(("store.etcd.user", user.span(), "is empty".into()))
            }
            (Some(user), None) => {
                return Err((
                    "store.etcd.user",
                    user.span(),
                    "an etcd user needs a password: set store.etcd.password_file (or password)"
                        .into(),
                ))
            }
            (None, Some((span, _))) => {
                return Err((
                    "store.etcd.user",
                    span,
                    "a password needs the etcd user it belongs to: set store.etcd.user".into(),
                ))
            }
        };

        let timeout = match self.timeout_ms {
            None => DEFAULT_ETCD_TIMEOUT,
            Some(ms) if (1..=600_000).contains(ms.get_ref()) => {
                Duration::from_millis(ms.into_inner())
            }
            Some(ms) => {
                return Err((
                    "store.etcd.timeout_ms",
                    ms.span(),
                    format!(
                        "{} is out of bounds; give 1 to 600000 milliseconds",
                        ms.get_ref()
                    ),
                ))
            }
        };
        Ok(EtcdSettings {
            endpoints,
            prefix,
            tls,
            auth,
            timeout,
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<StoreSettings, String> {
        #[derive(Deserialize)]
        struct File {
            store: StoreSection,
        }
        // Every error starts with where it points: the key a value is
        // refused for, or, for a syntax error, the line (as config.rs
        // reports them).
        let line = |offset: usize| text[..offset].matches('\n').count() + 1;
        let file: File = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start);
            format!("line {}: {}", line(at), e.message())
        })?;
        file.store
            .validate()
            .map_err(|(key, span, message)| format!("{key} (line {}): {message}", line(span.start)))
    }

    #[test]
    fn sled_is_the_default_and_etcd_takes_every_setting() {
        assert_eq!(parse("[store]\n").unwrap(), StoreSettings::Sled);
        assert_eq!(
            parse("[store]\nbackend = \"sled\"\n").unwrap(),
            StoreSettings::Sled
        );
        let s = parse(
            "[store]\nbackend = \"etcd\"\n[store.etcd]\n\
             endpoints = [\"https://10.0.0.1:2379\", \"https://etcd-2.example:2379/\"]\n\
             prefix = \"/clusters/a/mcsd/\"\nca = \"/etc/mcsd/ca.pem\"\n\
             cert = \"/etc/mcsd/c.pem\"\nkey = \"/etc/mcsd/k.pem\"\n\
             user = \"mcsd\"\npassword_file = \"/etc/mcsd/pw\"\ntimeout_ms = 2500\n",
        )
        .unwrap();
        let StoreSettings::Etcd(e) = s else {
            panic!("not etcd")
        };
        assert_eq!(e.endpoints.len(), 2);
        assert_eq!(e.prefix, "/clusters/a/mcsd/");
        let tls = e.tls.unwrap();
        assert_eq!(tls.ca, PathBuf::from("/etc/mcsd/ca.pem"));
        assert_eq!(
            tls.identity,
            Some(("/etc/mcsd/c.pem".into(), "/etc/mcsd/k.pem".into()))
        );
        let auth = e.auth.unwrap();
        assert_eq!(auth.user, "mcsd");
        assert_eq!(auth.password, Password::File("/etc/mcsd/pw".into()));
        assert_eq!(e.timeout, Duration::from_millis(2500));

        let plain = parse(
            "[store]\nbackend = \"etcd\"\n[store.etcd]\nendpoints = [\"http://127.0.0.1:2379\"]\n",
        )
        .unwrap();
        let StoreSettings::Etcd(p) = plain else {
            panic!("not etcd")
        };
        assert_eq!(p.prefix, DEFAULT_ETCD_PREFIX);
        assert_eq!(
            (p.tls, p.auth, p.timeout),
            (None, None, DEFAULT_ETCD_TIMEOUT)
        );
    }

    #[test]
    fn bad_settings_are_refused_naming_the_key() {
        let etcd = |rest: &str| format!("[store]\nbackend = \"etcd\"\n[store.etcd]\n{rest}");
        let ok = "endpoints = [\"http://127.0.0.1:2379\"]\n";
        let tls = "endpoints = [\"https://127.0.0.1:2379\"]\nca = \"/ca.pem\"\n";
        let cases = [
            (
                "[store]\nbackend = \"redis\"\n".to_owned(),
                "store.backend",
                "not a store backend",
            ),
            (
                "[store]\nbackend = \"etcd\"\n".to_owned(),
                "store.backend",
                "needs a [store.etcd]",
            ),
            (
                "[store]\n[store.etcd]\nendpoints = []\n".to_owned(),
                "store.etcd",
                "backend is not \"etcd\"",
            ),
            (etcd(""), "store.etcd.endpoints", "is missing"),
            (etcd("endpoints = []\n"), "store.etcd.endpoints", "is empty"),
            (
                etcd("endpoints = [\"127.0.0.1:2379\"]\n"),
                "store.etcd.endpoints",
                "http://HOST:PORT",
            ),
            (
                etcd("endpoints = [\"http://127.0.0.1\"]\n"),
                "store.etcd.endpoints",
                "a port",
            ),
            (
                etcd("endpoints = [\"http://h:2379/x\"]\n"),
                "store.etcd.endpoints",
                "nothing after",
            ),
            (
                etcd("endpoints = [\"http://a:1\", \"https://b:2\"]\nca = \"/c\"\n"),
                "store.etcd.endpoints",
                "mixes",
            ),
            (
                etcd(&format!("{ok}prefix = \"/mcsd\"\n")),
                "store.etcd.prefix",
                "end with '/'",
            ),
            (
                etcd(&format!("{ok}prefix = \"\"\n")),
                "store.etcd.prefix",
                "non-empty",
            ),
            (
                etcd("endpoints = [\"https://127.0.0.1:2379\"]\n"),
                "store.etcd.ca",
                "need store.etcd.ca",
            ),
            (
                etcd(&format!("{ok}ca = \"/ca.pem\"\n")),
                "store.etcd.endpoints",
                "use https://",
            ),
            (
                etcd(&format!("{tls}ca = \"rel.pem\"\n")),
                "line 6",
                "duplicate key",
            ),
            (
                etcd("endpoints = [\"https://127.0.0.1:2379\"]\nca = \"rel.pem\"\n"),
                "store.etcd.ca",
                "absolute",
            ),
            (
                etcd(&format!("{tls}cert = \"/c.pem\"\n")),
                "store.etcd.cert",
                "set store.etcd.key",
            ),
            (
                etcd(&format!("{tls}key = \"/k.pem\"\n")),
                "store.etcd.key",
                "set store.etcd.cert",
            ),
            (
                etcd(&format!("{ok}user = \"u\"\n")),
                "store.etcd.user",
                "needs a password",
            ),
            (
                etcd(&format!("{ok}password = \"p\"\n")),
                "store.etcd.user",
                "set store.etcd.user",
            ),
            (
                etcd(&format!(
                    "{ok}user = \"u\"\npassword = \"p\"\npassword_file = \"/p\"\n"
                )),
                "store.etcd.password_file",
                "not both",
            ),
            (
                etcd(&format!("{ok}user = \"\"\npassword = \"p\"\n")),
                "store.etcd.user",
                "is empty",
            ),
            (
                etcd(&format!("{ok}timeout_ms = 0\n")),
                "store.etcd.timeout_ms",
                "out of bounds",
            ),
            (
                etcd(&format!("{ok}colour = 1\n")),
                "line 5",
                "unknown field `colour`",
            ),
        ];
        for (text, at, hint) in cases {
            let err = parse(&text).unwrap_err();
            // The whole key (or line), not a prefix of it: "store.etcd"
            // must not pass for "store.etcd.endpoints".
            assert!(
                err.starts_with(&format!("{at}: ")) || err.starts_with(&format!("{at} (line ")),
                "{text:?}: {err}"
            );
            assert!(err.contains(hint), "{text:?}: {err}");
        }
    }
}
