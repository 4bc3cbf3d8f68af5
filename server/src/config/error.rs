//! How a refused configuration is reported: `file:line: key: message`, so
//! the operator goes straight to the line to fix.

use std::ops::Range;
use std::path::{Path, PathBuf};

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

/// A value a section refused: the key, where in the text it was written,
/// and what is wrong. [`Invalid::locate`] turns it into the
/// [`ConfigError::Value`] users see, once the file it came from is known.
#[derive(Debug)]
pub(super) struct Invalid {
    /// The key, spelled as in the file (`store.etcd.endpoints`).
    pub(super) key: &'static str,
    /// Its byte range in the text.
    pub(super) span: Range<usize>,
    /// What is wrong and how to fix it.
    pub(super) message: String,
}

impl Invalid {
    /// `key`, written at `span`, is refused because of `message`.
    pub(super) fn new(key: &'static str, span: Range<usize>, message: impl Into<String>) -> Self {
        Self {
            key,
            span,
            message: message.into(),
        }
    }

    /// The error naming `path` and the line of `text` the value is on.
    pub(super) fn locate(self, text: &str, path: &Path) -> ConfigError {
        ConfigError::Value {
            path: path.to_owned(),
            line: line_of(text, self.span),
            key: self.key,
            message: self.message,
        }
    }
}

/// The TOML parser's refusal (bad syntax, an unknown key, a wrong type),
/// at its line.
pub(super) fn syntax(error: toml::de::Error, text: &str, path: &Path) -> ConfigError {
    ConfigError::Syntax {
        path: path.to_owned(),
        line: error.span().map_or(1, |s| line_of(text, s)),
        message: error.message().trim().to_owned(),
    }
}

/// The 1-based line of `text` that `span` starts on.
fn line_of(text: &str, span: Range<usize>) -> usize {
    text[..span.start.min(text.len())].matches('\n').count() + 1
}
