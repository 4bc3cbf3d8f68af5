//! OCI hooks run from `hooks.d` (podman, CRI-O) with the container's OCI
//! state JSON on stdin.
//!
//! `mcsctl hook create-runtime` records the level the engine gave a
//! container and refuses its start if another container holds that pair
//! (the decisions are listed above `CreateRuntimeArgs`).
//!
//! `mcsctl hook poststop`: the OCI hook that frees a container's label when
//! the container is gone, for runtimes that died or forgot to call Release.
//!
//! podman and CRI-O run it from `hooks.d` with the container's OCI state
//! JSON on stdin. It must never fail the container's teardown: whatever goes
//! wrong (mcsd down, bad input) is reported on stderr and the exit status is
//! 0; an allocation left behind is released later by `mcsctl reconcile`.

use std::io::{Read, Write};
use std::path::Path;

use mcs_client::{Allocate, Client, ClientError};
use tonic::Code;

/// The container id from OCI state JSON (`{"ociVersion": ..., "id": ...}`).
fn container_id(state: &str) -> Result<String, String> {
    let value: serde_json::Value = serde_json::from_str(state)
        .map_err(|e| format!("the OCI state on stdin is not JSON: {e}"))?;
    match value.get("id").and_then(|v| v.as_str()) {
        Some(id) if !id.is_empty() => Ok(id.to_owned()),
        _ => Err("the OCI state on stdin has no \"id\"".into()),
    }
}

/// Releases the container named on stdin; always returns (exit 0).
pub(crate) async fn poststop(socket: &Path, out: &mut impl Write) {
    let mut state = String::new();
    let id = match std::io::stdin().read_to_string(&mut state) {
        Ok(_) => container_id(&state),
        Err(e) => Err(format!("cannot read the OCI state from stdin: {e}")),
    };
    let id = match id {
        Ok(id) => id,
        Err(e) => {
            eprintln!("mcsctl hook poststop: {e}; nothing released");
            return;
        }
    };
    let released = async {
        let mut client = Client::connect(socket).await?;
        client.release(id.clone()).await
    }
    .await;
    match released {
        Ok(r) if r.released => {
            let level = r.allocation.map(|a| a.level).unwrap_or_default();
            let _ = writeln!(out, "mcsctl hook poststop: released {id} ({level})");
        }
        Ok(_) => {
            let _ = writeln!(out, "mcsctl hook poststop: {id} held no label");
        }
        Err(e) => {
            eprintln!(
                "mcsctl hook poststop: {id} not released ({e}); it stays allocated until `mcsctl reconcile` or a later release"
            );
        }
    }
}

// `mcsctl hook create-runtime`: the engine chose the level, mcsd records
// and guards it.
//
// Decisions:
// - A container carrying mcsd's key (`io.mcsd.key=K`, from `mcsctl
//   engine-args`) joins group `K` with its id and level, then the
//   placeholder member `K` is released: the pair is held by the container.
// - Any other container's level is allocated under its id (idempotent on
//   the id: a restart with the same level is no conflict).
// - A pair another container holds refuses the start (exit 1), naming the
//   holder and what to do.
// - mcsd unreachable: fail closed for a container with mcsd's key (it
//   asked for mcsd's guarantee); fail open for others unless
//   `--require-mcsd` (an mcsd outage must not stop every container on the
//   host, and mcsd holds the levels of existing containers when it starts
//   again, so the level is recorded late rather than never).
// - No label in config.json (SELinux disabled, `label=disable`): nothing
//   to record, exit 0.

/// Options of `mcsctl hook create-runtime` (set in the hooks.d file).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CreateRuntimeArgs {
    /// Owner of the allocations [default: podman for libpod's containers
    /// (annotation io.container.manager=libpod), crio for CRI-O's, else oci]
    #[arg(long)]
    pub owner: Option<String>,
    /// Refuse containers without mcsd's key too when mcsd is unreachable
    #[arg(long)]
    pub require_mcsd: bool,
    /// How long to wait for mcsd before treating it as unreachable
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
}

