//! The `gobearmon` binary: command line -> config -> role, and exit codes.
//!
//! Exit codes: 0 success, 1 a probe found its target offline, 2 an unusable command line for
//! `probe`, 64 (EX_USAGE) a config file that cannot be used (or a certificate, key or CA file
//! it names), 70 a node that stopped on an internal error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gobearmon::config;

use gobearmon::cli::Exit;

#[derive(Parser, Debug)]
#[command(
    name = "gobearmon",
    version,
    about = "A distributed uptime monitor: workers run checks from several places, a replicated \
             viewserver elects the controller, and a check flips only when several workers agree.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Config file of the node to run (same as `gobearmon run CONFIG`).
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
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
    /// be found or the check has no open incident.
    Ack {
        /// The check: its id or its exact name.
        check: String,
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
enum UserAction {
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
enum ContactAction {
    /// Send a test notification to one contact of the `[controller] database`.
    Test {
        /// `contacts.id`.
        id: i64,
        /// The config file of a controller-capable worker (its database, [smtp], [twilio]).
        #[arg(long)]
        config: PathBuf,
    },
}

/// mimalloc (2.x) rather than glibc's allocator: a controller with 100,000 checks takes
/// 919 bytes per check with it against 1,503 with glibc, which keeps the memory of each
/// minute's due burst (scripts/bench-controller-scale, README "Measured").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match (cli.command, cli.config) {
        (Some(Command::Run { config }), _) | (None, Some(config)) => run(&config),
        (Some(Command::CheckConfig { config }), _) => check_config(&config),
        (Some(Command::Status { config, json }), _) => status(&config, json),
        (Some(Command::NodeKey { id, config }), _) => node_key(&id, &config),
        (Some(Command::PushUrl { check, config }), _) => push_url(&check, &config),
        (
            Some(Command::Ack {
                check,
                comment,
                by,
                config,
            }),
            _,
        ) => ack(&check, &comment, by, &config),
        (Some(Command::Disconnect { config }), _) => disconnect(&config),
        (
            Some(Command::Probe {
                check_type,
                data,
                config,
            }),
            _,
        ) => probe(&check_type, &data, config.as_deref()),
        (
            Some(Command::Contact {
                action: ContactAction::Test { id, config },
            }),
            _,
        ) => contact_test(id, &config),
        (
            Some(Command::User {
                action: UserAction::Add { name, role, config },
            }),
            _,
        ) => user_add(&name, &role, &config),
        (
            Some(Command::History {
                check,
                since,
                location,
                json,
                config,
            }),
            _,
        ) => report(&config, &check, &since, json, Report::History(location)),
        (
            Some(Command::Uptime {
                check,
                window,
                json,
                config,
            }),
            _,
        ) => report(&config, &check, &window, json, Report::Uptime),
        (None, None) => {
            eprintln!("gobearmon: no config file given; see `gobearmon --help`");
            ExitCode::from(Exit::Config)
        }
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(c) => {
            if let Err(e) = preflight(&c) {
                eprintln!("{}: {e}", path.display());
                return ExitCode::from(Exit::Config);
            }
            let role = match &c.role {
                config::Role::Worker {
                    controller: Some(_),
                    ..
                } => "worker (controller-capable)",
                config::Role::Worker { .. } => "worker (probe-only)",
                config::Role::Viewserver(_) => "viewserver",
            };
            println!("{}: ok, {role} node", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(Exit::Config)
        }
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let tls = match preflight(&config) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::from(Exit::Config);
        }
    };
    init_tracing(config.default.debug);
    raise_open_file_limit();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gobearmon: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::Software);
        }
    };
    runtime.block_on(run_node(config, tls))
}

/// Raises the soft limit on open files to the hard limit: each listener serves up to
/// `gobearmon::api::MAX_CONNECTIONS` connections, more than the usual soft limit of 1024
/// leaves room for beside the node's own sockets.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0
            && limit.rlim_cur < limit.rlim_max
            && {
                let before = limit.rlim_cur;
                limit.rlim_cur = limit.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 && before != limit.rlim_cur
            }
    };
    if raised {
        tracing::debug!(open_files = limit.rlim_cur, "raised the open-file limit");
    }
}

