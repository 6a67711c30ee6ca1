//! Commands that talk to other nodes, or speak for them: `status` (the controller found
//! through the viewserver group), `disconnect` (a worker's hand-over) and `node-key`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{Error, Exit, Threads, load_config, runtime};
use crate::config::{self, Config};
use crate::role::controller::status::StatusAnswer;
use crate::role::viewserver::{PATH_VIEW, ViewAnswer};
use crate::role::worker::{Disconnecting, PATH_DISCONNECT};
use crate::rpc::RpcClient;
use crate::rpc::sign::Signer;

/// `gobearmon status --config FILE`: finds the controller through the viewserver group and
/// prints its status as tables, or as its JSON.
pub(super) fn status(path: &Path, json: bool) -> Result<(), Error> {
    let config = load_config(path)?;
    let rt = runtime(Threads::PerCore).map_err(Error::failed)?;
    let answer = rt
        .block_on(controller_status(&config))
        .map_err(Error::failed)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&answer).unwrap_or_else(|_| answer.to_string())
        );
        return Ok(());
    }
    let answer = serde_json::from_value::<StatusAnswer>(answer).map_err(|e| {
        Error::failed(format!(
            "the controller's answer is not a status ({e}); try --json"
        ))
    })?;
    print!("{}", answer.text());
    Ok(())
}

/// The controller's `/status` answer, as it sent it (`--json` prints it unchanged).
async fn controller_status(config: &Config) -> Result<serde_json::Value, String> {
    crate::tlsutil::install_default_provider();
    let signer = match (&config.default.password, config.worker()) {
        (Some(secret), _) => Signer::cluster(secret, "status-cli"),
        (None, Some(w)) => config.signer(w.id.as_str()).map_err(|e| e.to_string())?,
        (None, None) => return Err("no cluster secret in the config".to_string()),
    };
    let client =
        RpcClient::new(Arc::new(signer), config.tls.as_ref()).map_err(|e| e.to_string())?;
    let addr = find_controller(config, &client).await?;
    client
        .get::<serde_json::Value>(&addr, "/status", Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())
}

/// The controller's address, from the first viewserver member whose view names one.
async fn find_controller(config: &Config, client: &RpcClient) -> Result<String, String> {
    let members = match &config.role {
        config::Role::Worker { worker, .. } => &worker.view_addr,
        config::Role::Viewserver(vs) => &vs.peers,
    };
    let mut errors = Vec::new();
    for m in members {
        match client
            .get::<ViewAnswer>(m, PATH_VIEW, Duration::from_secs(3))
            .await
        {
            Ok(answer) => match answer.view.controller {
                Some(controller) => return Ok(controller.addr),
                None => errors.push(format!("{m}: the view names no controller")),
            },
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err(format!("no controller found: {}", errors.join("; ")))
}

/// `gobearmon node-key ID --config FILE`.
pub(super) fn node_key(id: &str, path: &Path) -> Result<(), Error> {
    let config = load_config(path)?;
    let Some(secret) = &config.default.password else {
        return Err(Error::new(
            Exit::Config,
            format!(
                "{}: holds no cluster secret ([default] password); use the config of a viewserver member or a controller-capable worker",
                path.display()
            ),
        ));
    };
    if !config::valid_node_id(id) {
        return Err(Error::new(
            Exit::Usage,
            format!("{id:?} is not a node id: 1 to 64 characters from A-Z a-z 0-9 . _ -"),
        ));
    }
    println!("{}", crate::rpc::sign::node_key_hex(secret, id));
    Ok(())
}

/// `gobearmon disconnect --config FILE`: a signed hand-over request to the worker of FILE.
pub(super) fn disconnect(path: &Path) -> Result<(), Error> {
    let config = load_config(path)?;
    let Some(worker) = config.worker() else {
        return Err(Error::new(
            Exit::Config,
            format!("{}: not a worker config", path.display()),
        ));
    };
    // A worker listening on every interface is asked over loopback.
    let addr = match worker.addr {
        a if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
        a => a.to_string(),
    };
    let ask = async {
        crate::tlsutil::install_default_provider();
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
    let rt = runtime(Threads::PerCore).map_err(Error::failed)?;
    let d = rt.block_on(ask).map_err(Error::failed)?;
    println!(
        "{} is handing over; back in {} s",
        d.node,
        d.pause_ms.div_ceil(1000)
    );
    Ok(())
}
