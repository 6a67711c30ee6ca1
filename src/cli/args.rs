//! The command line's shape (clap): every subcommand and its arguments, as `--help` shows them.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "gobearmon",
    version,
    about = "A distributed uptime monitor: workers run checks from several places, a replicated \
             viewserver elects the controller, and a check flips only when several workers agree.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Config file of the node to run (same as `gobearmon run CONFIG`).
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the node the config file describes: a viewserver ([viewserver]) or a worker
    /// ([worker], with [controller] when it may become controller).
    Run {
        /// The node's TOML config file.
        config: PathBuf,
    },
    /// Validate a config file: prints every problem with its key; exits 0 when the file is
    /// usable, 64 when it is not.
    CheckConfig {
        /// The TOML config file to check.
        config: PathBuf,
    },
    /// Run one check here and now with gobearmon's parameters, e.g.
    /// `gobearmon probe tcp '{"address":"127.0.0.1:22"}'`. Prints one JSON line
    /// (`status`, `message`, `duration_ms`, `details`); exits 0 online, 1 offline (unreadable
    /// parameters and unknown types included), 2 for an unusable command line, 3 when this
    /// machine cannot run the check (status `fail`, e.g. no permission for ICMP sockets).
    Probe {
        /// Check type: http, tcp, icmp, ssl_expire or dns.
        check_type: String,
        /// The check's parameters, as in `checks.data`.
        data: String,
        /// Read the default nameserver of dns checks (`[dns] server`) from this node config.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Show the cluster as the controller sees it: epoch, controller, viewserver leader,
    /// workers with last-seen and stale flags, checks with status, open round and last
    /// results. Prints tables (`--json`: the controller's JSON); exits 0, or 1 when no
    /// controller answers.
    Status {
        /// Any node's config file (for the cluster secret and the viewserver addresses).
        #[arg(long)]
        config: PathBuf,
        /// Print the controller's answer as JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// A check's results per location (counts, availability, latency percentiles), per hour
    /// up to two days back and per day beyond, read from the database. Exits 0, 1 when the
    /// check or the database cannot be found.
    History {
        /// The check: its id or its exact name.
        check: String,
        /// How far back, like "24h", "7d" (default 24h).
        #[arg(long, default_value = "24h")]
        since: String,
        /// Only results from this location.
        #[arg(long)]
        location: Option<String>,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        /// The config file of a controller-capable worker (its database).
        #[arg(long)]
        config: PathBuf,
    },
    /// A check's uptime over a window (time-weighted from its flips, to the second) and its
    /// availability per location. Exits 0, 1 when the check or the database cannot be found.
    Uptime {
        /// The check: its id or its exact name.
        check: String,
        /// The window before now, like "30d", "24h" (default 30d).
        #[arg(long, default_value = "30d")]
        window: String,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        /// The config file of a controller-capable worker (its database).
        #[arg(long)]
        config: PathBuf,
    },
    /// Acknowledge CHECK's open incident: records who (`--by`, else `$USER`) and why, and stops
    /// its reminders and pending escalations. Exits 0, 1 when the check or the database cannot
    /// be found, the check has no open incident, or `--event` names one that is no longer open.
    Ack {
        /// The check: its id or its exact name.
        check: String,
        /// The incident: the id of the flip event that opened it (as the dashboard, the API
        /// and the notifications show it). Refused when that incident is no longer the open
        /// one, so a late acknowledgement never silences a newer incident. Without it: the
        /// incident open now.
        #[arg(long)]
        event: Option<i64>,
        /// A note kept with the acknowledgement.
        #[arg(long, default_value = "")]
        comment: String,
        /// Who acknowledges (default: `$USER`).
        #[arg(long)]
        by: Option<String>,
        /// The config file of a controller-capable worker (its database).
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the URL the job watched by push check CHECK calls (POST, or GET for cron
    /// one-liners; add `?status=fail&msg=...` to report a failure): `[web] public_url`, or
    /// `http://` and `[web] addr`, then `/push/TOKEN`. Exits 0, 1 when the check or the
    /// database cannot be found or the check is not a push check.
    PushUrl {
        /// The check: its id or its exact name.
        check: String,
        /// The config file of a controller-capable worker (its database and `[web]`).
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the node key of worker ID, derived from the cluster secret in FILE (any config
    /// that holds `[default] password`). Give it to a probe-only worker outside the trusted
    /// zone as `[worker] key`, so that it holds no cluster secret.
    NodeKey {
        /// The worker's `[worker] id`.
        id: String,
        #[arg(long)]
        config: PathBuf,
    },
    /// Ask the worker of FILE to hand over (as `SIGUSR1` does): a controller steps down
    /// first, the worker stays away for `disconnect_pause`. The request is signed with the
    /// worker's own key, so only its operator can send it.
    Disconnect {
        /// The worker's config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Contacts: `contact test ID --config FILE` sends a test notification to contact ID
    /// through the real delivery path and prints `delivered` (exit 0) or the error (exit 1).
    Contact {
        #[command(subcommand)]
        action: ContactAction,
    },
    /// Dashboard users: `user add NAME --role viewer|operator --config FILE`.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserAction {
    /// Add a dashboard user, or set an existing one's password and role. The password is
    /// read from the terminal (asked twice), or as the first line of standard input when that
    /// is not a terminal.
    Add {
        /// The user name (1 to 64 characters).
        name: String,
        /// `viewer` (reads every page) or `operator` (also pauses, resumes, acknowledges).
        #[arg(long, default_value = "viewer")]
        role: String,
        /// The config file of a controller-capable worker (its database).
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum ContactAction {
    /// Send a test notification to one contact of the `[controller] database`.
    Test {
        /// `contacts.id`.
        id: i64,
        /// The config file of a controller-capable worker (its database, [smtp], [twilio]).
        #[arg(long)]
        config: PathBuf,
    },
}
