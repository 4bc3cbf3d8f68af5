//! SELinux contexts: the templates labels are built from, where they come
//! from, and what the host's SELinux says about them.
//!
//! A label is a template `user:role:type` plus the allocated level. The
//! templates come, in this order, from mcsd's config, from the host's
//! container contexts (read the way container tools read them:
//! `/usr/share/containers/selinux/contexts`, else the policy's
//! `contexts/lxc_contexts`, keys `process` and `file`), or from the
//! defaults every container policy ships. Where SELinux is enabled the
//! templates are checked against the loaded policy at start.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::level::Level;

/// Where container tools keep the host's container contexts.
pub const CONTAINERS_CONTEXTS: &str = "/usr/share/containers/selinux/contexts";

/// A context without its level: `user:role:type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    user: String,
    role: String,
    kind: String,
}

/// Why a context template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a context template of the form user:role:type ({reason})")]
pub struct TemplateError {
    input: String,
    reason: &'static str,
}

impl Template {
    /// The SELinux type, e.g. `container_t`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The full context at `level`.
    pub fn at(&self, level: impl fmt::Display) -> String {
        format!("{self}:{level}")
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.user, self.role, self.kind)
    }
}

impl FromStr for Template {
    type Err = TemplateError;

    /// Parses `user:role:type`, or a full context `user:role:type:level`
    /// whose level is dropped (the host contexts files carry `:s0`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| TemplateError {
            input: s.to_owned(),
            reason,
        };
        let mut parts = s.splitn(4, ':');
        let mut next = || {
            let part = parts.next().ok_or_else(|| err("fewer than three fields"))?;
            if part.is_empty() {
                return Err(err("an empty field"));
            }
            if !part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(err("fields may hold only A-Z a-z 0-9 _"));
            }
            Ok(part.to_owned())
        };
        Ok(Template {
            user: next()?,
            role: next()?,
            kind: next()?,
        })
    }
}

/// The process and file templates labels are built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    /// For container processes, e.g. `system_u:system_r:container_t`.
    pub process: Template,
    /// For container files, e.g. `system_u:object_r:container_file_t`.
    pub file: Template,
}

impl Default for Labels {
    fn default() -> Self {
        Self {
            process: "system_u:system_r:container_t".parse().expect("valid"),
            file: "system_u:object_r:container_file_t".parse().expect("valid"),
        }
    }
}

impl Labels {
    /// The process context at `level`.
    pub fn process_label(&self, level: Level) -> String {
        self.process.at(level)
    }

    /// The file context at `level`.
    pub fn file_label(&self, level: Level) -> String {
        self.file.at(level)
    }

    /// The file context every container may use (`:z` volumes): level `s0`.
    pub fn shared_file_label(&self) -> String {
        self.file.at("s0")
    }
}

/// The MCS pair of a context such as
/// `system_u:system_r:container_t:s0:c1,c2`; `None` for contexts without
/// exactly two categories (`s0`, `s0-s0:c0.c1023`, ...), which no container
/// pair can collide with.
pub fn level_of_context(context: &str) -> Option<Level> {
    let context = context.trim_end_matches(['\0', '\n']);
    let mut parts = context.splitn(4, ':');
    let (_user, _role, _type) = (parts.next()?, parts.next()?, parts.next()?);
    let mls = parts.next()?;
    // An MLS range low-high: a process's effective level is the low end.
    let low = mls.split('-').next()?;
    low.parse().ok()
}

/// The mount option that labels a whole filesystem at mount time.
pub fn mount_option(file_label: &str) -> String {
    format!("context=\"{file_label}\"")
}

/// Where the templates in use came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelSource {
    /// mcsd's configuration.
    Config,
    /// A host contexts file.
    HostFile(PathBuf),
    /// The defaults built into mcsd.
    BuiltIn,
}

impl fmt::Display for LabelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabelSource::Config => f.write_str("configuration"),
            LabelSource::HostFile(p) => write!(f, "{}", p.display()),
            LabelSource::BuiltIn => f.write_str("built-in defaults"),
        }
    }
}