/// Reads the files the config names (`[tls] cert`, `key` and `ca`; `[smtp] ca`), so that a
/// node with an unusable one stops at start naming it. Returns what the listeners serve:
/// HTTPS with this server config, or plain HTTP without `[tls]`.
fn preflight(
    config: &config::Config,
) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, String> {
    gobearmon::tlsutil::install_default_provider();
    smtp_ca(config)?;
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    let node = gobearmon::tlsutil::NodeTls::load(tls).map_err(|e| e.to_string())?;
    node.server_config().map(Some).map_err(|e| e.to_string())
}

/// Checks that `[smtp] ca`, when set, holds a certificate.
fn smtp_ca(config: &config::Config) -> Result<(), String> {
    match (&config.smtp.ca, &config.smtp.host) {
        (Some(ca), Some(_)) => gobearmon::tlsutil::read_certs("[smtp] ca", ca)
            .map(drop)
            .map_err(|e| e.to_string()),
        _ => Ok(()),
    }
}

fn init_tracing(debug: bool) {
    let default = if debug {
        "gobearmon=debug,info"
    } else {
        "info,openraft=warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn bind(
    what: &str,
    addr: &std::net::SocketAddr,
) -> Result<tokio::net::TcpListener, ExitCode> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        tracing::error!(%addr, error = %e, "cannot listen on {what}");
        ExitCode::from(Exit::Config)
    })
}

/// How often one kind of admin notice may be mailed.
fn admin_interval(config: &config::Config) -> std::time::Duration {
    config
        .controller()
        .map_or(config::ControllerKeys::default().admin_interval, |c| {
            c.delivery.admin_interval
        })
}

/// Why a node stopped on an error: its role's error, logged as it is.
#[derive(Debug, thiserror::Error)]
enum NodeError {
    #[error(transparent)]
    Worker(#[from] gobearmon::role::worker::WorkerError),
    #[error(transparent)]
    Viewserver(#[from] gobearmon::role::viewserver::ViewserverError),
}

async fn run_node(
    config: config::Config,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
) -> ExitCode {
    use gobearmon::api::NodeListener;
    use gobearmon::role;
    use std::sync::Arc;
    use tokio::signal::unix::{SignalKind, signal};

    gobearmon::tlsutil::install_default_provider();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let disconnect = Arc::new(tokio::sync::Notify::new());
    let (admin_tx, mut admin_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    match gobearmon::notify::admin::AdminNotifier::new(&config.smtp, admin_interval(&config)) {
        Ok(notifier) => {
            tokio::spawn(async move { notifier.serve(admin_rx).await });
        }
        Err(e) => {
            tracing::error!(error = %e, "admin notices cannot be mailed; they are only logged");
            tokio::spawn(async move {
                while let Some((subject, body)) = admin_rx.recv().await {
                    tracing::error!(%subject, %body, "admin notice");
                }
            });
        }
    }
    let (Ok(mut term), Ok(mut int), Ok(mut usr1)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::user_defined1()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return ExitCode::from(Exit::Software);
    };
    let stop = shutdown.clone();
    let usr1_notify = disconnect.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: draining"); stop.cancel(); }
                _ = int.recv() => { tracing::info!("SIGINT: draining"); stop.cancel(); }
                _ = usr1.recv() => { tracing::info!("SIGUSR1: hand-over"); usr1_notify.notify_one(); }
            }
        }
    });
    let result = match &config.role {
        config::Role::Viewserver(vs) => {
            let listener = match bind("the viewserver address", &vs.addr).await {
                Ok(l) => NodeListener::new(l, tls.clone()),
                Err(code) => return code,
            };
            role::viewserver::run(config.clone(), listener, shutdown.clone(), admin_tx)
                .await
                .map_err(NodeError::from)
        }
        config::Role::Worker { worker, controller } => {
            let worker_listener = match bind("the worker address", &worker.addr).await {
                Ok(l) => NodeListener::new(l, tls.clone()),
                Err(code) => return code,
            };
            let controller_listener = match controller {
                Some(c) => match bind("the controller address", &c.addr).await {
                    Ok(l) => Some(NodeListener::new(l, tls.clone())),
                    Err(code) => return code,
                },
                None => None,
            };
            let web_listener = match (&config.web.addr, controller) {
                (Some(addr), Some(_)) => match bind("the web API address", addr).await {
                    Ok(l) => Some(NodeListener::new(l, tls.clone())),
                    Err(code) => return code,
                },
                _ => None,
            };
            let listeners = role::worker::Listeners {
                worker: worker_listener,
                controller: controller_listener,
                web: web_listener,
            };
            role::worker::run(
                config.clone(),
                listeners,
                shutdown.clone(),
                disconnect,
                admin_tx,
            )
            .await
            .map_err(NodeError::from)
        }
    };
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "node stopped on an error");
            ExitCode::from(Exit::Software)
        }
    }
}

