//! `gobearmon run` and `gobearmon check-config`: a node's config checked, its dependencies
//! built in one place ([`NodeDeps`]), its listeners bound, its role run until a signal.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Error, Exit, Threads, load_config, runtime};
use crate::api::NodeListener;
use crate::config::{self, Config};
use crate::notify::admin::Admin;
use crate::role;

/// What every listener of a node serves: HTTPS with this config, or plain HTTP without
/// `[tls]`.
type ServerTls = Option<Arc<rustls::ServerConfig>>;

/// `gobearmon check-config CONFIG`.
pub(super) fn check_config(path: &Path) -> Result<(), Error> {
    let config = load_config(path)?;
    preflight(&config).map_err(|e| Error::new(Exit::Config, format!("{}: {e}", path.display())))?;
    let role = match &config.role {
        config::Role::Worker {
            controller: Some(_),
            ..
        } => "worker (controller-capable)",
        config::Role::Worker { .. } => "worker (probe-only)",
        config::Role::Viewserver(_) => "viewserver",
    };
    println!("{}: ok, {role} node", path.display());
    Ok(())
}

/// `gobearmon run CONFIG` (and `gobearmon CONFIG`).
pub(super) fn run(path: &Path) -> Result<(), Error> {
    let config = load_config(path)?;
    let tls = preflight(&config)
        .map_err(|e| Error::new(Exit::Config, format!("{}: {e}", path.display())))?;
    init_tracing(config.default.debug);
    raise_open_file_limit();
    let runtime = runtime(Threads::PerCore).map_err(|e| {
        Error::new(
            Exit::Software,
            format!("gobearmon: cannot start the async runtime: {e}"),
        )
    })?;
    runtime.block_on(run_node(config, tls))
}

/// Raises the soft limit on open files to the hard limit: each listener holds up to
/// `[listen] max_connections` unauthenticated connections (4,096 by default) besides the
/// nodes' own, more than the usual soft limit of 1024 leaves room for. When descriptors run
/// out anyway, a listener sheds an unauthenticated connection to accept the next.
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
/// node with an unusable one stops at start naming it. Returns what the listeners serve.
fn preflight(config: &Config) -> Result<ServerTls, String> {
    crate::tlsutil::install_default_provider();
    smtp_ca(config)?;
    let Some(tls) = &config.tls else {
        return Ok(None);
    };
    let node = crate::tlsutil::NodeTls::load(tls).map_err(|e| e.to_string())?;
    node.server_config().map(Some).map_err(|e| e.to_string())
}

/// Checks that `[smtp] ca`, when set, holds a certificate.
pub(super) fn smtp_ca(config: &Config) -> Result<(), String> {
    match (&config.smtp.ca, &config.smtp.host) {
        (Some(ca), Some(_)) => crate::tlsutil::read_certs("[smtp] ca", ca)
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

/// Why a node stopped on an error: its role's error, logged as it is.
#[derive(Debug, thiserror::Error)]
enum NodeError {
    #[error(transparent)]
    Worker(#[from] role::worker::WorkerError),
    #[error(transparent)]
    Viewserver(#[from] role::viewserver::ViewserverError),
}

/// What a node's roles are given, built in this one place: the listeners' TLS, the one
/// admin notifier, the shutdown token and the hand-over signal. (The database pools and the
/// delivery channels of a controller-capable worker are its [`role::controller::ControllerHost`]'s.)
struct NodeDeps {
    tls: ServerTls,
    /// What every listener admits.
    listen: config::ListenConfig,
    admin: Admin,
    /// Cancelled by `SIGTERM` or `SIGINT`: drain and stop.
    shutdown: CancellationToken,
    /// Notified by `SIGUSR1`: a worker hands over.
    disconnect: Arc<Notify>,
}

impl NodeDeps {
    /// Builds the dependencies and installs the signal handlers; on the node's runtime.
    fn build(config: &Config, tls: ServerTls) -> Result<NodeDeps, Error> {
        crate::tlsutil::install_default_provider();
        let admin = Admin::start(&config.smtp, admin_interval(config));
        let deps = NodeDeps {
            tls,
            listen: config.listen,
            admin,
            shutdown: CancellationToken::new(),
            disconnect: Arc::new(Notify::new()),
        };
        deps.handle_signals()?;
        Ok(deps)
    }

    /// SIGTERM and SIGINT cancel [`NodeDeps::shutdown`]; SIGUSR1 notifies
    /// [`NodeDeps::disconnect`].
    fn handle_signals(&self) -> Result<(), Error> {
        let (Ok(mut term), Ok(mut int), Ok(mut usr1)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::user_defined1()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return Err(Error::logged(Exit::Software));
        };
        let stop = self.shutdown.clone();
        let usr1_notify = self.disconnect.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => { tracing::info!("SIGTERM: draining"); stop.cancel(); }
                    _ = int.recv() => { tracing::info!("SIGINT: draining"); stop.cancel(); }
                    _ = usr1.recv() => { tracing::info!("SIGUSR1: hand-over"); usr1_notify.notify_one(); }
                }
            }
        });
        Ok(())
    }

    /// Binds `addr`, served with the node's TLS and admitting by `[listen]`; exit 64 when it
    /// cannot be bound.
    async fn listen(&self, what: &str, addr: &SocketAddr) -> Result<NodeListener, Error> {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => Ok(NodeListener::new(l, self.tls.clone())
                .with_limits(self.listen)
                .reporting(what, self.admin.notices.clone())),
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot listen on {what}");
                Err(Error::logged(Exit::Config))
            }
        }
    }
}

