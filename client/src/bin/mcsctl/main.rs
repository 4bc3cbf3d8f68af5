//! `mcsctl`: drive and query mcsd from the command line.
//!
//! Every command prints a human table by default and JSON with `-o json`.
//! Errors print one line on stderr and exit with status 1.

// engine, output and Failure are pub(crate) because the modules name them
// from the crate root, which in examples/mcsctl-man.rs is not this file: the
// man page generator includes it as a module and re-exports them.
pub(crate) mod engine;
mod follow;
mod hook;
mod list;
pub(crate) mod output;
mod relabel;

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mcs_client::{proto, Allocate, Client, ClientError};
use serde_json::json;

use output::Format;

/// Query and steer mcsd, the host's SELinux MCS label authority.
// pub(crate): examples/mcsctl-man.rs renders the man page from it.
#[derive(Debug, Parser)]
#[command(name = "mcsctl", version, about)]
pub(crate) struct Cli {
    /// mcsd's socket [default: $MCSD_SOCKET, else /run/mcsd/mcsd.sock]
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Output format
    #[arg(short, long, global = true, value_enum, default_value = "table")]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

/// OCI hook stages mcsctl handles.
#[derive(Debug, Subcommand)]
enum HookStage {
    /// Release the container's label; reads the OCI state JSON on stdin.
    /// Never fails the teardown: problems are reported on stderr, exit 0.
    Poststop,
    /// Record the level the engine gave the container (bundle's
    /// config.json) under its id; refuse the start (exit 1) if another
    /// container holds that pair. Reads the OCI state JSON on stdin.
    CreateRuntime(hook::CreateRuntimeArgs),
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Allocate a label for a container (returns the existing one if any)
    Allocate {
        /// Container id
        id: String,
        /// Who asks, e.g. podman [default: uid:<your uid>]
        #[arg(long)]
        owner: Option<String>,
        /// Pod whose members share one level
        #[arg(long)]
        group: Option<String>,
        /// A specific level, s0:cX,cY
        #[arg(long)]
        level: Option<String>,
    },
    /// Release a container's label
    Release {
        /// Container id
        id: String,
    },
    /// Show a container's label
    Get {
        /// Container id
        id: String,
    },
    /// List allocations (streamed in id order; other orders read them all first)
    List {
        /// Only this owner's
        #[arg(long)]
        owner: Option<String>,
        /// Only this group's
        #[arg(long)]
        group: Option<String>,
        /// Only those made on this node (host)
        #[arg(long)]
        node: Option<String>,
        /// At most this many
        #[arg(long)]
        limit: Option<u64>,
        /// Order of the rows
        #[arg(long, value_enum, default_value = "id")]
        sort: list::Sort,
    },
    /// Show the daemon's version, uptime, store, SELinux mode and health
    Status,
    /// Run as an OCI hook (podman, CRI-O: deploy/oci-hooks/mcsd-release.json)
    Hook {
        #[command(subcommand)]
        stage: HookStage,
    },
    /// Allocate a level and print the engine's arguments for it on one line:
    /// `podman run $(mcsctl engine-args) IMAGE`
    EngineArgs {
        /// The engine whose arguments to print
        #[arg(long, value_enum, default_value = "podman")]
        engine: engine::Engine,
        #[command(flatten)]
        request: EngineRequest,
        /// Also write MCSD_LEVEL=, MCSD_KEY= and MCSD_ARGS= to this file
        /// (systemd EnvironmentFile=, compose .env)
        #[arg(long, value_name = "PATH")]
        env_file: Option<PathBuf>,
    },
    /// Run the engine with mcsd's arguments inserted after run/create/pod
    /// create: `mcsctl engine-run -- podman run IMAGE`
    EngineRun {
        #[command(flatten)]
        request: EngineRequest,
        /// The engine's command line
        #[arg(last = true, required = true, value_name = "ENGINE ARGS")]
        argv: Vec<String>,
    },
    /// Print shell completions
    #[command(hide = true)]
    Completions {
        /// bash, zsh or fish
        shell: clap_complete::Shell,
    },
    /// Show how much of the range is in use
    Stats,
    /// Exclude a pair (s0:cX,cY) or a category (cN) from allocation
    Reserve {
        /// s0:cX,cY or cN
        target: String,
    },
    /// Remove a reservation
    Unreserve {
        /// s0:cX,cY or cN
        target: String,
    },
    /// List reservations
    Reservations,
    /// Relabel a volume for a container (private label, or shared with --shared)
    Relabel {
        /// Container id
        id: String,
        /// The volume's root directory
        path: PathBuf,
        /// Label for all containers (level s0) instead of this one only
        #[arg(long)]
        shared: bool,
        /// Also enter file systems mounted below the root
        #[arg(long)]
        cross_mounts: bool,
        /// Also label files with hard links outside the volume (by default
        /// they keep their label: they may be host files linked into it)
        #[arg(long)]
        hard_links: bool,
    },
    /// Release a container's label when the engine removes it (never at stop)
    Follow(follow::Args),
    /// Release every allocation of OWNER except the containers that still exist
    Reconcile {
        /// The runtime whose allocations are reconciled, e.g. podman
        #[arg(long)]
        owner: String,
        /// Ids of containers that still exist; `-` reads more ids from stdin
        /// (whitespace-separated)
        #[arg(long, num_args = 0..)]
        keep: Vec<String>,
        /// Only show what would be released
        #[arg(long)]
        dry_run: bool,
        /// Keep allocations younger than SECS (default: mcsd's
        /// [reconcile] min_age_secs)
        #[arg(long, value_name = "SECS")]
        min_age: Option<u64>,
    },
}

/// What engine-args and engine-run allocate.
#[derive(Debug, clap::Args)]
struct EngineRequest {
    /// Share one level with every container started with the same --pod
    /// (the group mcsd-pod-POD)
    #[arg(long)]
    pod: Option<String>,
    /// Who holds the allocation [default: the engine's name]
    #[arg(long)]
    owner: Option<String>,
    /// The group key put on the container [default: mcsd-<16 random hex
    /// digits>, or mcsd-pod-POD with --pod]
    #[arg(long)]
    key: Option<String>,
}

impl EngineRequest {
    fn into_request(self) -> engine::Request {
        engine::Request {
            pod: self.pod,
            owner: self.owner,
            key: self.key,
        }
    }
}

async fn run(cli: Cli, out: &mut impl Write) -> Result<(), Failure> {
    let socket = mcs_client::socket_path(cli.socket.as_deref());
    // Commands that need no daemon.
    match cli.command {
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "mcsctl", out);
            return Ok(());
        }
        Command::Hook {
            stage: HookStage::Poststop,
        } => {
            hook::poststop(&socket, out).await;
            return Ok(());
        }
        Command::Hook {
            stage: HookStage::CreateRuntime(args),
        } => {
            return hook::create_runtime(&socket, &args, out)
                .await
                .map_err(Failure::Hook);
        }
        // Connects (and reconnects) itself: mcsd may be down at start.
        Command::Follow(args) => return follow::run(&socket, args).await.map_err(Failure::Input),
        _ => {}
    }
    let mut client = Client::connect(&socket).await?;
    let wide = cli.output == Format::Wide;
    let format = if wide { Format::Table } else { cli.output };
    match cli.command {
        Command::Completions { .. } | Command::Hook { .. } | Command::Follow(_) => {
            unreachable!()
        }
        Command::EngineArgs {
            engine,
            request,
            env_file,
        } => {
            let granted = engine::allocate(&mut client, engine, &request.into_request()).await?;
            let args = granted.args(engine, false);
            if let Some(path) = env_file {
                engine::write_env_file(&path, &granted, &args)
                    .map_err(|e| Failure::Input(format!("cannot write {}: {e}", path.display())))?;
            }
            match format {
                Format::Json => output::print_json(
                    out,
                    &json!({"engine": engine.name(), "key": granted.key, "level": granted.level, "args": args}),
                )?,
                Format::Table | Format::Wide => engine::print_args(out, &args)?,
            }
        }
        Command::EngineRun { request, argv } => {
            return engine::exec(&mut client, request.into_request(), argv).await;
        }
        Command::Status => {
            let s = client.status().await?;
            match format {
                Format::Json => output::print_json(
                    out,
                    &json!({
                        "version": s.version,
                        "started_at": output::time(s.started_at.as_ref()),
                        "uptime_seconds": s.uptime_seconds,
                        "store": s.store,
                        "selinux_mode": s.selinux_mode,
                        "health": s.health,
                        "socket": s.socket,
                        "range": s.range,
                        "restore_mode": s.restore_mode,
                    }),
                )?,
                _ => {
                    let health = if s.health == "SERVING" {
                        output::paint(&s.health, "32")
                    } else {
                        output::paint(&s.health, "31")
                    };
                    output::print_fields(
                        out,
                        &[
                            ("version", s.version.clone()),
                            ("health", health),
                            (
                                "uptime",
                                humantime::format_duration(std::time::Duration::from_secs(
                                    s.uptime_seconds as u64,
                                ))
                                .to_string(),
                            ),
                            ("socket", s.socket.clone()),
                            ("store", s.store.clone()),
                            ("range", s.range.clone()),
                            ("selinux", s.selinux_mode.clone()),
                            ("restore", s.restore_mode.clone()),
                        ],
                    )?
                }
            }
        }
        Command::Allocate {
            id,
            owner,
            group,
            level,
        } => {
            let mut request = Allocate::new(id);
            if let Some(owner) = owner {
                request = request.owner(owner);
            }
            if let Some(group) = group {
                request = request.group(group);
            }
            if let Some(level) = level {
                request = request.level(level);
            }
            let response = client.allocate_full(request).await?;
            let allocation = response.allocation.unwrap_or_default();
            match format {
                Format::Json => {
                    let mut value = output::allocation_json(&allocation);
                    value["created"] = json!(response.created);
                    output::print_json(out, &value)?;
                }
                Format::Table | Format::Wide => output::print_allocation(out, &allocation)?,
            }
        }
        Command::Release { id } => {
            let response = client.release(id.clone()).await?;
            let level = response.allocation.as_ref().map(|a| a.level.clone());
            match format {
                Format::Json => output::print_json(
                    out,
                    &json!({
                        "container_id": id,
                        "released": response.released,
                        "level": level.clone().unwrap_or_default(),
                        "level_freed": response.level_freed,
                        "restored": response.restored.iter().map(|r| json!({
                            "path": r.path, "mode": r.mode, "changed": r.changed,
                            "failed": r.failed, "note": r.error,
                            "hardlinks_skipped": r.hardlinks_skipped,
                        })).collect::<Vec<_>>(),
                    }),
                )?,
                Format::Table | Format::Wide if response.released => writeln!(
                    out,
                    "released {id} ({}){}",
                    level.unwrap_or_default(),
                    if response.level_freed {
                        "; the level is free again"
                    } else {
                        "; the level stays held (group members remain, or it is reserved)"
                    }
                )?,
                Format::Table | Format::Wide => {
                    writeln!(out, "{id} held no allocation; nothing to release")?
                }
            }
            if format == Format::Table {
                for r in &response.restored {
                    match r.error.as_str() {
                        "" => writeln!(
                            out,
                            "restored {} ({}): {} changed{}",
                            r.path,
                            r.mode,
                            r.changed,
                            match r.hardlinks_skipped {
                                0 => String::new(),
                                n => format!(
                                    ", {n} hard-linked name(s) left alone (links outside the tree)"
                                ),
                            }
                        )?,
                        note => writeln!(out, "left {} as is: {note}", r.path)?,
                    }
                }
            }
        }
        Command::Get { id } => {
            let allocation = client.get(id).await?;
            match format {
                Format::Json => output::print_json(out, &output::allocation_json(&allocation))?,
                Format::Table | Format::Wide => output::print_allocation(out, &allocation)?,
            }
        }
        Command::List {
            owner,
            group,
            node,
            limit,
            sort,
        } => {
            let query = list::Query {
                owner,
                group,
                node,
                limit,
                sort,
            };
            list::run(&mut client, query, format, wide, out).await?
        }
        Command::Stats => {
            let s = client.stats().await?;
            match format {
                Format::Json => output::print_json(
                    out,
                    &json!({
                        "range": s.range,
                        "total": s.total,
                        "held": s.held,
                        "free": s.free,
                        "reserved": s.reserved,
                        "containers": s.containers,
                        "groups": s.groups,
                        "owners": s.owners.iter().map(|o| json!({"owner": o.owner, "containers": o.containers})).collect::<Vec<_>>(),
                    }),
                )?,
                _ => {
                    writeln!(out, "usage       {}", output::bar(s.held, s.total, 40))?;
                    output::print_fields(
                        out,
                        &[
                            ("range", s.range.clone()),
                            ("total", s.total.to_string()),
                            ("held", s.held.to_string()),
                            ("free", s.free.to_string()),
                            ("reserved", s.reserved.to_string()),
                            ("containers", s.containers.to_string()),
                            ("groups", s.groups.to_string()),
                        ],
                    )?;
                    if !s.owners.is_empty() {
                        writeln!(out)?;
                        let mut table = output::StreamingTable::new(vec!["OWNER", "CONTAINERS"]);
                        let rows: Vec<Vec<String>> = s
                            .owners
                            .iter()
                            .map(|o| vec![o.owner.clone(), o.containers.to_string()])
                            .collect();
                        table.rows(out, &rows)?;
                    }
                }
            }
        }
        Command::Reserve { target } => {
            let r = client.reserve(target).await?;
            let reservation = r.reservation.unwrap_or_default();
            match format {
                Format::Json => output::print_json(
                    out,
                    &json!({
                        "target": reservation.target,
                        "created": r.created,
                        "pairs_covered": r.pairs_covered,
                        "pairs_held": r.pairs_held,
                        "created_at": output::time(reservation.created_at.as_ref()),
                    }),
                )?,
                Format::Table | Format::Wide => writeln!(
                    out,
                    "{} {}: covers {} pair(s), {} held (holders keep them until released)",
                    if r.created {
                        "reserved"
                    } else {
                        "already reserved"
                    },
                    reservation.target,
                    r.pairs_covered,
                    r.pairs_held
                )?,
            }
        }
        Command::Unreserve { target } => {
            let r = client.unreserve(target.clone()).await?;
            match format {
                Format::Json => output::print_json(
                    out,
                    &json!({"target": target, "removed": r.removed, "pairs_freed": r.pairs_freed}),
                )?,
                Format::Table | Format::Wide if r.removed => writeln!(
                    out,
                    "removed reservation {target}; {} pair(s) free again",
                    r.pairs_freed
                )?,
                Format::Table | Format::Wide => {
                    writeln!(out, "no reservation {target}; nothing removed")?
                }
            }
        }
        Command::Relabel {
            id,
            path,
            shared,
            cross_mounts,
            hard_links,
        } => {
            // Resolve relative paths here: mcsd has its own working directory.
            let path = std::path::absolute(&path).map_err(|e| {
                Failure::Input(format!("cannot make {} absolute: {e}", path.display()))
            })?;
            let request = proto::RelabelRequest {
                container_id: id,
                path: path.display().to_string(),
                shared,
                cross_mounts,
                hard_links,
            };
            let mut stream = client.relabel(request).await?;
            relabel::show(&mut stream, format, out).await?;
        }
        Command::Reconcile {
            owner,
            keep,
            dry_run,
            min_age,
        } => {
            let mut ids = Vec::with_capacity(keep.len());
            for id in keep {
                if id == "-" {
                    let mut text = String::new();
                    std::io::stdin()
                        .read_to_string(&mut text)
                        .map_err(|e| Failure::Input(format!("cannot read ids from stdin: {e}")))?;
                    ids.extend(text.split_whitespace().map(str::to_owned));
                } else {
                    ids.push(id);
                }
            }
            let r = client
                .reconcile_with_min_age(owner.clone(), ids, dry_run, min_age)
                .await?;
            match format {
                Format::Json => output::print_json(
                    out,
                    &json!({
                        "owner": owner,
                        "dry_run": dry_run,
                        "released": r.released.iter().map(output::allocation_json).collect::<Vec<_>>(),
                        "kept": r.kept,
                        "unknown": r.unknown,
                        "kept_young": r.kept_young,
                        "min_age_secs": r.min_age_secs,
                        "not_released": r.not_released.iter().map(|n| json!({
                            "allocation": n.allocation.as_ref().map(output::allocation_json),
                            "reason": n.reason,
                        })).collect::<Vec<_>>(),
                    }),
                )?,
                Format::Table | Format::Wide => {
                    let verb = if dry_run { "would release" } else { "released" };
                    for a in &r.released {
                        writeln!(out, "{verb} {} ({})", a.container_id, a.level)?;
                    }
                    for n in &r.not_released {
                        let (id, level) = n
                            .allocation
                            .as_ref()
                            .map_or(("?", "?"), |a| (a.container_id.as_str(), a.level.as_str()));
                        writeln!(out, "not released {id} ({level}): {}", n.reason)?;
                    }
                    writeln!(
                        out,
                        "{owner}: {verb} {}, kept {}, {} id(s) to keep held nothing, {} younger than {} s kept",
                        r.released.len(),
                        r.kept,
                        r.unknown,
                        r.kept_young,
                        r.min_age_secs
                    )?;
                }
            }
            if let Some(first) = r.not_released.first() {
                return Err(Failure::Input(format!(
                    "{} stale allocation(s) not released, their volumes could not be restored; first: {}",
                    r.not_released.len(),
                    first.reason
                )));
            }
        }
        Command::Reservations => {
            let reservations = client.reservations().await?;
            match format {
                Format::Json => output::print_json(
                    out,
                    &json!(reservations
                        .iter()
                        .map(|r| json!({"target": r.target, "created_at": output::time(r.created_at.as_ref())}))
                        .collect::<Vec<_>>()),
                )?,
                Format::Table | Format::Wide => {
                    let mut table = output::StreamingTable::new(vec!["RESERVATION", "CREATED"]);
                    let rows: Vec<Vec<String>> = reservations
                        .iter()
                        .map(|r| vec![r.target.clone(), output::time(r.created_at.as_ref())])
                        .collect();
                    table.rows(out, &rows)?;
                }
            }
        }
    }
    Ok(())
}

/// What ends mcsctl with a non-zero status.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot write output: {0}")]
    Output(#[from] io::Error),
    #[error("{0}")]
    Input(String),
    /// A hook's refusal: printed as is (it names its stage), exit 1.
    #[error("{0}")]
    Hook(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcsctl: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let result = runtime.block_on(run(cli, &mut out));
    let flushed = out.flush();
    match result.and(flushed.map_err(Failure::from)) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (mcsctl list | head) is not an error worth a message.
        Err(Failure::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(Failure::Hook(message)) => {
            eprintln!("{}", message.replace('\n', " "));
            ExitCode::FAILURE
        }
        Err(e) => {
            let message = e.to_string().replace('\n', " ");
            eprintln!("mcsctl: {message}");
            ExitCode::FAILURE
        }
    }
}
