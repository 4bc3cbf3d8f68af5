//! `mcsctl follow`: releases a container's allocation when the engine
//! removes the container, never when it stops.
//!
//! Two mechanisms, so no removal is missed and no live container loses
//! its pair:
//! - the engine's removal events (`podman events ... event=remove`,
//!   `docker events ... event=destroy`): a removed container's allocation
//!   is released (its relabeled volumes restored first) within seconds;
//! - a reconcile of the owner's allocations against the engine's full
//!   container list (`ps -a`, which lists stopped containers too) at start,
//!   every interval and whenever the events stream is restarted: a removal
//!   while the follower or mcsd was down is caught up. The stream is
//!   started before the list is taken, so a removal is either in the
//!   stream or absent from the list. mcsd's minimum age keeps a container
//!   that is being created (allocated, not listed yet).
//!
//! Stop events are never read, and a stopped container stays in `ps -a`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use mcs_client::Client;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::engine::Engine;

/// How long after spawning the events stream the list is taken.
const STREAM_START: Duration = Duration::from_secs(1);

/// What the follower runs for each engine.
impl Engine {
    fn events_args(self) -> &'static [&'static str] {
        match self {
            Engine::Podman => &["events", "--format", "json", "--filter", "event=remove"],
            Engine::Docker => &[
                "events",
                "--format",
                "{{json .}}",
                "--filter",
                "type=container",
                "--filter",
                "event=destroy",
            ],
        }
    }

    fn ps_args(self) -> &'static [&'static str] {
        match self {
            Engine::Podman => &["ps", "-a", "--format", "json"],
            Engine::Docker => &["ps", "-a", "--no-trunc", "--format", "{{.ID}}"],
        }
    }
}

/// `mcsctl follow` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The engine whose containers are followed
    #[arg(long, value_enum)]
    engine: Engine,
    /// Whose allocations are reconciled against the engine's list
    /// [default: the engine's name]
    #[arg(long)]
    owner: Option<String>,
    /// Seconds between reconciles against the engine's full list
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    interval: u64,
    /// The engine's command [default: podman or docker, from PATH]
    #[arg(long, value_name = "PATH")]
    engine_command: Option<PathBuf>,
}

/// The id of the container (or pod) an event line says was removed, if
/// it says so. Other lines (other events, other types) give `None`.
pub(crate) fn removed_id(engine: Engine, line: &str) -> Option<String> {
    let v: Value = serde_json::from_str(line.trim()).ok()?;
    let id = match engine {
        // {"ID":"…","Image":"…","Name":"…","Status":"remove","Time":"…","Type":"container","Attributes":{}}
        Engine::Podman => {
            let kind = v.get("Type")?.as_str()?;
            if v.get("Status")?.as_str()? != "remove" || !matches!(kind, "container" | "pod") {
                return None;
            }
            v.get("ID")?.as_str()?
        }
        // {"status":"destroy","id":"…","from":"…","Type":"container","Action":"destroy","Actor":{"ID":"…",…},…}
        Engine::Docker => {
            if v.get("Type")?.as_str()? != "container" || v.get("Action")?.as_str()? != "destroy" {
                return None;
            }
            v.get("Actor")
                .and_then(|a| a.get("ID"))
                .or_else(|| v.get("id"))?
                .as_str()?
        }
    };
    (!id.is_empty()).then(|| id.to_owned())
}

/// Every container id in the engine's `ps -a` output.
pub(crate) fn listed_ids(engine: Engine, output: &str) -> Result<Vec<String>, String> {
    match engine {
        Engine::Podman => {
            let v: Value = serde_json::from_str(output.trim())
                .map_err(|e| format!("podman ps: not JSON: {e}"))?;
            let list = v.as_array().ok_or("podman ps: not a JSON list")?;
            list.iter()
                .map(|c| {
                    c.get("Id")
                        .and_then(Value::as_str)
                        .filter(|id| !id.is_empty())
                        .map(str::to_owned)
                        .ok_or_else(|| format!("podman ps: an entry without Id: {c}"))
                })
                .collect()
        }
        Engine::Docker => Ok(output.split_whitespace().map(str::to_owned).collect()),
    }
}

