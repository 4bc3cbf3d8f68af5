//! `mcsctl engine-args` and `mcsctl engine-run`: mcsd chooses the level,
//! the engine applies it.
//!
//! Engines fix a container's level before they create its rootfs, so the
//! only input that works is the engine's own option
//! (`--security-opt label=level:s0:cX,cY`). These commands allocate a level
//! and hand it to the engine together with mcsd's key (`io.mcsd.key=K`, an
//! OCI annotation for podman, a label for docker). The allocation is the
//! member `K` of group `K`, a placeholder: the `createRuntime` hook
//! (`mcsctl hook create-runtime`) finds the key on the container, joins the
//! container's id to group `K` and releases the placeholder, so the pair is
//! then held by the container itself.

use std::io::{Read, Write};

use mcs_client::{Allocate, Client};
use serde_json::json;

use crate::output::{self, Format};

/// The annotation (podman, CRI-O) or label (docker) carrying mcsd's key.
pub(crate) const KEY_ANNOTATION: &str = "io.mcsd.key";

/// The prefix of the group key `--pod POD` uses: `mcsd-pod-POD`.
pub(crate) const POD_KEY_PREFIX: &str = "mcsd-pod-";

/// The engines whose arguments mcsctl knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Engine {
    /// podman (run, create, pod create; events logger "file" or "journald")
    Podman,
    /// docker (run, create; dockerd's events)
    Docker,
}

impl Engine {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Engine::Podman => "podman",
            Engine::Docker => "docker",
        }
    }

    /// The engine an executable path names (`/usr/bin/podman` → podman).
    pub(crate) fn from_program(program: &str) -> Option<Engine> {
        let base = program.rsplit('/').next().unwrap_or(program);
        match base {
            "podman" | "podman-remote" => Some(Engine::Podman),
            "docker" => Some(Engine::Docker),
            _ => None,
        }
    }
}

/// What to allocate.
#[derive(Debug, Clone, Default)]
pub(crate) struct Request {
    pub pod: Option<String>,
    pub owner: Option<String>,
    pub key: Option<String>,
}

/// A level allocated for one container (or pod) and the key that ties it.
#[derive(Debug, Clone)]
pub(crate) struct Granted {
    pub key: String,
    pub level: String,
}

impl Granted {
    /// The engine's arguments. `pod_create`: for `podman pod create`, which
    /// takes no `--annotation` (podman 4.3): the level only; the pod's
    /// infra container is let into the group by the hook (see hook.rs).
    pub(crate) fn args(&self, engine: Engine, pod_create: bool) -> Vec<String> {
        let mut args = vec![
            "--security-opt".to_owned(),
            format!("label=level:{}", self.level),
        ];
        if pod_create {
            return args;
        }
        let flag = match engine {
            Engine::Podman => "--annotation",
            Engine::Docker => "--label",
        };
        args.push(flag.to_owned());
        args.push(format!("{KEY_ANNOTATION}={}", self.key));
        args
    }
}

/// A key nobody can guess: `mcsd-` and 16 hex digits from the kernel's CSPRNG.
fn random_key() -> std::io::Result<String> {
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("mcsd-{hex}"))
}

/// The group key of a request: `--key`, else `mcsd-pod-POD`, else random.
pub(crate) fn key_of(request: &Request) -> Result<String, String> {
    match (&request.key, &request.pod) {
        (Some(key), _) => Ok(key.clone()),
        (None, Some(pod)) => Ok(format!("{POD_KEY_PREFIX}{pod}")),
        (None, None) => random_key().map_err(|e| format!("cannot read /dev/urandom: {e}")),
    }
}

/// Allocates the placeholder member `K` of group `K` (again, for a pod:
/// every member gets the group's level).
pub(crate) async fn allocate(
    client: &mut Client,
    engine: Engine,
    request: &Request,
) -> Result<Granted, super::Failure> {
    let key = key_of(request).map_err(super::Failure::Input)?;
    let owner = request
        .owner
        .clone()
        .unwrap_or_else(|| engine.name().to_owned());
    let allocation = client
        .allocate(Allocate::new(key.clone()).owner(owner).group(key.clone()))
        .await?;
    Ok(Granted {
        key,
        level: allocation.level,
    })
}

/// Where the engine's arguments go in `argv` (engine first): right after
/// `run`/`create`, `container run|create` or `pod create`. Returns the
/// index to insert at and whether it is `pod create`.
pub(crate) fn insertion_point(argv: &[String]) -> Result<(usize, bool), String> {
    let mut i = 1;
    while i < argv.len() {
        match argv[i].as_str() {
            "run" | "create" => return Ok((i + 1, false)),
            "container" => {}
            "pod" => {
                return match argv.get(i + 1).map(String::as_str) {
                    Some("create") => Ok((i + 2, true)),
                    _ => Err("only `pod create` takes a level; other pod commands need no mcsd arguments".into()),
                };
            }
            "--" => break,
            _ => {}
        }
        i += 1;
    }
    Err(format!(
        "no run, create or pod create subcommand in `{}`",
        argv.join(" ")
    ))
}