fn probe(check_type: &str, data: &str, config_path: Option<&std::path::Path>) -> ExitCode {
    use gobearmon::model::CheckStatus;
    use gobearmon::probe::{self, CheckSpec, ProbeContext};

    let dns_server = match config_path.map(config::load) {
        None => None,
        Some(Ok(c)) => c.dns.server,
        Some(Err(e)) => {
            eprintln!("{e}");
            return ExitCode::from(Exit::Usage);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gobearmon: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::CannotRun);
        }
    };
    if check_type == "push" {
        eprintln!("gobearmon: {}", probe::PUSH_NOT_PROBED);
        return ExitCode::from(Exit::Usage);
    }
    let spec = CheckSpec::parse(check_type, data);
    let ctx = ProbeContext::new(dns_server);
    match runtime.block_on(probe::run(&spec, &ctx)) {
        Ok(outcome) => {
            println!(
                "{}",
                serde_json::to_string(&outcome).unwrap_or_else(|e| format!(
                    r#"{{"status":"{}","message":"cannot print the outcome: {e}"}}"#,
                    outcome.status
                ))
            );
            match outcome.status {
                CheckStatus::Online => ExitCode::SUCCESS,
                CheckStatus::Offline => ExitCode::from(Exit::Failed),
            }
        }
        Err(e) => {
            println!(
                "{}",
                serde_json::json!({ "status": "fail", "message": e.to_string() })
            );
            ExitCode::from(Exit::CannotRun)
        }
    }
}

/// The config at `path` and its `[controller]` section, for a command that reads `what` from
/// the database; the exit code when there is none.
fn controller_config(
    path: &std::path::Path,
    what: &str,
) -> Result<(config::Config, config::ControllerConfig), ExitCode> {
    let config = config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(Exit::Config)
    })?;
    let Some(controller) = config.controller().cloned() else {
        eprintln!(
            "{}: no [controller] section, so no database to read {what} from",
            path.display()
        );
        return Err(ExitCode::from(Exit::Config));
    };
    Ok((config, controller))
}

