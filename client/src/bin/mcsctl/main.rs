//! `mcsctl`: drive and query mcsd from the command line.
//!
//! Every command prints a human table by default and JSON with `-o json`.
//! Errors print one line on stderr and exit with status 1.

// cli, engine, output and Failure are pub(crate) because the modules name them
// from the crate root, which in examples/mcsctl-man.rs is not this file: the
// man page generator includes it as a module and re-exports them.
mod allocation;
pub(crate) mod cli;
pub(crate) mod engine;
mod follow;
mod hook;
mod list;
pub(crate) mod output;
mod reconcile;
mod relabel;
mod reserve;
mod status;

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use mcs_client::{Allocate, Client, ClientError};

use cli::{Cli, Command, HookStage};
use output::Format;

/// Runs one parsed command line, writing its output to `out`.
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
    let client = &mut client;
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
            let request = request.into_request();
            engine::allocate_and_print(client, engine, &request, env_file.as_deref(), format, out)
                .await
        }
        Command::EngineRun { request, argv } => {
            engine::exec(client, request.into_request(), argv).await
        }
        Command::Status => status::status(client, format, out).await,
        Command::Stats => status::stats(client, format, out).await,
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
            allocation::allocate(client, request, format, out).await
        }
        Command::Release { id } => allocation::release(client, id, format, out).await,
        Command::Get { id } => allocation::get(client, id, format, out).await,
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
            list::run(client, query, format, wide, out).await
        }
        Command::Reserve { target } => reserve::reserve(client, target, format, out).await,
        Command::Unreserve { target } => reserve::unreserve(client, target, format, out).await,
        Command::Reservations => reserve::list(client, format, out).await,
        Command::Relabel {
            id,
            path,
            shared,
            cross_mounts,
            hard_links,
        } => {
            let options = relabel::Options {
                shared,
                cross_mounts,
                hard_links,
            };
            relabel::run(client, id, &path, options, format, out).await
        }
        Command::Reconcile {
            owner,
            keep,
            dry_run,
            min_age,
        } => {
            let request = reconcile::Request {
                owner,
                keep,
                dry_run,
                min_age,
            };
            reconcile::run(client, request, format, out).await
        }
    }
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
