//! The `mcsd` binary: parses flags, builds the configuration, runs the daemon.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use mcsd::config::{Config, DEFAULT_CONFIG};

/// mcsd hands out unique SELinux MCS category pairs to container runtimes.
// pub(crate): examples/mcsd-man.rs renders the man page from it.
#[derive(Debug, Parser)]
#[command(version, about)]
pub(crate) struct Args {
    /// Configuration file [default: /etc/mcsd/mcsd.toml if it exists]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Unix socket to serve on [default: /run/mcsd/mcsd.sock]
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Directory for the store [default: /var/lib/mcsd]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Category range to hand out, e.g. c0.c1023 or c0.c9
    #[arg(long, value_name = "RANGE")]
    categories: Option<String>,
    /// This instance's name, recorded with each allocation (several hosts
    /// share one pool with the etcd store) [default: the host name]
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
    /// Development mode: socket and state under ./.mcsd-dev, no root needed
    #[arg(long)]
    dev: bool,
    /// Log format (when stderr is the journal, mcsd logs to it with fields)
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Validate the configuration, print the effective one, and exit
    #[arg(long)]
    check_config: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn config_of(args: &Args) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None if !args.dev && Path::new(DEFAULT_CONFIG).exists() => {
            Config::from_file(Path::new(DEFAULT_CONFIG))?
        }
        None => Config::default(),
    };
    if args.dev {
        let base = std::env::current_dir()?.join(".mcsd-dev");
        config.socket = base.join("mcsd.sock");
        config.state_dir = base.join("state");
    }
    if let Some(socket) = &args.socket {
        config.socket = std::path::absolute(socket)?;
    }
    if let Some(dir) = &args.state_dir {
        config.state_dir = std::path::absolute(dir)?;
    }
    if let Some(name) = &args.node_name {
        config
            .set_node_name(name)
            .map_err(|m| anyhow::anyhow!("--node-name: {m}"))?;
    }
    if let Some(categories) = &args.categories {
        config.set_categories(categories)?;
    }
    Ok(config)
}

/// Whether stderr is the journal (systemd sets JOURNAL_STREAM to its
/// device and inode).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(expected) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    expected.to_string_lossy() == format!("{}:{}", meta.dev(), meta.ino())
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    if stderr_is_journal() {
        // Structured fields (container_id, owner, level, uid, ...) become
        // journal fields: `journalctl -u mcsd CONTAINER_ID=...`.
        if let Ok(journal) = tracing_journald::layer() {
            tracing_subscriber::registry()
                .with(filter())
                .with(
                    journal
                        .with_field_prefix(None)
                        .with_syslog_identifier("mcsd".into()),
                )
                .init();
            return;
        }
    }
    let filter = filter();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    mcsd::malloc::limit_arenas();
    let args = Args::parse();
    init_logging(args.log_format);
    if args.check_config {
        return match config_of(&args).and_then(|c| {
            mcsd::daemon::check(&c)?;
            Ok(c)
        }) {
            Ok(config) => {
                print!("{}", config.to_toml());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mcsd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let result = config_of(&args).and_then(|config| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        if args.dev {
            eprintln!(
                "mcsd (dev mode) on {}\n  try: MCSD_SOCKET={} cargo run -q --bin mcsctl -- allocate demo",
                config.socket.display(),
                config.socket.display()
            );
        }
        let reload = || config_of(&args).map_err(|e| e.to_string());
        runtime.block_on(mcsd::daemon::run(&config, reload))?;
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcsd: {e}");
            ExitCode::FAILURE
        }
    }
}
