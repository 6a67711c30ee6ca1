//! `gobearmon probe TYPE 'JSON'`: one check run here and now, printed as one JSON line.
//!
//! Parameters that do not decode and unknown types are a check that is offline (exit 1), as
//! a worker reports such a row; an unusable command line (a missing argument, an unreadable
//! `--config`, a push check) is exit 2.

use std::path::Path;

use super::{Error, Exit, Threads, runtime};
use crate::config;
use crate::model::CheckStatus;
use crate::probe::{self, CheckSpec, ProbeContext};

/// Runs the check; the exit code says how it went (0 online, 1 offline, 3 not run here).
pub(super) fn probe(
    check_type: &str,
    data: &str,
    config_path: Option<&Path>,
) -> Result<Exit, Error> {
    let dns_server = match config_path.map(config::load) {
        None => None,
        Some(Ok(c)) => c.dns.server,
        Some(Err(e)) => return Err(Error::new(Exit::Usage, e.to_string())),
    };
    let runtime = runtime(Threads::One).map_err(|e| {
        Error::new(
            Exit::CannotRun,
            format!("gobearmon: cannot start the async runtime: {e}"),
        )
    })?;
    if check_type == "push" {
        return Err(Error::new(
            Exit::Usage,
            format!("gobearmon: {}", probe::PUSH_NOT_PROBED),
        ));
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
            Ok(match outcome.status {
                CheckStatus::Online => Exit::Ok,
                CheckStatus::Offline => Exit::Failed,
            })
        }
        Err(e) => {
            println!(
                "{}",
                serde_json::json!({ "status": "fail", "message": e.to_string() })
            );
            Ok(Exit::CannotRun)
        }
    }
}