fn log(message: impl std::fmt::Display) {
    eprintln!("mcsctl follow: {message}");
}

struct Follower {
    engine: Engine,
    command: PathBuf,
    owner: String,
    socket: PathBuf,
    client: Option<Client>,
}

impl Follower {
    async fn client(&mut self) -> Result<&mut Client, String> {
        if self.client.is_none() {
            self.client = Some(
                Client::connect(&self.socket)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        Ok(self.client.as_mut().expect("connected"))
    }

    /// A failed call drops the connection; the next call connects again
    /// (mcsd may have restarted).
    fn failed(&mut self, e: mcs_client::ClientError) -> String {
        self.client = None;
        e.to_string()
    }

    /// Releases `id`'s allocation if this owner holds it.
    async fn release(&mut self, id: &str) -> Result<(), String> {
        let owner = self.owner.clone();
        let client = self.client().await?;
        let held = match client.get(id).await {
            Ok(a) => a,
            Err(e) if e.code() == Some(tonic::Code::NotFound) => return Ok(()),
            Err(e) => return Err(self.failed(e)),
        };
        if held.owner != owner {
            log(format_args!(
                "{id} removed, its allocation belongs to {:?}, not {owner:?}: kept",
                held.owner
            ));
            return Ok(());
        }
        let client = self.client().await?;
        match client.release(id).await {
            Ok(r) if r.released => {
                log(format_args!(
                    "released {id} ({}): removed by {}",
                    held.level,
                    self.engine.name()
                ));
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Reconciles the owner against the engine's full list. A list the
    /// engine failed to give is never taken as empty.
    async fn reconcile(&mut self) -> Result<(), String> {
        let out = Command::new(&self.command)
            .args(self.engine.ps_args())
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .await
            .map_err(|e| format!("cannot run {}: {e}", self.command.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} ps failed ({}): {}",
                self.engine.name(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let ids = listed_ids(self.engine, &String::from_utf8_lossy(&out.stdout))?;
        let listed = ids.len();
        let owner = self.owner.clone();
        let client = self.client().await?;
        let r = match client.reconcile(owner.clone(), ids, false).await {
            Ok(r) => r,
            Err(e) => return Err(self.failed(e)),
        };
        for a in &r.released {
            log(format_args!(
                "released {} ({}): not in {} ps -a",
                a.container_id,
                a.level,
                self.engine.name()
            ));
        }
        for n in &r.not_released {
            let id = n
                .allocation
                .as_ref()
                .map_or("?", |a| a.container_id.as_str());
            log(format_args!("not released {id}: {}", n.reason));
        }
        log(format_args!(
            "reconciled {owner}: {listed} container(s) listed, released {}, kept {} ({} younger than {} s)",
            r.released.len(),
            r.kept,
            r.kept_young,
            r.min_age_secs
        ));
        Ok(())
    }
}

/// Runs until SIGTERM or SIGINT.
pub(crate) async fn run(socket: &Path, args: Args) -> Result<(), String> {
    let interval = Duration::from_secs(args.interval.max(1));
    let mut f = Follower {
        engine: args.engine,
        command: args
            .engine_command
            .unwrap_or_else(|| args.engine.name().into()),
        owner: args.owner.unwrap_or_else(|| args.engine.name().to_owned()),
        socket: socket.to_owned(),
        client: None,
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot catch SIGTERM: {e}"))?;
    // A failed reconcile is retried soon, not at the next interval.
    let retry = Duration::from_secs(2);
    loop {
        let mut child = match Command::new(&f.command)
            .args(f.engine.events_args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                log(format_args!(
                    "cannot run {} events: {e}; trying again in {} s",
                    f.command.display(),
                    retry.as_secs()
                ));
                tokio::time::sleep(retry).await;
                continue;
            }
        };
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        log(format_args!(
            "following {} removals (pid {}) for owner {}",
            f.engine.name(),
            child.id().unwrap_or(0),
            f.owner
        ));
        // After the stream started: a removal from now on is in the
        // stream, one before is absent from the list. The engine takes a
        // moment to start reading its events after the spawn, so the list
        // is taken a second later (a removal in a slower start is caught
        // by the next interval's reconcile).
        let mut next = Instant::now() + STREAM_START;
        loop {
            let wait = tokio::time::sleep_until(next.into());
            tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(line)) => {
                        if let Some(id) = removed_id(f.engine, &line) {
                            if let Err(e) = f.release(&id).await {
                                log(format_args!("{id} removed, not released yet ({e}); the next reconcile releases it"));
                                next = next.min(Instant::now() + retry);
                            }
                        }
                    }
                    Ok(None) | Err(_) => break,
                },
                () = wait => {
                    next = match f.reconcile().await {
                        Ok(()) => Instant::now() + interval,
                        Err(e) => {
                            log(format_args!("reconcile failed ({e}); trying again in {} s", retry.as_secs()));
                            Instant::now() + retry
                        }
                    };
                }
                _ = term.recv() => {
                    log("stopping (SIGTERM)");
                    return Ok(());
                }
                _ = tokio::signal::ctrl_c() => {
                    log("stopping (SIGINT)");
                    return Ok(());
                }
            }
        }
        let status = child.wait().await;
        log(format_args!(
            "the {} events stream ended ({}); restarting it and reconciling",
            f.engine.name(),
            status.map_or_else(|e| e.to_string(), |s| s.to_string())
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines the real `podman events --format json --filter event=remove`
    /// (podman 4.3.1, events logger "file") printed on this host for a
    /// `podman create` + `podman rm` and a `podman rm -f` of a named one.
    const PODMAN_EVENTS: &str = include_str!("testdata/podman-events-remove.json");

    #[test]
    fn podman_remove_events_name_the_removed_container() {
        let ids: Vec<String> = PODMAN_EVENTS
            .lines()
            .filter_map(|l| removed_id(Engine::Podman, l))
            .collect();
        assert_eq!(
            ids,
            [
                "1d962e514507e0dda38a84f302cbc09f014db2922851e1f05b226bc018d54d23",
                "fca116a9c46c310cc0b1bb89016cde6f981f967d1127fdb38bd09456a13f7eea"
            ]
        );
        // Other events (a stop, say) and garbage release nothing.
        let stop = PODMAN_EVENTS
            .lines()
            .next()
            .unwrap()
            .replace("\"remove\"", "\"stop\"");
        assert_eq!(removed_id(Engine::Podman, &stop), None);
        let image = PODMAN_EVENTS
            .lines()
            .next()
            .unwrap()
            .replace("\"container\"", "\"image\"");
        assert_eq!(removed_id(Engine::Podman, &image), None);
        assert_eq!(removed_id(Engine::Podman, "not json"), None);
        assert_eq!(
            removed_id(Engine::Docker, PODMAN_EVENTS.lines().next().unwrap()),
            None
        );
    }

    #[test]
    fn docker_destroy_events_name_the_removed_container() {
        // The shape of `docker events --format '{{json .}}'` (moby's
        // events.Message); dockerd does not run on this host to capture one.
        let line = r#"{"status":"destroy","id":"4a5e","from":"bb","Type":"container","Action":"destroy","Actor":{"ID":"4a5e","Attributes":{"image":"bb","name":"x"}},"scope":"local","time":1733300000,"timeNano":1733300000000000000}"#;
        assert_eq!(removed_id(Engine::Docker, line), Some("4a5e".into()));
        let stop = line.replace("destroy", "stop");
        assert_eq!(removed_id(Engine::Docker, &stop), None);
    }

    #[test]
    fn ps_lists_every_container_and_a_bad_list_is_an_error() {
        let podman = r#"[{"Id":"aa","State":"exited"},{"Id":"bb","State":"created"}]"#;
        assert_eq!(listed_ids(Engine::Podman, podman).unwrap(), ["aa", "bb"]);
        assert_eq!(
            listed_ids(Engine::Podman, "[]\n").unwrap(),
            Vec::<String>::new()
        );
        assert!(listed_ids(Engine::Podman, "").is_err());
        assert!(listed_ids(Engine::Podman, r#"[{"Names":["x"]}]"#).is_err());
        assert_eq!(
            listed_ids(Engine::Docker, "aa\nbb\n").unwrap(),
            ["aa", "bb"]
        );
    }
}