/// `gobearmon ack CHECK [--comment TEXT] [--by NAME] --config FILE`.
fn ack(check: &str, comment: &str, by: Option<String>, path: &std::path::Path) -> ExitCode {
    use gobearmon::store::policy::Acked;
    let controller = match controller_config(path, "ack") {
        Ok((_, c)) => c,
        Err(code) => return code,
    };
    let by = by
        .or_else(|| std::env::var("USER").ok())
        .filter(|b| !b.trim().is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    let outcome = with_store(&controller, async |store| {
        let info = gobearmon::report::find_check(store, check)
            .await
            .map_err(|e| e.to_string())?;
        gobearmon::store::policy::ack(store, info.id, &by, comment)
            .await
            .map_err(|e| e.to_string())
    });
    match outcome {
        Ok(Acked::Recorded { event }) => {
            println!("acknowledged incident {event} of check {check} by {by}");
            ExitCode::SUCCESS
        }
        Ok(Acked::Already { event, by }) => {
            println!("incident {event} of check {check} was acknowledged already by {by}");
            ExitCode::SUCCESS
        }
        Ok(Acked::NoIncident) => {
            eprintln!("error: check {check} is not offline: no open incident to acknowledge");
            ExitCode::from(Exit::Failed)
        }
        Ok(Acked::NoCheck) => {
            eprintln!("error: no check {check}");
            ExitCode::from(Exit::Failed)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(Exit::Failed)
        }
    }
}

/// Reads a password: from the terminal without echo (twice), or the first line of stdin.
fn read_password() -> Result<String, String> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("reading the password from stdin: {e}"))?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let ask = |prompt: &str| -> Result<String, String> {
        eprint!("{prompt}");
        // SAFETY: tcgetattr/tcsetattr on stdin with a termios we own; echo is restored below.
        let mut old: libc::termios = unsafe { std::mem::zeroed() };
        let have = unsafe { libc::tcgetattr(0, &mut old) } == 0;
        if have {
            let mut quiet = old;
            quiet.c_lflag &= !libc::ECHO;
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &quiet) };
        }
        let mut line = String::new();
        let read = stdin.lock().read_line(&mut line);
        if have {
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &old) };
        }
        eprintln!();
        read.map_err(|e| format!("reading the password: {e}"))?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    };
    let first = ask("Password: ")?;
    if ask("Again: ")? != first {
        return Err("the two passwords differ".into());
    }
    Ok(first)
}

/// `gobearmon user add NAME --role ROLE --config FILE`.
fn user_add(name: &str, role: &str, path: &std::path::Path) -> ExitCode {
    use gobearmon::store::webusers::{Role, upsert_user};
    let Some(role) = Role::parse(role) else {
        eprintln!("gobearmon: --role: expected viewer or operator, found {role:?}");
        return ExitCode::from(Exit::Usage);
    };
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 {
        eprintln!("gobearmon: the user name must have 1 to 64 characters");
        return ExitCode::from(Exit::Usage);
    }
    let controller = match controller_config(path, "user") {
        Ok((_, c)) => c,
        Err(code) => return code,
    };
    let password = match read_password() {
        Ok(p) if p.chars().count() >= 8 => p,
        Ok(_) => {
            eprintln!("error: the password must have at least 8 characters");
            return ExitCode::from(Exit::Failed);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(Exit::Failed);
        }
    };
    let hash = match gobearmon::web::dash::auth::hash_password(&password) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(Exit::Failed);
        }
    };
    let outcome = with_store(&controller, async |store| {
        upsert_user(store, name, &hash, role)
            .await
            .map_err(|e| e.to_string())
    });
    match outcome {
        Ok(true) => {
            println!("added user {name} ({})", role.as_str());
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("updated user {name} ({})", role.as_str());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(Exit::Failed)
        }
    }
}