/// How often one kind of admin notice may be mailed.
fn admin_interval(config: &Config) -> std::time::Duration {
    config
        .controller()
        .map_or(config::ControllerKeys::default().admin_interval, |c| {
            c.delivery.admin_interval
        })
}

/// Runs the node's role until it stops: exit 0 after a drain, 70 on the role's error.
async fn run_node(config: Config, tls: ServerTls) -> Result<(), Error> {
    let deps = NodeDeps::build(&config, tls)?;
    let result = match &config.role {
        config::Role::Viewserver(vs) => {
            let listener = deps.listen("the viewserver address", &vs.addr).await?;
            role::viewserver::run(
                config.clone(),
                listener,
                deps.shutdown.clone(),
                deps.admin.notices.clone(),
            )
            .await
            .map_err(NodeError::from)
        }
        config::Role::Worker { worker, controller } => {
            if let Some(c) = controller {
                one_store(&c.database).await?;
            }
            let listeners = worker_listeners(&config, worker, controller.as_ref(), &deps).await?;
            role::worker::run(
                config.clone(),
                listeners,
                deps.shutdown.clone(),
                deps.disconnect.clone(),
                deps.admin.clone(),
            )
            .await
            .map_err(NodeError::from)
        }
    };
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "node stopped on an error");
            Err(Error::logged(Exit::Software))
        }
    }
}

/// Refuses to start (exit 64) when `[controller] database` lists nodes of two clusters, or a
/// plain server beside Galera nodes: writing through both would split the store.
async fn one_store(urls: &[config::Secret]) -> Result<(), Error> {
    if urls.len() < 2 {
        return Ok(());
    }
    let store =
        crate::store::Store::new(urls).map_err(|e| Error::new(Exit::Config, e.to_string()))?;
    let verified = store.verify_nodes().await;
    store.close().await;
    verified.map_err(|e| {
        tracing::error!(error = %e, "refusing to start");
        Error::logged(Exit::Config)
    })
}

/// A worker's listeners: its own, and a controller-capable worker's controller and web API.
async fn worker_listeners(
    config: &Config,
    worker: &config::WorkerConfig,
    controller: Option<&config::ControllerConfig>,
    deps: &NodeDeps,
) -> Result<role::worker::Listeners, Error> {
    let own = deps.listen("the worker address", &worker.addr).await?;
    let controller_listener = match controller {
        Some(c) => Some(deps.listen("the controller address", &c.addr).await?),
        None => None,
    };
    let web = match (&config.web.addr, controller) {
        (Some(addr), Some(_)) => Some(deps.listen("the web API address", addr).await?),
        _ => None,
    };
    Ok(role::worker::Listeners {
        worker: own,
        controller: controller_listener,
        web,
    })
}
