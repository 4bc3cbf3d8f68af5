//! Configuration: the TOML file, command-line overrides, and validation into
//! typed values. The rest of mcsd never parses a configuration string again.
//!
//! Unknown keys and bad values are refused with `file:line` and what is
//! wrong, so a typo cannot silently fall back to a default.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::context::{host_contexts_candidates, Template};
use crate::id::NodeName;
use crate::level::CategoryRange;
use crate::store::backend::{StoreSection, StoreSettings};

/// Default location of the configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/mcsd/mcsd.toml";
/// Default socket path.
pub const DEFAULT_SOCKET: &str = "/run/mcsd/mcsd.sock";
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/mcsd";

/// mcsd's effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the gRPC socket lives.
    pub socket: PathBuf,
    /// Where the store lives.
    pub state_dir: PathBuf,
    /// The categories handed out.
    pub range: CategoryRange,
    /// Process context template, if configured.
    pub process_template: Option<Template>,
    /// File context template, if configured.
    pub file_template: Option<Template>,
    /// Host contexts files to read templates from when not configured.
    pub host_contexts: Vec<PathBuf>,
    /// Where the records live (`[store]`): sled (default) or etcd.
    pub store: StoreSettings,
    /// This instance's name, recorded with each allocation
    /// (`--node-name`); `None` means the host name.
    pub node_name: Option<NodeName>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            socket: DEFAULT_SOCKET.into(),
            state_dir: DEFAULT_STATE_DIR.into(),
            range: CategoryRange::FULL,
            process_template: None,
            file_template: None,
            host_contexts: host_contexts_candidates(),
            store: StoreSettings::Sled,
            node_name: None,
        }
    }
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or wrong types.
    #[error("{path}:{line}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What the parser said.
        message: String,
    },
    /// A value is well-formed TOML but not acceptable.
    #[error("{path}:{line}: {key}: {message}")]
    Value {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The key.
        key: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A command-line value is not acceptable.
    #[error("{flag}: {message}")]
    Flag {
        /// The flag, e.g. `--categories`.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    socket: Option<Spanned<PathBuf>>,
    state_dir: Option<Spanned<PathBuf>>,
    categories: Option<Spanned<String>>,
    labels: Option<LabelsSection>,
    store: Option<StoreSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LabelsSection {
    process: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
}

fn line_of(text: &str, span: Range<usize>) -> usize {
    text[..span.start.min(text.len())].matches('\n').count() + 1
}

impl Config {
    /// Reads `path` and applies it over the defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::default().apply_toml(&text, path)
    }

    /// Applies the TOML `text` (read from `path`, for messages) over `self`.
    pub fn apply_toml(mut self, text: &str, path: &Path) -> Result<Self, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            line: e.span().map_or(1, |s| line_of(text, s)),
            message: e.message().trim().to_owned(),
        })?;
        let value_err = |key, span: Range<usize>, message: String| ConfigError::Value {
            path: path.to_owned(),
            line: line_of(text, span),
            key,
            message,
        };
        if let Some(socket) = file.socket {
            let span = socket.span();
            self.socket = absolute("socket", socket.into_inner())
                .map_err(|m| value_err("socket", span, m))?;
        }
        if let Some(dir) = file.state_dir {
            let span = dir.span();
            self.state_dir = absolute("state_dir", dir.into_inner())
                .map_err(|m| value_err("state_dir", span, m))?;
        }
        if let Some(categories) = file.categories {
            self.range = categories
                .get_ref()
                .parse()
                .map_err(|e| value_err("categories", categories.span(), format!("{e}")))?;
        }
        if let Some(labels) = file.labels {
            if let Some(process) = labels.process {
                self.process_template =
                    Some(process.get_ref().parse().map_err(|e| {
                        value_err("labels.process", process.span(), format!("{e}"))
                    })?);
            }
            if let Some(file) = labels.file {
                self.file_template = Some(
                    file.get_ref()
                        .parse()
                        .map_err(|e| value_err("labels.file", file.span(), format!("{e}")))?,
                );
            }
        }
        if let Some(store) = file.store {
            self.store = store
                .validate()
                .map_err(|(key, span, message)| value_err(key, span, message))?;
        }
        Ok(self)
    }

    /// Applies a `--node-name` value.
    pub fn set_node_name(&mut self, value: &str) -> Result<(), ConfigError> {
        self.node_name = Some(NodeName::new(value).map_err(|e| ConfigError::Flag {
            flag: "--node-name",
            message: e.to_string(),
        })?);
        Ok(())
    }

    /// The node name in force: `--node-name`, else the host name.
    pub fn node(&self) -> Result<NodeName, ConfigError> {
        if let Some(node) = &self.node_name {
            return Ok(node.clone());
        }
        let host = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        NodeName::new(host.clone()).map_err(|e| ConfigError::Flag {
            flag: "--node-name",
            message: format!(
                "the host name {host:?} cannot name this node ({e}); give one with --node-name"
            ),
        })
    }

    /// Applies a `--categories` value.
    pub fn set_categories(&mut self, value: &str) -> Result<(), ConfigError> {
        self.range = value.parse().map_err(|e| ConfigError::Flag {
            flag: "--categories",
            message: format!("{e}"),
        })?;
        Ok(())
    }
}