fn contact_test(id: i64, path: &std::path::Path) -> ExitCode {
    use gobearmon::{model::ContactId, notify};
    let (config, controller) = match controller_config(path, "contacts") {
        Ok(c) => c,
        Err(code) => return code,
    };
    let controller = &controller;
    if let Err(e) = smtp_ca(&config) {
        eprintln!("{}: {e}", path.display());
        return ExitCode::from(Exit::Config);
    }
    let outcome = with_store(controller, async |store| {
        let channels =
            notify::Channels::new(&config.smtp, &config.twilio, controller.delivery.timeout)
                .map_err(|e| e.to_string())?;
        notify::contact_test(store, &channels, ContactId(id))
            .await
            .map_err(|e| e.to_string())
    });
    match outcome {
        Ok(delivered) => {
            match delivered.charge {
                Some((kind, sid)) => println!("delivered ({kind} {sid})"),
                None => println!("delivered"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(Exit::Failed)
        }
    }
}

/// `gobearmon status --config FILE`: finds the controller through the viewserver group and
/// prints its status as tables, or as its JSON.
fn status(path: &std::path::Path, json: bool) -> ExitCode {
    use gobearmon::role::controller::status::StatusAnswer;
    use gobearmon::role::viewserver::{PATH_VIEW, ViewAnswer};
    use gobearmon::rpc::RpcClient;
    use gobearmon::rpc::sign::Signer;
    use std::sync::Arc;
    use std::time::Duration;

    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let members = match &config.role {
        config::Role::Worker { worker, .. } => worker.view_addr.clone(),
        config::Role::Viewserver(vs) => vs.peers.clone(),
    };
    let run = async {
        gobearmon::tlsutil::install_default_provider();
        let signer = match (&config.default.password, config.worker()) {
            (Some(secret), _) => Signer::cluster(secret, "status-cli"),
            (None, Some(w)) => config.signer(w.id.as_str()).map_err(|e| e.to_string())?,
            (None, None) => return Err("no cluster secret in the config".to_string()),
        };
        let client =
            RpcClient::new(Arc::new(signer), config.tls.as_ref()).map_err(|e| e.to_string())?;
        let mut errors = Vec::new();
        let mut controller = None;
        for m in &members {
            match client
                .get::<ViewAnswer>(m, PATH_VIEW, Duration::from_secs(3))
                .await
            {
                Ok(v) => {
                    controller = v.view.controller.map(|c| c.addr);
                    if controller.is_some() {
                        break;
                    }
                    errors.push(format!("{m}: the view names no controller"));
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        let Some(addr) = controller else {
            return Err(format!("no controller found: {}", errors.join("; ")));
        };
        client
            .get::<serde_json::Value>(&addr, "/status", Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())
    };
    let answer = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(run),
        Err(e) => Err(e.to_string()),
    };
    match answer {
        Ok(v) if json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
            );
            ExitCode::SUCCESS
        }
        Ok(v) => match serde_json::from_value::<StatusAnswer>(v) {
            Ok(answer) => {
                print!("{}", answer.text());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: the controller's answer is not a status ({e}); try --json");
                ExitCode::from(Exit::Failed)
            }
        },
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(Exit::Failed)
        }
    }
}

/// Runs `op` on a runtime of its own with the pools of `controller`'s database, and closes
/// them after: the shape of every command that reads or writes the database.
fn with_store<T>(
    controller: &config::ControllerConfig,
    op: impl AsyncFnOnce(&gobearmon::store::Store) -> Result<T, String>,
) -> Result<T, String> {
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let store =
            gobearmon::store::Store::new(&controller.database).map_err(|e| e.to_string())?;
        let outcome = op(&store).await;
        store.close().await;
        outcome
    })
}

enum Report {
    History(Option<String>),
    Uptime,
}

/// `history` and `uptime`: read the check's history from the config's database and print it.
fn report(path: &std::path::Path, check: &str, span: &str, json: bool, what: Report) -> ExitCode {
    use gobearmon::report;
    let controller = match controller_config(path, "history") {
        Ok((_, c)) => c,
        Err(code) => return code,
    };
    let Some(span) = config::parse_duration(span).filter(|d| !d.is_zero()) else {
        eprintln!("gobearmon: {span:?} is not a duration like \"24h\" or \"30d\"");
        return ExitCode::from(Exit::Usage);
    };
    let span = span.as_secs() as i64;
    let now = gobearmon::notify::unix_ms(std::time::SystemTime::now()) / 1000;
    let outcome = with_store(&controller, async |store| {
        let text = async {
            let info = report::find_check(store, check).await?;
            Ok::<_, report::ReportError>(match &what {
                Report::History(location) => {
                    let r = report::history(store, &info, span, location.as_deref(), now).await?;
                    if json {
                        serde_json::to_string_pretty(&r).unwrap_or_default()
                    } else {
                        r.text()
                    }
                }
                Report::Uptime => {
                    let r = report::uptime(store, &info, span, now).await?;
                    if json {
                        serde_json::to_string_pretty(&r).unwrap_or_default()
                    } else {
                        r.text()
                    }
                }
            })
        };
        text.await.map_err(|e| e.to_string())
    });
    match outcome {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(Exit::Failed)
        }
    }
}

