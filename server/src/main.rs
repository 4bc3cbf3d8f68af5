//! The `mcsd` binary: parses flags, builds the configuration, runs the daemon.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use mcsd::config::{Config, DEFAULT_CONFIG};

/// mcsd hands out unique SELinux MCS category pairs to container runtimes.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
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
    /// Development mode: socket and state under ./.mcsd-dev, no root needed
    #[arg(long)]
    dev: bool,
    /// Log format
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn config(args: &Args) -> anyhow::Result<Config> {
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
    if let Some(categories) = &args.categories {
        config.set_categories(categories)?;
    }
    Ok(config)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn main() -> ExitCode {
    mcsd::malloc::limit_arenas();
    let args = Args::parse();
    init_logging(args.log_format);
    let result = config(&args).and_then(|config| {
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
        runtime.block_on(mcsd::daemon::run(&config, shutdown_signal()))?;
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
