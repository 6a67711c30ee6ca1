//! The `gobearmon` binary: parses the command line and hands it to [`gobearmon::cli`], which
//! runs the subcommand and gives the exit code (README, "Exit codes").

use std::process::ExitCode;

use clap::Parser;

/// mimalloc (2.x) rather than glibc's allocator: a controller with 100,000 checks takes
/// 919 bytes per check with it against 1,503 with glibc, which keeps the memory of each
/// minute's due burst (scripts/bench-controller-scale, README "Measured").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    gobearmon::cli::execute(gobearmon::cli::Cli::parse()).into()
}
