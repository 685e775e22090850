//! Thin entry point: parse the command line, run, map the result to an exit code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = esim_notify::cli::Cli::parse();
    esim_notify::cli::run(cli)
}
