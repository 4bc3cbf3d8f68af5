//! What the client's black-box tests share: the daemon configuration they
//! run an in-process mcsd with.

#![allow(dead_code)] // each test binary uses a different part

use std::path::Path;

use mcsd::auth::AuthConfig;
use mcsd::config::Config;

/// A configuration for an mcsd serving `dir/mcsd.sock` on `c0.c9` with
/// state in `dir/state`, the test labels pinned, and roles from `auth`.
/// The scan of running processes is off, so this host's processes cannot
/// change the counts.
pub(crate) fn config(dir: &Path, auth: AuthConfig) -> Config {
    Config {
        socket: dir.join("mcsd.sock"),
        state_dir: dir.join("state"),
        range: "c0.c9".parse().unwrap(),
        process_template: Some("system_u:system_r:container_t".parse().unwrap()),
        file_template: Some("system_u:object_r:container_file_t".parse().unwrap()),
        host_contexts: vec![],
        auth,
        scan_in_use: false,
        // Judged as soon as the clock has moved past them.
        reconcile_min_age: std::time::Duration::ZERO,
        ..Config::default()
    }
}