const NAME: &str = "mcsctl hook create-runtime";

/// What the hook read: the container, its level, its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Container {
    pub id: String,
    /// None when config.json carries no SELinux label.
    pub level: Option<String>,
    pub key: Option<String>,
    pub owner: String,
}

/// The level of a full context `user:role:type:level`.
fn level_of(field: &str, context: &str) -> Result<String, String> {
    match context.splitn(4, ':').nth(3) {
        Some(level) if !level.is_empty() => Ok(level.to_owned()),
        _ => Err(format!(
            "{field} {context:?} in config.json has no level (user:role:type:level)"
        )),
    }
}

fn str_at<'a>(value: &'a serde_json::Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |v, k| v.get(k))
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
}

/// Reads the OCI state (stdin) and the bundle's config.json.
pub(crate) fn read_container(state: &str, owner: Option<&str>) -> Result<Container, String> {
    let state: serde_json::Value = serde_json::from_str(state)
        .map_err(|e| format!("the OCI state on stdin is not JSON: {e}"))?;
    let id = str_at(&state, &["id"])
        .ok_or("the OCI state on stdin has no \"id\"")?
        .to_owned();
    let bundle = str_at(&state, &["bundle"]).ok_or("the OCI state on stdin has no \"bundle\"")?;
    let path = Path::new(bundle).join("config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let config: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    let process = str_at(&config, &["process", "selinuxLabel"])
        .map(|c| level_of("process.selinuxLabel", c))
        .transpose()?;
    let mount = str_at(&config, &["linux", "mountLabel"])
        .map(|c| level_of("linux.mountLabel", c))
        .transpose()?;
    let level = match (process, mount) {
        (Some(p), Some(m)) if p != m => {
            return Err(format!(
                "config.json's process level {p} and mount level {m} differ"
            ))
        }
        (p, m) => p.or(m),
    };
    let annotation = |name: &str| {
        str_at(&state, &["annotations", name]).or(str_at(&config, &["annotations", name]))
    };
    let key = annotation(crate::engine::KEY_ANNOTATION).map(str::to_owned);
    let owner = match owner {
        Some(o) => o.to_owned(),
        None if annotation("io.container.manager") == Some("libpod") => "podman".into(),
        None if config["annotations"]
            .as_object()
            .is_some_and(|a| a.keys().any(|k| k.starts_with("io.kubernetes.cri-o."))) =>
        {
            "crio".into()
        }
        None => "oci".into(),
    };
    Ok(Container {
        id,
        level,
        key,
        owner,
    })
}

/// The holder named by mcsd's LevelHeld message (`... is already held by
/// container X` / `group G`).
fn holder_of(message: &str) -> Option<(&str, &str)> {
    let rest = message.split(" is already held by ").nth(1)?;
    rest.split_once(' ')
}

/// "container X (owner O)" or "group G (members A, B)", as mcsd knows them.
async fn describe_holder(client: &mut Client, kind: &str, name: &str) -> String {
    if kind == "container" {
        return match client.get(name).await {
            Ok(a) => format!("container {name} (owner {})", a.owner),
            Err(_) => format!("container {name}"),
        };
    }
    let mut members = Vec::new();
    let request = mcs_client::proto::ListRequest {
        group: name.to_owned(),
        limit: 10,
        ..Default::default()
    };
    if let Ok(mut stream) = client.list(request).await {
        while let Ok(Some(chunk)) = stream.message().await {
            members.extend(chunk.allocations.into_iter().map(|a| a.container_id));
        }
    }
    if members.is_empty() {
        format!("group {name}")
    } else {
        format!("group {name} (members {})", members.join(", "))
    }
}

/// Is group `key` a pod made by `mcsctl engine-args --pod` whose
/// placeholder is still held (no keyed member has started yet)? Its infra
/// container (podman 4.3's `pod create` takes no annotation) may join.
async fn open_pod(client: &mut Client, key: &str) -> bool {
    key.starts_with(crate::engine::POD_KEY_PREFIX)
        && client
            .get(key)
            .await
            .is_ok_and(|a| a.group == key && a.container_id == key)
}

enum Outcome {
    Recorded(String),
    Refused(String),
}

async fn register(client: &mut Client, c: &Container, level: &str) -> Result<Outcome, ClientError> {
    let id = &c.id;
    let refuse = |what: String| {
        Outcome::Refused(format!(
            "{NAME}: refused {id}: {what}. The engine gives {id} this label again on every start, so a retry fails again: remove it (e.g. `podman rm {id}`) and create it again without a fixed level, or with `$(mcsctl engine-args)`"
        ))
    };
    let mut request = Allocate::new(id.clone())
        .owner(c.owner.clone())
        .level(level);
    if let Some(key) = &c.key {
        request = request.group(key.clone());
    }
    let result = client.allocate_full(request.clone()).await;
    let result = match result {
        Err(e) if e.code() == Some(Code::AlreadyExists) && c.key.is_none() => {
            match holder_of(&e.to_string()).map(|(k, n)| (k.to_owned(), n.to_owned())) {
                Some((kind, group)) if kind == "group" && open_pod(client, &group).await => {
                    client.allocate_full(request.group(group)).await
                }
                _ => Err(e),
            }
        }
        other => other,
    };
    match result {
        Ok(r) => {
            let a = r.allocation.unwrap_or_default();
            let mut note = if r.created {
                format!("recorded {id} ({}, owner {})", a.level, a.owner)
            } else {
                format!("{id} already holds {} (owner {})", a.level, a.owner)
            };
            if let Some(key) = c.key.as_deref().filter(|k| *k != id.as_str()) {
                // The container holds the pair now: the placeholder goes.
                // Released already after an earlier start: no-op.
                if client.release(key).await?.released {
                    note.push_str(&format!(" in group {key}; placeholder {key} released"));
                } else {
                    note.push_str(&format!(" in group {key}"));
                }
            } else if !a.group.is_empty() {
                note.push_str(&format!(" in group {}", a.group));
            }
            Ok(Outcome::Recorded(note))
        }
        Err(e) if e.code() == Some(Code::AlreadyExists) => {
            let message = e.to_string();
            if let Some((kind, name)) = holder_of(&message) {
                let holder = describe_holder(client, kind, name).await;
                Ok(refuse(format!("{level} is held by {holder}")))
            } else {
                Ok(refuse(message))
            }
        }
        Err(e)
            if e.code() == Some(Code::InvalidArgument)
                && c.key.is_none()
                && e.to_string()
                    .contains("outside the configured category range") =>
        {
            // mcsd never hands out such a pair, so none of its containers
            // can collide with it.
            Ok(Outcome::Recorded(format!(
                "{id} not recorded: {e}; no mcsd allocation can share it"
            )))
        }
        // This caller may not allocate (e.g. rootless podman as a user
        // without the admin role): mcsd cannot record, as when it is down.
        Err(e) if e.code() == Some(Code::PermissionDenied) => Err(e),
        Err(e) if e.code().is_some() => Ok(refuse(e.to_string())),
        Err(e) => Err(e),
    }
}

/// Runs the hook; `Err` is the one-line message for stderr (exit 1).
pub(crate) async fn create_runtime(
    socket: &Path,
    args: &CreateRuntimeArgs,
    out: &mut impl Write,
) -> Result<(), String> {
    let mut state = String::new();
    std::io::stdin()
        .read_to_string(&mut state)
        .map_err(|e| format!("{NAME}: cannot read the OCI state from stdin: {e}"))?;
    let c = read_container(&state, args.owner.as_deref()).map_err(|e| format!("{NAME}: {e}"))?;
    let Some(level) = c.level.clone() else {
        let _ = writeln!(
            out,
            "{NAME}: {} has no SELinux label (SELinux off or label=disable); nothing to record",
            c.id
        )
        .and_then(|()| out.flush());
        return Ok(());
    };
    let attempt = async {
        let mut client = Client::connect(socket).await?;
        register(&mut client, &c, &level).await
    };
    let outcome = match tokio::time::timeout(args.timeout, attempt).await {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(e)) if e.code() == Some(Code::PermissionDenied) => {
            Err(format!("mcsd refused this caller ({e})"))
        }
        Ok(Err(e)) => Err(format!("mcsd is unreachable ({e})")),
        Err(_) => Err(format!(
            "mcsd is unreachable (no answer in {})",
            humantime::format_duration(args.timeout)
        )),
    };
    match outcome {
        Ok(Outcome::Recorded(note)) => {
            // For the engine's log; a closed stdout must not turn a
            // recorded start into a refused one.
            let _ = writeln!(out, "{NAME}: {note}").and_then(|()| out.flush());
            Ok(())
        }
        Ok(Outcome::Refused(message)) => Err(message),
        Err(e) => match &c.key {
            Some(key) => Err(format!(
                "{NAME}: refused {}: it asked for mcsd's level ({}={key}) and {e}; make mcsd record it (start mcsd, or run the engine as an mcsd admin), then start the container again",
                c.id,
                crate::engine::KEY_ANNOTATION
            )),
            None if args.require_mcsd => Err(format!(
                "{NAME}: refused {}: {e} and --require-mcsd is set; make mcsd record it (start mcsd, or run the engine as an mcsd admin), then start the container again",
                c.id
            )),
            None => {
                // Never fail the start over a log line (stderr may be closed).
                let _ = writeln!(
                    std::io::stderr(),
                    "{NAME}: {} started unrecorded at {level}: {e}; mcsd holds it when it next starts and scans the engine's containers",
                    c.id
                );
                Ok(())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_comes_from_oci_state() {
        let state =
            r#"{"ociVersion":"1.0.2","id":"4f2c","status":"stopped","pid":0,"bundle":"/b"}"#;
        assert_eq!(container_id(state).unwrap(), "4f2c");
        assert!(container_id("{}").unwrap_err().contains("no \"id\""));
        assert!(container_id("not json").unwrap_err().contains("not JSON"));
    }

    /// The owner a hook records when `--owner` is not given, read from a
    /// real podman config.json and from that file with its annotations
    /// changed to what CRI-O writes, and to none at all.
    #[test]
    fn the_default_owner_follows_the_engines_annotations() {
        let real: serde_json::Value =
            serde_json::from_str(include_str!("../../../tests/data/podman-4.3.1-config.json"))
                .unwrap();
        assert_eq!(real["annotations"]["io.container.manager"], "libpod");
        let owner_of = |config: &serde_json::Value, owner: Option<&str>| {
            let bundle = tempfile::tempdir().unwrap();
            std::fs::write(bundle.path().join("config.json"), config.to_string()).unwrap();
            let state = serde_json::json!({"id": "c1", "bundle": bundle.path()}).to_string();
            read_container(&state, owner).unwrap().owner
        };
        assert_eq!(owner_of(&real, None), "podman");
        assert_eq!(owner_of(&real, Some("runtime-a")), "runtime-a");

        let mut crio = real.clone();
        let annotations = crio["annotations"].as_object_mut().unwrap();
        annotations.remove("io.container.manager");
        annotations.insert("io.kubernetes.cri-o.ContainerID".into(), "c1".into());
        assert_eq!(owner_of(&crio, None), "crio");

        let mut plain = real.clone();
        plain["annotations"] = serde_json::json!({});
        assert_eq!(owner_of(&plain, None), "oci");
        plain.as_object_mut().unwrap().remove("annotations");
        assert_eq!(owner_of(&plain, None), "oci");
    }
}
