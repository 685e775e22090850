//! The command line of SPEC §2.
//!
//! Commands that touch the store open it directly when no server runs; when
//! the running server holds the store's lock they go through its admin
//! listener instead, so the same command works either way.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;
mod email;
mod keys;
mod operator;
mod store_copy;

use crate::config::{config_path, Config};
use crate::customers::IdKind;
use crate::live;
use crate::startup::Application;
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
    /// Print the email(s) one webhook body would produce for a new customer; changes nothing
    Render {
        /// A webhook body, as eSIM Access posts it
        file: PathBuf,
        #[arg(long, default_value = "customer@example.com")]
        email: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        locale: Option<String>,
        #[arg(long)]
        timezone: Option<String>,
    },
    /// The customer directory: who is told about which eSIM
    #[command(subcommand)]
    Customers(CustomersCommand),
    /// The suppression list: a suppressed address is never emailed
    #[command(subcommand)]
    Suppress(SuppressCommand),
    /// List queued notices (or, with --parked, the parked ones), or cancel one
    Outbox {
        #[command(subcommand)]
        command: Option<OutboxCommand>,
        #[arg(long)]
        json: bool,
        /// List the notices parked for want of a customer, with when each expires
        #[arg(long)]
        parked: bool,
    },
    /// Dead letters: list them or put them back in the queue
    #[command(subcommand)]
    Dead(DeadCommand),
    /// Stop all sending (intake goes on and the queue keeps growing)
    Pause,
    /// Restart sending
    Resume,
    /// Write a consistent copy of the store into DIR (new or empty), even while serving
    Backup { dir: PathBuf },
    /// API keys for the shop's /api/v1: add (prints the key once), list, revoke
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Move the store: `store copy --to URL` copies the (sled) store into an empty PostgreSQL database
    #[command(subcommand)]
    Store(StoreCommand),
    /// Send one sample email through the configured transport and report the result
    SendTest {
        #[arg(long)]
        to: String,
    },
}

/// The identifier flags, shared by the commands that bind or look up.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct IdArgs {
    #[arg(long)]
    pub iccid: Option<String>,
    #[arg(long)]
    pub esim_tran_no: Option<String>,
    #[arg(long)]
    pub order_no: Option<String>,
    #[arg(long)]
    pub transaction_id: Option<String>,
}

impl IdArgs {
    fn given(&self) -> Vec<(IdKind, &str)> {
        [
            (IdKind::Iccid, &self.iccid),
            (IdKind::EsimTranNo, &self.esim_tran_no),
            (IdKind::OrderNo, &self.order_no),
            (IdKind::TransactionId, &self.transaction_id),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }
}

#[derive(Debug, Subcommand)]
pub enum CustomersCommand {
    /// Bind a recipient to one or more eSIM identifiers
    Add {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        locale: Option<String>,
        #[arg(long)]
        timezone: Option<String>,
        #[command(flatten)]
        ids: IdArgs,
    },
    /// Bind every row of a CSV file (header: email,name,locale,timezone,iccid,esimTranNo,orderNo,transactionId)
    Import { file: PathBuf },
    /// Print the recipient bound to one identifier; exit 1 when none
    #[command(group(clap::ArgGroup::new("id").required(true).multiple(false)
        .args(["iccid", "esim_tran_no", "order_no", "transaction_id"])))]
    Get {
        #[command(flatten)]
        ids: IdArgs,
        #[arg(long)]
        json: bool,
    },
    /// Remove the binding of one identifier
    #[command(group(clap::ArgGroup::new("id").required(true).multiple(false)
        .args(["iccid", "esim_tran_no", "order_no", "transaction_id"])))]
    Remove {
        #[command(flatten)]
        ids: IdArgs,
    },
    /// Remove every binding of an address, cancel its queued notices, redact it from dead letters
    Forget {
        #[arg(long)]
        email: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SuppressCommand {
    /// Never email this address
    Add {
        email: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Email this address again
    Remove { email: String },
    /// Print the suppression list
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it, this once (only its hash is stored)
    Add {
        /// A name for the key, e.g. the shop's (letters, digits, '.', '_', '-')
        name: String,
        /// What it may do: customers, esims:read (comma-separated)
        #[arg(long = "scope", required = true, value_delimiter = ',')]
        scopes: Vec<String>,
        /// Networks it may be used from (comma-separated CIDRs); default: anywhere
        #[arg(long, value_delimiter = ',')]
        networks: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// List the keys: name, scopes, networks, created, last used (never the key)
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: refused from the next request on, on every instance
    Revoke { name: String },
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy every keyspace (events within store.history) into the empty PostgreSQL database at URL; run with the server stopped
    Copy {
        /// postgres://user@host/db?sslmode=require (or set it in ESIM_NOTIFY_STORE_COPY_TO to keep a password off the command line)
        #[arg(long, env = "ESIM_NOTIFY_STORE_COPY_TO", hide_env_values = true)]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// Cancel one queued notice
    Cancel { id: u64 },
}

#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// Print the dead letters
    List {
        #[arg(long)]
        json: bool,
    },
    /// Put one dead letter (or --all) back in the queue
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "all"])))]
    Retry {
        id: Option<u64>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
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
        Command::Render {
            file,
            email,
            name,
            locale,
            timezone,
        } => match load(&path) {
            Ok(config) => email::render(
                &config,
                email::RenderArgs {
                    file: &file,
                    email: &email,
                    name,
                    locale,
                    timezone,
                },
            ),
            Err(code) => code,
        },
        Command::Store(StoreCommand::Copy { to }) => match load(&path) {
            Ok(config) => store_copy::run(&config, &to),
            Err(code) => code,
        },
        Command::SendTest { to } => match load(&path) {
            Ok(config) => email::send_test(&config, &to),
            Err(code) => code,
        },
        other => commands::operate(&path, other),
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
    let runtime = match runtime(true) {
        Ok(r) => r,
        Err(code) => return code,
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

/// A tokio runtime for one command; `multi` for the server.
pub(crate) fn runtime(multi: bool) -> Result<tokio::runtime::Runtime, u8> {
    let mut b = if multi {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    b.enable_all().build().map_err(|e| {
        eprintln!("cannot start the runtime: {e}");
        FAILED
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
    match live::build_live(&config) {
        Ok(live) => {
            for w in live::template_warnings(&config, &live.templates) {
                println!("warning: {w}");
            }
            println!(
                "{}: OK ({} templates checked)",
                path.display(),
                live::template_classes(&config)
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
