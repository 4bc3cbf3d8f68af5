//! Where Prometheus metrics are served (`[metrics] listen`): a loopback
//! TCP address or a Unix socket, never an address other hosts can reach.

use std::path::PathBuf;

/// A metrics listener address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsListen {
    /// A TCP address; must be loopback.
    Tcp(std::net::SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

impl std::fmt::Display for MetricsListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "{a}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl std::str::FromStr for MetricsListen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(format!("{s:?}: the socket path must be absolute"));
            }
            return Ok(Self::Unix(path));
        }
        let addr: std::net::SocketAddr = s.parse().map_err(|_| {
            format!("{s:?} is neither HOST:PORT nor unix:/PATH (e.g. \"127.0.0.1:9464\")")
        })?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{addr} is not a loopback address; metrics are served on 127.0.0.1, ::1 or a Unix socket only"
            ));
        }
        Ok(Self::Tcp(addr))
    }
}
