//! mcsctl's command line: what clap parses, and nothing that runs.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::output::Format;
use super::{engine, follow, hook, list};

/// Query and steer mcsd, the host's SELinux MCS label authority.
// pub(crate): examples/mcsctl-man.rs renders the man page from it.
#[derive(Debug, Parser)]
#[command(name = "mcsctl", version, about)]
pub(crate) struct Cli {
    /// mcsd's socket [default: $MCSD_SOCKET, else /run/mcsd/mcsd.sock]
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
    /// Output format
    #[arg(short, long, global = true, value_enum, default_value = "table")]
    pub(crate) output: Format,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// OCI hook stages mcsctl handles.
#[derive(Debug, Subcommand)]
pub(crate) enum HookStage {
    /// Release the container's label; reads the OCI state JSON on stdin.
    /// Never fails the teardown: problems are reported on stderr, exit 0.
    Poststop,
    /// Record the level the engine gave the container (bundle's
    /// config.json) under its id; refuse the start (exit 1) if another
    /// container holds that pair. Reads the OCI state JSON on stdin.
    CreateRuntime(hook::CreateRuntimeArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
pub(crate) struct EngineRequest {
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
    pub(crate) fn into_request(self) -> engine::Request {
        engine::Request {
            pod: self.pod,
            owner: self.owner,
            key: self.key,
        }
    }
}