/// `mcsctl engine-args`: allocates, writes the env file if asked, and
/// prints the engine's arguments (or, as JSON, the key and level too).
pub(crate) async fn allocate_and_print(
    client: &mut Client,
    engine: Engine,
    request: &Request,
    env_file: Option<&std::path::Path>,
    format: Format,
    out: &mut impl Write,
) -> Result<(), super::Failure> {
    let granted = allocate(client, engine, request).await?;
    let args = granted.args(engine, false);
    if let Some(path) = env_file {
        write_env_file(path, &granted, &args)
            .map_err(|e| super::Failure::Input(format!("cannot write {}: {e}", path.display())))?;
    }
    if format == Format::Json {
        output::print_json(
            out,
            &json!({"engine": engine.name(), "key": granted.key, "level": granted.level, "args": args}),
        )?;
    } else {
        print_args(out, &args)?;
    }
    Ok(())
}

/// Prints the arguments on one line (word-splits in `$(...)`: no spaces,
/// no glob characters in them).
fn print_args(out: &mut impl Write, args: &[String]) -> std::io::Result<()> {
    writeln!(out, "{}", args.join(" "))
}

/// Writes `MCSD_LEVEL=`, `MCSD_KEY=`, `MCSD_ARGS=` (no quotes needed: the
/// values have no spaces but MCSD_ARGS, which systemd and compose take
/// whole up to the end of the line) through a temporary file renamed into
/// place, so a reader never sees half of it.
fn write_env_file(
    path: &std::path::Path,
    granted: &Granted,
    args: &[String],
) -> std::io::Result<()> {
    let text = format!(
        "MCSD_LEVEL={}\nMCSD_KEY={}\nMCSD_ARGS={}\n",
        granted.level,
        granted.key,
        args.join(" ")
    );
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Allocates, then replaces mcsctl with the engine, the arguments inserted.
/// Returns only if that fails (the placeholder is released again then).
pub(crate) async fn exec(
    client: &mut Client,
    request: Request,
    mut argv: Vec<String>,
) -> Result<(), super::Failure> {
    use std::os::unix::process::CommandExt;
    let input = super::Failure::Input;
    let engine = Engine::from_program(&argv[0]).ok_or_else(|| {
        input(format!(
            "{} is not podman or docker; use `mcsctl engine-args --engine ...` to build its arguments",
            argv[0]
        ))
    })?;
    let (at, pod_create) = insertion_point(&argv).map_err(input)?;
    if pod_create && request.pod.is_none() && request.key.is_none() {
        return Err(input(
            "`pod create` needs --pod NAME, so that the pod's members join its level with the same --pod".into(),
        ));
    }
    if pod_create && engine == Engine::Docker {
        return Err(input("docker has no pods".into()));
    }
    let granted = allocate(client, engine, &request).await?;
    let args = granted.args(engine, pod_create);
    argv.splice(at..at, args);
    let error = std::process::Command::new(&argv[0]).args(&argv[1..]).exec();
    // Nothing runs with the level: give the placeholder back (a pod's
    // group keeps its other members).
    let _ = client.release(granted.key.clone()).await;
    Err(input(format!("cannot run {}: {error}", argv[0])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn arguments_go_right_after_the_subcommand() {
        assert_eq!(insertion_point(&argv("podman run -d bb")), Ok((2, false)));
        assert_eq!(
            insertion_point(&argv("podman --root /r container create bb")),
            Ok((5, false))
        );
        assert_eq!(
            insertion_point(&argv("podman pod create --name web")),
            Ok((3, true))
        );
        assert!(insertion_point(&argv("podman pod rm web")).is_err());
        assert!(insertion_point(&argv("podman ps"))
            .unwrap_err()
            .contains("no run, create"));
    }

    #[test]
    fn each_engine_gets_its_own_flag_for_the_key() {
        let g = Granted {
            key: "mcsd-00".into(),
            level: "s0:c1,c2".into(),
        };
        assert_eq!(
            g.args(Engine::Podman, false).join(" "),
            "--security-opt label=level:s0:c1,c2 --annotation io.mcsd.key=mcsd-00"
        );
        assert_eq!(
            g.args(Engine::Docker, false).join(" "),
            "--security-opt label=level:s0:c1,c2 --label io.mcsd.key=mcsd-00"
        );
        assert_eq!(
            g.args(Engine::Podman, true).join(" "),
            "--security-opt label=level:s0:c1,c2"
        );
    }

    #[test]
    fn keys_are_random_unless_given() {
        let a = key_of(&Request::default()).unwrap();
        let b = key_of(&Request::default()).unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("mcsd-") && a.len() == 21, "{a}");
        let pod = Request {
            pod: Some("web".into()),
            ..Default::default()
        };
        assert_eq!(key_of(&pod).unwrap(), "mcsd-pod-web");
    }
}
