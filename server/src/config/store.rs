//! `[store]` and `[store.etcd]`: which store keeps the records, and how to
//! reach etcd. Validated here, when the configuration is read, so a typo is
//! refused with its line instead of failing at the first connection; the
//! store receives plain [`StoreSettings`].

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::absolute;
use super::error::Invalid;
use crate::store::backend::StoreSettings;
use crate::store::etcd;

/// `[store]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StoreSection {
    backend: Option<Spanned<String>>,
    etcd: Option<Spanned<EtcdSection>>,
}

/// `[store.etcd]` as written.
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

impl StoreSection {
    /// The store this table selects: sled unless `backend = "etcd"`, which
    /// needs `[store.etcd]` (and `[store.etcd]` needs it).
    pub(super) fn settings(self) -> Result<StoreSettings, Invalid> {
        let backend_span = self.backend.as_ref().map_or(0..0, Spanned::span);
        let is_etcd = match self.backend {
            None => "sled".to_owned(),
            Some(b) => match b.get_ref().as_str() {
                "sled" | "etcd" => b.into_inner(),
                other => {
                    return Err(Invalid::new(
                        "store.backend",
                        b.span(),
                        format!("{other:?} is not a store backend; use \"sled\" (the default, one host) or \"etcd\" (shared by several hosts)"),
                    ))
                }
            },
        } == "etcd";
        match (is_etcd, self.etcd) {
            (false, None) => Ok(StoreSettings::Sled),
            (false, Some(section)) => Err(Invalid::new(
                "store.etcd",
                section.span(),
                "[store.etcd] is set but store.backend is not \"etcd\"; add backend = \"etcd\" under [store] to use it, or remove [store.etcd]",
            )),
            (true, None) => Err(Invalid::new(
                "store.backend",
                backend_span,
                "backend = \"etcd\" needs a [store.etcd] table with at least endpoints",
            )),
            (true, Some(section)) => {
                let span = section.span();
                section.into_inner().settings(span).map(StoreSettings::Etcd)
            }
        }
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
    fn settings(self, table: Range<usize>) -> Result<etcd::Settings, Invalid> {
        let Some(endpoints) = self.endpoints else {
            return Err(Invalid::new(
                "store.etcd.endpoints",
                table,
                "is missing; list etcd's client URLs, e.g. endpoints = [\"http://127.0.0.1:2379\"]",
            ));
        };
        let span = endpoints.span();
        let endpoints = endpoints.into_inner();
        if endpoints.is_empty() {
            return Err(Invalid::new(
                "store.etcd.endpoints",
                span,
                "is empty; list at least one etcd client URL",
            ));
        }
        let mut schemes = Vec::new();
        for url in &endpoints {
            schemes.push(
                endpoint(url).map_err(|m| Invalid::new("store.etcd.endpoints", span.clone(), m))?,
            );
        }
        let https = schemes[0];
        if schemes.iter().any(|&s| s != https) {
            return Err(Invalid::new(
                "store.etcd.endpoints",
                span,
                "mixes http:// and https:// endpoints; use one scheme for all",
            ));
        }

        let prefix = match self.prefix {
            None => etcd::DEFAULT_PREFIX.to_owned(),
            Some(p) if p.get_ref().is_empty() || !p.get_ref().ends_with('/') => {
                return Err(Invalid::new(
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
                return Err(Invalid::new(
                    "store.etcd.cert",
                    cert.span(),
                    "a client certificate needs its key: set store.etcd.key too",
                ))
            }
            (None, Some(key)) => {
                return Err(Invalid::new(
                    "store.etcd.key",
                    key.span(),
                    "a client key needs its certificate: set store.etcd.cert too",
                ))
            }
        };
        let tls = match (https, ca) {
            (true, Some(ca)) => Some(etcd::Tls { ca, identity }),
            (true, None) => {
                return Err(Invalid::new(
                    "store.etcd.ca",
                    span,
                    "https:// endpoints need store.etcd.ca, the CA certificate that signed etcd's server certificates",
                ))
            }
            (false, None) if identity.is_none() => None,
            (false, _) => {
                return Err(Invalid::new(
                    "store.etcd.endpoints",
                    span,
                    "TLS files (ca, cert, key) are set but the endpoints are http://; use https:// endpoints",
                ))
            }
        };

        let password = match (self.password, self.password_file) {
            (Some(p), Some(f)) => {
                return Err(Invalid::new(
                    "store.etcd.password_file",
                    f.span().start.min(p.span().start)..f.span().end,
                    "set password or password_file, not both",
                ))
            }
            (Some(p), None) => Some((p.span(), etcd::Password::Inline(p.into_inner()))),
            (None, Some(f)) => {
                let span = f.span();
                Some((
                    span,
                    etcd::Password::File(absolute("store.etcd.password_file", f)?),
                ))
            }
            (None, None) => None,
        };
        let auth = match (self.user, password) {
            (None, None) => None,
            (Some(user), Some((_, password))) if !user.get_ref().is_empty() => Some(etcd::Auth {
                user: user.into_inner(),
                password,
            }),
            (Some(user), Some(_)) => {
                return Err(Invalid::new("store.etcd.user", user.span(), "is empty"))
            }
            (Some(user), None) => {
                return Err(Invalid::new(
                    "store.etcd.user",
                    user.span(),
                    "an etcd user needs a password: set store.etcd.password_file (or password)",
                ))
            }
            (None, Some((span, _))) => {
                return Err(Invalid::new(
                    "store.etcd.user",
                    span,
                    "a password needs the etcd user it belongs to: set store.etcd.user",
                ))
            }
        };

        let timeout = match self.timeout_ms {
            None => etcd::DEFAULT_TIMEOUT,
            Some(ms) if (1..=600_000).contains(ms.get_ref()) => {
                Duration::from_millis(ms.into_inner())
            }
            Some(ms) => {
                return Err(Invalid::new(
                    "store.etcd.timeout_ms",
                    ms.span(),
                    format!(
                        "{} is out of bounds; give 1 to 600000 milliseconds",
                        ms.get_ref()
                    ),
                ))
            }
        };
        Ok(etcd::Settings {
            endpoints,
            prefix,
            tls,
            auth,
            timeout,
        })
    }
}