fn absolute(key: &str, path: PathBuf) -> Result<PathBuf, String> {
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(format!(
            "{} is relative; {key} must be an absolute path",
            path.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::default().apply_toml(text, Path::new("/etc/mcsd/mcsd.toml"))
    }

    #[test]
    fn a_full_file_is_applied() {
        let c = parse(
            "socket = \"/tmp/m.sock\"\nstate_dir = \"/tmp/state\"\ncategories = \"c0.c9\"\n\
             [labels]\nprocess = \"u:r:p_t\"\nfile = \"u:object_r:f_t\"\n",
        )
        .unwrap();
        assert_eq!(c.socket, PathBuf::from("/tmp/m.sock"));
        assert_eq!(c.state_dir, PathBuf::from("/tmp/state"));
        assert_eq!(c.range.pairs(), 45);
        assert_eq!(c.process_template.unwrap().to_string(), "u:r:p_t");
        assert_eq!(c.file_template.unwrap().to_string(), "u:object_r:f_t");
    }

    #[test]
    fn the_store_table_selects_the_backend() {
        let c = parse(
            "[store]\nbackend = \"etcd\"\n[store.etcd]\nendpoints = [\"http://127.0.0.1:2379\"]\n",
        )
        .unwrap();
        assert!(matches!(c.store, StoreSettings::Etcd(ref e) if e.prefix == "/mcsd/"));
        assert_eq!(parse("").unwrap().store, StoreSettings::Sled);
    }

    #[test]
    fn the_node_name_defaults_to_the_host_name_and_is_validated() {
        let mut c = Config::default();
        let host = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        assert_eq!(c.node().unwrap().as_str(), host);
        c.set_node_name("node-7.example").unwrap();
        assert_eq!(c.node().unwrap().as_str(), "node-7.example");
        let err = c.set_node_name("a b").unwrap_err().to_string();
        assert!(err.starts_with("--node-name: node contains ' '"), "{err}");
    }

    #[test]
    fn an_empty_file_keeps_the_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.range, CategoryRange::FULL);
        assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases = [
            (
                "socket = \"/s\"\ncolour = 1\n",
                "/etc/mcsd/mcsd.toml:2:",
                "colour",
            ),
            (
                "\n\ncategories = \"c9.c0\"\n",
                ":3: categories:",
                "reversed",
            ),
            ("categories = 5\n", ":1:", "string"),
            (
                "state_dir = \"relative/dir\"\n",
                ":1: state_dir:",
                "absolute",
            ),
            (
                "[labels]\nprocess = \"nocolons\"\n",
                ":2: labels.process:",
                "user:role:type",
            ),
            ("[labels]\nfile = \"a:b:c\"\nextra = 1\n", ":3:", "extra"),
            ("socket = \n", ":1:", ""),
            (
                "[store]\nbackend = \"etcd\"\n[store.etcd]\nendpoints = [\"tcp://x:1\"]\n",
                ":4: store.etcd.endpoints:",
                "http://HOST:PORT",
            ),
            (
                "[store]\nbackend = \"zk\"\n",
                ":2: store.backend:",
                "\"zk\"",
            ),
            ("[store]\nengine = 1\n", ":2:", "engine"),
        ];
        for (text, location, hint) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(location), "{text:?}: {err}");
            assert!(err.contains(hint), "{text:?}: {err}");
        }
    }
}
