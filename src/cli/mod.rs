//! The command line's library side: every subcommand of `gobearmon`, its output and its exit
//! code. `src/main.rs` only parses the arguments ([`Cli`]) and calls [`execute`].
//!
//! - [`args`]: the clap definitions.
//! - `node`: `run` and `check-config`: the node's dependencies built in one place.
//! - `probe`: `probe`, one check run here and now.
//! - `cluster`: `status`, `disconnect` and `node-key`, which talk to (or for) other nodes.
//! - `database`: `ack`, `user add`, `contact test`, `history`, `uptime`, `push-url`, which
//!   read or write the `[controller] database`.
//!
//! A subcommand returns a typed [`Error`] carrying its [`Exit`]; only [`execute`] prints it.

use std::fmt;
use std::path::Path;

pub mod args;
mod cluster;
mod database;
mod node;
mod probe;

pub use args::Cli;
use args::{Command, ContactAction, UserAction};

use crate::config;

/// How `gobearmon` ends (README, "Exit codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// `probe` found the target offline (parameters that do not decode included), or
    /// `status`/`contact test` failed.
    Failed = 1,
    /// An unusable `probe` command line.
    Usage = 2,
    /// `probe` could not run the check here.
    CannotRun = 3,
    /// An unusable config file, or an address that cannot be bound (EX_USAGE).
    Config = 64,
    /// An internal error (EX_SOFTWARE).
    Software = 70,
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit as u8)
    }
}

/// Why a subcommand failed: the exit code and the line(s) for standard error.
#[derive(Debug)]
pub struct Error {
    exit: Exit,
    /// What to print on standard error; `None` when it was logged already (a node that
    /// stopped reports through `tracing`).
    message: Option<String>,
}

impl Error {
    /// Exit `exit` after printing `message` as it is.
    pub fn new(exit: Exit, message: impl Into<String>) -> Error {
        Error {
            exit,
            message: Some(message.into()),
        }
    }

    /// Exit `exit`; the reason was logged already.
    pub fn logged(exit: Exit) -> Error {
        Error {
            exit,
            message: None,
        }
    }

    /// Exit 1 (`Failed`) printing `error: {message}`, the shape of most commands' failures.
    pub fn failed(message: impl fmt::Display) -> Error {
        Error::new(Exit::Failed, format!("error: {message}"))
    }

    /// The exit code this error ends `gobearmon` with.
    pub fn exit(&self) -> Exit {
        self.exit
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message.as_deref().unwrap_or_default())
    }
}

impl std::error::Error for Error {}

/// Runs what the command line asks, prints a failure's message and returns the exit code.
pub fn execute(cli: Cli) -> Exit {
    match dispatch(cli) {
        Ok(exit) => exit,
        Err(e) => {
            if let Some(message) = &e.message {
                eprintln!("{message}");
            }
            e.exit
        }
    }
}

fn dispatch(cli: Cli) -> Result<Exit, Error> {
    let done = |r: Result<(), Error>| r.map(|()| Exit::Ok);
    let Some(command) = cli.command else {
        return match cli.config {
            Some(config) => done(node::run(&config)),
            None => Err(Error::new(
                Exit::Config,
                "gobearmon: no config file given; see `gobearmon --help`",
            )),
        };
    };
    match command {
        Command::Run { config } => done(node::run(&config)),
        Command::CheckConfig { config } => done(node::check_config(&config)),
        Command::Probe {
            check_type,
            data,
            config,
        } => probe::probe(&check_type, &data, config.as_deref()),
        Command::Status { config, json } => done(cluster::status(&config, json)),
        Command::NodeKey { id, config } => done(cluster::node_key(&id, &config)),
        Command::Disconnect { config } => done(cluster::disconnect(&config)),
        Command::PushUrl { check, config } => done(database::push_url(&check, &config)),
        Command::Ack {
            check,
            event,
            comment,
            by,
            config,
        } => done(database::ack(&check, event, &comment, by, &config)),
        Command::Contact {
            action: ContactAction::Test { id, config },
        } => done(database::contact_test(id, &config)),
        Command::User {
            action: UserAction::Add { name, role, config },
        } => done(database::user_add(&name, &role, &config)),
        Command::History {
            check,
            since,
            location,
            json,
            config,
        } => done(database::report(
            &config,
            &check,
            &since,
            json,
            database::Report::History(location),
        )),
        Command::Uptime {
            check,
            window,
            json,
            config,
        } => done(database::report(
            &config,
            &check,
            &window,
            json,
            database::Report::Uptime,
        )),
    }
}

/// The kind of async runtime a command needs.
#[derive(Debug, Clone, Copy)]
enum Threads {
    /// One thread: `probe`, a single check.
    One,
    /// A worker thread per core: nodes, and commands that talk to them or to the database.
    PerCore,
}

/// The one place a tokio runtime is built.
fn runtime(threads: Threads) -> std::io::Result<tokio::runtime::Runtime> {
    match threads {
        Threads::One => tokio::runtime::Builder::new_current_thread(),
        Threads::PerCore => tokio::runtime::Builder::new_multi_thread(),
    }
    .enable_all()
    .build()
}

/// Reads a config file for a command; every problem it has gives exit 64.
fn load_config(path: &Path) -> Result<config::Config, Error> {
    config::load(path).map_err(|e| Error::new(Exit::Config, e.to_string()))
}