/// `gobearmon push-url CHECK --config FILE`.
fn push_url(check: &str, path: &std::path::Path) -> ExitCode {
    let (config, controller) = match controller_config(path, "push checks") {
        Ok(c) => c,
        Err(code) => return code,
    };
    let base = match (&config.web.public_url, &config.web.addr) {
        (Some(url), _) => url.clone(),
        (None, Some(addr)) => format!("http://{}", public_addr(&addr.to_string())),
        (None, None) => {
            eprintln!(
                "{}: no [web] addr, so no node serves push URLs; set [web] addr (and public_url)",
                path.display()
            );
            return ExitCode::from(Exit::Config);
        }
    };
    let outcome = with_store(&controller, async |store| {
        gobearmon::report::push_url(store, check, &base)
            .await
            .map_err(|e| e.to_string())
    });
    match outcome {
        Ok(url) => {
            println!("{url}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(Exit::Failed)
        }
    }
}

/// `addr` as a job elsewhere reaches it: an unspecified address (`0.0.0.0`, `[::]`) becomes
/// this machine's host name.
fn public_addr(addr: &str) -> String {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".into());
            format!("{host}:{}", a.port())
        }
        _ => addr.to_string(),
    }
}

/// `gobearmon node-key ID --config FILE`.
fn node_key(id: &str, path: &std::path::Path) -> ExitCode {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(secret) = &config.default.password else {
        eprintln!(
            "{}: holds no cluster secret ([default] password); use the config of a viewserver member or a controller-capable worker",
            path.display()
        );
        return ExitCode::from(Exit::Config);
    };
    if !gobearmon::config::valid_node_id(id) {
        eprintln!("{id:?} is not a node id: 1 to 64 characters from A-Z a-z 0-9 . _ -");
        return ExitCode::from(Exit::Usage);
    }
    println!("{}", gobearmon::rpc::sign::node_key_hex(secret, id));
    ExitCode::SUCCESS
}

/// `gobearmon disconnect --config FILE`: a signed hand-over request to the worker of FILE.
fn disconnect(path: &std::path::Path) -> ExitCode {
    use gobearmon::role::worker::{Disconnecting, PATH_DISCONNECT};
    use gobearmon::rpc::RpcClient;
    use std::sync::Arc;
    use std::time::Duration;

    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(worker) = config.worker() else {
        eprintln!("{}: not a worker config", path.display());
        return ExitCode::from(Exit::Config);
    };
    // A worker listening on every interface is asked over loopback.
    let addr = match worker.addr {
        a if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
        a => a.to_string(),
    };
    let run = async {
        gobearmon::tlsutil::install_default_provider();
        let signer = config
            .signer(worker.id.as_str())
            .map_err(|e| e.to_string())?;
        let client =
            RpcClient::new(Arc::new(signer), config.tls.as_ref()).map_err(|e| e.to_string())?;
        client
            .post::<_, Disconnecting>(&addr, PATH_DISCONNECT, &(), Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())
    };
    let answer = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(run),
        Err(e) => Err(e.to_string()),
    };
    match answer {
        Ok(d) => {
            println!(
                "{} is handing over; back in {} s",
                d.node,
                d.pause_ms.div_ceil(1000)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(Exit::Failed)
        }
    }
}

/// Reads a config file for a command; on failure prints every problem and gives exit 64.
fn load_config(path: &std::path::Path) -> Result<config::Config, ExitCode> {
    config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(Exit::Config)
    })
}
