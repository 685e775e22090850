//! The command line of SPEC §2.
//!
//! Commands that touch the store open it directly when no server runs; when
//! the running server holds the store's lock they go through its admin
//! listener instead, so the same command works either way.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{config_path, Config};
use crate::startup::{self, Application};
use crate::telemetry;

#[derive(Debug, Parser)]
#[command(
    name = "esim-notify",
    version,
    about = "Tells eSIM customers by email what happens to their eSIM"
)]
pub struct Cli {
    /// Config file (default: $ESIM_NOTIFY_CONFIG, then ./config.toml)
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the receiver and the sender until SIGINT/SIGTERM (the default)
    Serve,
    /// Validate the config and every template; exit 1 on any problem
    Check,
}

/// Exit codes of SPEC §2.
pub const OK: u8 = 0;
pub const FAILED: u8 = 1;
pub const USAGE: u8 = 2;

pub fn run(cli: Cli) -> ExitCode {
    let path = config_path(cli.config.as_deref());
    let code = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&path),
        Command::Check => check(&path),
    };
    ExitCode::from(code)
}

fn load(path: &std::path::Path) -> Result<Config, u8> {
    Config::load(path).map_err(|e| {
        eprintln!("{}: configuration refused:\n{e}", path.display());
        FAILED
    })
}

fn serve(path: &std::path::Path) -> u8 {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    telemetry::init(Some(&config));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return FAILED;
        }
    };
    runtime.block_on(async {
        let app = match Application::build_with_path(config, Some(path.to_path_buf())).await {
            Ok(app) => app,
            Err(e) => {
                tracing::error!("cannot start: {e:#}");
                eprintln!("cannot start: {e:#}");
                return FAILED;
            }
        };
        let (reload_tx, reload_rx) = tokio::sync::mpsc::unbounded_channel();
        match app.run_until_stopped(signals(reload_tx), reload_rx).await {
            Ok(()) => OK,
            Err(e) => {
                tracing::error!("stopped with an error: {e:#}");
                FAILED
            }
        }
    })
}

/// Resolves on SIGINT or SIGTERM; each SIGHUP sends a reload request.
async fn signals(reload: tokio::sync::mpsc::UnboundedSender<()>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stopping");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM"); return; }
            _ = int.recv() => { tracing::info!("SIGINT"); return; }
            _ = hup.recv() => { tracing::info!("SIGHUP: reloading"); let _ = reload.send(()); }
        }
    }
}

/// Validates the config and every template, printing each problem with its
/// key or file and line.
fn check(path: &std::path::Path) -> u8 {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for w in config.warnings() {
        println!("warning: {w}");
    }
    match startup::build_live(&config) {
        Ok(live) => {
            println!(
                "{}: OK ({} templates checked)",
                path.display(),
                startup::template_classes(&config)
                    .len()
                    .min(live.templates.names().len())
            );
            OK
        }
        Err(problems) => {
            for p in &problems {
                println!("{p}");
            }
            println!("{} problem(s)", problems.len());
            FAILED
        }
    }
}

#[allow(dead_code)]
const _: u8 = USAGE;
