//! What `mcsd --check-config` prints: the effective configuration as a
//! file, every key spelled out, that parses back to the same values.

use std::collections::BTreeSet;
use std::path::Path;

use super::Config;
use crate::store::backend::StoreSettings;
use crate::store::etcd::Password;

/// Prints `config`.
pub(super) fn to_toml(config: &Config) -> String {
    let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let path = |p: &Path| q(&p.display().to_string());
    let list = |items: Vec<String>| format!("[{}]", items.join(", "));
    let ids = |set: &BTreeSet<u32>| list(set.iter().map(ToString::to_string).collect());
    let mut out = String::new();
    out.push_str(&format!("socket = {}\n", path(&config.socket)));
    out.push_str(&format!("state_dir = {}\n", path(&config.state_dir)));
    out.push_str(&format!("categories = {}\n", q(&config.range.to_string())));
    out.push_str(&format!("node_name = {}\n", q(&config.node_name)));
    out.push_str(&format!(
        "reservations = {}\n",
        list(
            config
                .reservations
                .iter()
                .map(|r| q(&r.to_string()))
                .collect()
        )
    ));
    out.push_str("\n[labels]\n");
    match &config.process_template {
        Some(t) => out.push_str(&format!("process = {}\n", q(&t.to_string()))),
        None => out.push_str(
            "# process: from the host contexts file, else system_u:system_r:container_t\n",
        ),
    }
    match &config.file_template {
        Some(t) => out.push_str(&format!("file = {}\n", q(&t.to_string()))),
        None => out.push_str(
            "# file: from the host contexts file, else system_u:object_r:container_file_t\n",
        ),
    }
    out.push_str("\n[relabel]\n");
    out.push_str(&format!(
        "allowlist = {}\n",
        list(config.relabel.allowlist.iter().map(|p| path(p)).collect())
    ));
    out.push_str(&format!(
        "restore = {}\n",
        q(&config.relabel.restore.to_string())
    ));
    out.push_str(&format!("threads = {}\n", config.relabel.threads));
    out.push_str("\n[auth]\n");
    out.push_str(&format!("admin_uids = {}\n", ids(&config.auth.admin_uids)));
    out.push_str(&format!(
        "admin_groups = {}\n",
        ids(&config.auth.admin_gids)
    ));
    out.push_str(&format!(
        "reader_uids = {}\n",
        ids(&config.auth.reader_uids)
    ));
    out.push_str(&format!(
        "reader_groups = {}\n",
        ids(&config.auth.reader_gids)
    ));
    out.push_str(&format!(
        "container_types = {}\n",
        list(config.auth.container_types.iter().map(|t| q(t)).collect())
    ));
    out.push_str(&format!(
        "allow_containers = {}\n",
        config.auth.allow_containers
    ));
    out.push_str("\n[in_use]\n");
    out.push_str(&format!("scan = {}\n", config.scan_in_use));
    out.push_str(&format!("proc_root = {}\n", path(&config.proc_root)));
    out.push_str(&format!(
        "containers_storage = {}\n",
        path(&config.containers_storage)
    ));
    out.push_str(&format!("docker_root = {}\n", path(&config.docker_root)));
    out.push_str("\n[reconcile]\n");
    out.push_str(&format!(
        "min_age_secs = {}\n",
        config.reconcile_min_age.as_secs()
    ));
    out.push_str("\n[metrics]\n");
    out.push_str(&format!(
        "listen = {}\n",
        q(&config
            .metrics
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default())
    ));
    let c = &config.connections;
    out.push_str("\n[connections]\n");
    out.push_str(&format!("max = {}\n", c.max));
    out.push_str(&format!("per_uid = {}\n", c.per_uid));
    out.push_str(&format!("admin_reserve = {}\n", c.admin_reserve));
    out.push_str(&format!(
        "handshake_timeout_ms = {}\n",
        c.handshake_timeout.as_millis()
    ));
    out.push_str(&store(&config.store));
    out
}

/// The `[store]` table spelled out. An inline password is never printed.
fn store(settings: &StoreSettings) -> String {
    let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let path = |p: &Path| q(&p.display().to_string());
    let etcd = match settings {
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
