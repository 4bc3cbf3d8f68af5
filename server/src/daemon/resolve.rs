//! The configuration checked against this host, shared by `mcsd
//! --check-config` and the start.

use super::DaemonError;
use crate::config::Config;
use crate::context::{self, LabelSource, Labels, SelinuxMode};
use crate::relabel::{FromPolicy, RestoreMode};

/// What a configuration resolves to on this host, before anything is
/// touched: the label templates (configured, from the host contexts file,
/// or built in) and the SELinux mode they were checked under.
pub(super) struct Resolved {
    pub(super) labels: Labels,
    pub(super) source: LabelSource,
    pub(super) mode: SelinuxMode,
}

/// Resolves the label templates and checks them against the loaded policy
/// (unless SELinux is disabled), and checks that the restore mode can work
/// here. [`Daemon::start`](super::Daemon::start) begins with it and `mcsd --check-config` runs it
/// ([`check`]), so a configuration the check accepts gets past these steps
/// at start.
pub(super) fn resolve(config: &Config) -> Result<Resolved, DaemonError> {
    let mode = context::selinux_mode();
    let (labels, source) = context::resolve_labels(
        (
            config.process_template.clone(),
            config.file_template.clone(),
        ),
        &config.host_contexts,
    )?;
    if mode != SelinuxMode::Disabled {
        context::check_against_policy(&labels)?;
    }
    if config.relabel.restore == RestoreMode::Policy {
        FromPolicy::new()?;
    }
    Ok(Resolved {
        labels,
        source,
        mode,
    })
}

/// Checks what `start` checks before it touches the store: label
/// templates (host contexts file, loaded policy) and the restore mode.
/// For `mcsd --check-config`.
pub fn check(config: &Config) -> Result<(), DaemonError> {
    resolve(config).map(drop)
}