/// Why the host's contexts file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ContextsFileError {
    /// It exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A `process` or `file` entry is malformed.
    #[error("{path}:{line}: {source}")]
    Template {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        source: TemplateError,
    },
}

/// Reads `process` and `file` from a contexts file (`key = "value"` lines,
/// `#` and `;` comments), the format container-selinux and lxc_contexts use.
/// Returns `None` for a key that is absent.
pub fn read_contexts_file(
    path: &Path,
) -> Result<(Option<Template>, Option<Template>), ContextsFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ContextsFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_contexts(&text, path)
}

/// Parses the text of a contexts file (see [`read_contexts_file`]); `path`
/// is only used in messages.
pub fn parse_contexts(
    text: &str,
    path: &Path,
) -> Result<(Option<Template>, Option<Template>), ContextsFileError> {
    let (mut process, mut file) = (None, None);
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let slot = match key.trim() {
            "process" => &mut process,
            "file" => &mut file,
            _ => continue,
        };
        let value = value.trim().trim_matches('"');
        *slot = Some(
            value
                .parse()
                .map_err(|source| ContextsFileError::Template {
                    path: path.to_owned(),
                    line: n + 1,
                    source,
                })?,
        );
    }
    Ok((process, file))
}

/// The host contexts files to try, in order.
pub fn host_contexts_candidates() -> Vec<PathBuf> {
    let mut candidates = vec![PathBuf::from(CONTAINERS_CONTEXTS)];
    if let Ok(path) = selinux::path::lxc_contexts() {
        candidates.push(path.to_owned());
    }
    candidates
}

/// Picks the templates: configured ones win; else the first existing host
/// contexts file that names both; else the built-in defaults.
pub fn resolve_labels(
    configured: (Option<Template>, Option<Template>),
    candidates: &[PathBuf],
) -> Result<(Labels, LabelSource), ContextsFileError> {
    let defaults = Labels::default();
    if let (Some(process), Some(file)) = configured.clone() {
        return Ok((Labels { process, file }, LabelSource::Config));
    }
    for path in candidates.iter().filter(|p| p.exists()) {
        if let (Some(process), Some(file)) = read_contexts_file(path)? {
            let labels = Labels {
                process: configured.0.clone().unwrap_or(process),
                file: configured.1.clone().unwrap_or(file),
            };
            return Ok((labels, LabelSource::HostFile(path.clone())));
        }
    }
    let source = if configured.0.is_some() || configured.1.is_some() {
        LabelSource::Config
    } else {
        LabelSource::BuiltIn
    };
    Ok((
        Labels {
            process: configured.0.unwrap_or(defaults.process),
            file: configured.1.unwrap_or(defaults.file),
        },
        source,
    ))
}

/// The host's SELinux state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelinuxMode {
    /// SELinux is not enabled in the kernel (or not mounted).
    Disabled,
    /// Enabled, logging denials without enforcing them.
    Permissive,
    /// Enabled and enforcing.
    Enforcing,
}

impl fmt::Display for SelinuxMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SelinuxMode::Disabled => "disabled",
            SelinuxMode::Permissive => "permissive",
            SelinuxMode::Enforcing => "enforcing",
        })
    }
}

/// Asks the kernel (through libselinux) for the current mode.
pub fn selinux_mode() -> SelinuxMode {
    match selinux::current_mode() {
        selinux::SELinuxMode::Enforcing => SelinuxMode::Enforcing,
        selinux::SELinuxMode::Permissive => SelinuxMode::Permissive,
        _ => SelinuxMode::Disabled,
    }
}

/// Why the loaded policy refused a template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the loaded SELinux policy does not accept {context:?} ({which} template): check the type exists (is the container policy module installed?) or fix the template in the configuration")]
pub struct PolicyRejected {
    /// The context that was checked.
    pub context: String,
    /// "process" or "file".
    pub which: &'static str,
}

/// Checks both templates at a sample level against the loaded policy.
/// Does nothing where SELinux is disabled.
pub fn check_against_policy(labels: &Labels) -> Result<(), PolicyRejected> {
    let sample = Level::new(
        crate::level::Category::new(0).expect("c0"),
        crate::level::Category::new(1).expect("c1"),
    )
    .expect("c0 < c1");
    for (which, context) in [
        ("process", labels.process_label(sample)),
        ("file", labels.file_label(sample)),
    ] {
        let c = std::ffi::CString::new(context.clone()).map_err(|_| PolicyRejected {
            context: context.clone(),
            which,
        })?;
        let sc = selinux::SecurityContext::from_c_str(&c, false);
        if sc.check() == Some(false) {
            return Err(PolicyRejected { context, which });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_read_from_contexts_and_other_levels_ignored() {
        let l = |s: &str| level_of_context(s).map(|l| l.to_string());
        assert_eq!(
            l("system_u:system_r:container_t:s0:c1,c2\0"),
            Some("s0:c1,c2".into())
        );
        assert_eq!(
            l("system_u:system_r:container_t:s0:c5,c900\n"),
            Some("s0:c5,c900".into())
        );
        assert_eq!(
            l("system_u:system_r:svirt_t:s0:c3,c4-s0:c3,c4"),
            Some("s0:c3,c4".into())
        );
        assert_eq!(
            l("unconfined_u:unconfined_r:unconfined_t:s0-s0:c0.c1023"),
            None
        );
        assert_eq!(l("system_u:system_r:init_t:s0"), None);
        assert_eq!(l("system_u:system_r:container_t:s0:c7"), None);
        assert_eq!(l("kernel"), None);
        assert_eq!(l(""), None);
    }

    #[test]
    fn templates_parse_and_drop_levels() {
        let t: Template = "system_u:system_r:container_t:s0".parse().unwrap();
        assert_eq!(t.to_string(), "system_u:system_r:container_t");
        assert_eq!(t.at("s0:c1,c2"), "system_u:system_r:container_t:s0:c1,c2");
        for bad in ["", "a:b", "a::c", "a:b:c d", "a:b:\"c\""] {
            assert!(bad.parse::<Template>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn labels_are_built_from_templates() {
        let labels = Labels::default();
        let level: Level = "s0:c1,c2".parse().unwrap();
        assert_eq!(
            labels.process_label(level),
            "system_u:system_r:container_t:s0:c1,c2"
        );
        let file = labels.file_label(level);
        assert_eq!(file, "system_u:object_r:container_file_t:s0:c1,c2");
        assert_eq!(
            mount_option(&file),
            "context=\"system_u:object_r:container_file_t:s0:c1,c2\""
        );
        assert_eq!(
            labels.shared_file_label(),
            "system_u:object_r:container_file_t:s0"
        );
    }

    #[test]
    fn host_contexts_file_is_read_like_container_tools_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("contexts");
        std::fs::write(
            &path,
            "# container-selinux\n; comment\nprocess = \"system_u:system_r:spc_t:s0\"\n\
             file=\"system_u:object_r:svirt_sandbox_file_t:s0\"\nro_file=\"x:y:z:s0\"\n",
        )
        .unwrap();
        let (labels, source) =
            resolve_labels((None, None), &[dir.path().join("missing"), path.clone()]).unwrap();
        assert_eq!(source, LabelSource::HostFile(path.clone()));
        assert_eq!(labels.process.kind(), "spc_t");
        assert_eq!(labels.file.kind(), "svirt_sandbox_file_t");

        // Configured templates win, one at a time too.
        let cfg_file: Template = "u:r:my_file_t".parse().unwrap();
        let (labels, _) =
            resolve_labels((None, Some(cfg_file.clone())), std::slice::from_ref(&path)).unwrap();
        assert_eq!(labels.file, cfg_file);
        assert_eq!(labels.process.kind(), "spc_t");

        // No file: built-in defaults.
        let (labels, source) = resolve_labels((None, None), &[]).unwrap();
        assert_eq!((labels, source), (Labels::default(), LabelSource::BuiltIn));
    }

    #[test]
    fn a_malformed_host_file_is_reported_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("contexts");
        std::fs::write(&path, "process = \"a:b:c:s0\"\nfile = \"bad\"\n").unwrap();
        let err = resolve_labels((None, None), &[path])
            .unwrap_err()
            .to_string();
        assert!(err.contains("contexts:2:"), "{err}");
    }
}
