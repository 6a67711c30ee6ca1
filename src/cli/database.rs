//! Commands that read or write the `[controller] database` of a controller-capable worker's
//! config: `ack`, `user add`, `contact test`, `history`, `uptime` and `push-url`.

use std::path::Path;

use super::{Error, Exit, Threads, runtime};
use crate::config::{self, ControllerConfig};
use crate::store::Store;

/// The config at `path` and its `[controller]` section, for a command that reads `what` from
/// the database; exit 64 when there is none.
fn controller_config(path: &Path, what: &str) -> Result<(config::Config, ControllerConfig), Error> {
    let config = super::load_config(path)?;
    let Some(controller) = config.controller().cloned() else {
        return Err(Error::new(
            Exit::Config,
            format!(
                "{}: no [controller] section, so no database to read {what} from",
                path.display()
            ),
        ));
    };
    Ok((config, controller))
}

/// Runs `op` on a runtime of its own with the pools of `controller`'s database, and closes
/// them after: the shape of every command here. Any failure is exit 1, `error: ...`.
fn with_store<T>(
    controller: &ControllerConfig,
    op: impl AsyncFnOnce(&Store) -> Result<T, String>,
) -> Result<T, Error> {
    let rt = runtime(Threads::PerCore).map_err(Error::failed)?;
    rt.block_on(async {
        let store = Store::new(&controller.database).map_err(|e| e.to_string())?;
        let outcome = op(&store).await;
        store.close().await;
        outcome
    })
    .map_err(Error::failed)
}

/// `gobearmon ack CHECK [--event ID] [--comment TEXT] [--by NAME] --config FILE`.
pub(super) fn ack(
    check: &str,
    event: Option<i64>,
    comment: &str,
    by: Option<String>,
    path: &Path,
) -> Result<(), Error> {
    use crate::store::policy::Acked;
    let (_, controller) = controller_config(path, "ack")?;
    let by = by
        .or_else(|| std::env::var("USER").ok())
        .filter(|b| !b.trim().is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    let outcome = with_store(&controller, async |store| {
        let info = crate::report::find_check(store, check)
            .await
            .map_err(|e| e.to_string())?;
        crate::store::policy::ack(store, info.id, event, &by, comment)
            .await
            .map_err(|e| e.to_string())
    })?;
    match outcome {
        Acked::Recorded { event } => {
            println!("acknowledged incident {event} of check {check} by {by}");
            Ok(())
        }
        Acked::Already { event, by } => {
            println!("incident {event} of check {check} was acknowledged already by {by}");
            Ok(())
        }
        Acked::Stale { event, open } => {
            let how = open.map_or(String::new(), |o| {
                format!("to acknowledge it: gobearmon ack {check} --event {o}")
            });
            Err(Error::failed(crate::notify::text::stale_ack(
                check, event, open, &how,
            )))
        }
        Acked::NoIncident => Err(Error::failed(format!(
            "check {check} is not offline: no open incident to acknowledge"
        ))),
        Acked::NoCheck => Err(Error::failed(format!("no check {check}"))),
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
    let first = ask_quietly("Password: ")?;
    if ask_quietly("Again: ")? != first {
        return Err("the two passwords differ".into());
    }
    Ok(first)
}

/// Prints `prompt` and reads a line from the terminal with echo off.
fn ask_quietly(prompt: &str) -> Result<String, String> {
    use std::io::BufRead;
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
    let read = std::io::stdin().lock().read_line(&mut line);
    if have {
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &old) };
    }
    eprintln!();
    read.map_err(|e| format!("reading the password: {e}"))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// `gobearmon user add NAME --role ROLE --config FILE`.
pub(super) fn user_add(name: &str, role: &str, path: &Path) -> Result<(), Error> {
    use crate::store::webusers::{Role, upsert_user};
    let Some(role) = Role::parse(role) else {
        return Err(Error::new(
            Exit::Usage,
            format!("gobearmon: --role: expected viewer or operator, found {role:?}"),
        ));
    };
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 {
        return Err(Error::new(
            Exit::Usage,
            "gobearmon: the user name must have 1 to 64 characters",
        ));
    }
    let (_, controller) = controller_config(path, "user")?;
    let password = read_password().map_err(Error::failed)?;
    if password.chars().count() < 8 {
        return Err(Error::failed(
            "the password must have at least 8 characters",
        ));
    }
    let hash = crate::web::dash::auth::hash_password(&password).map_err(Error::failed)?;
    let added = with_store(&controller, async |store| {
        upsert_user(store, name, &hash, role)
            .await
            .map_err(|e| e.to_string())
    })?;
    let done = if added { "added" } else { "updated" };
    println!("{done} user {name} ({})", role.as_str());
    Ok(())
}

/// `gobearmon contact test ID --config FILE`.
pub(super) fn contact_test(id: i64, path: &Path) -> Result<(), Error> {
    use crate::{model::ContactId, notify};
    let (config, controller) = controller_config(path, "contacts")?;
    super::node::smtp_ca(&config)
        .map_err(|e| Error::new(Exit::Config, format!("{}: {e}", path.display())))?;
    let delivered = with_store(&controller, async |store| {
        let channels =
            notify::Channels::new(&config.smtp, &config.twilio, controller.delivery.timeout)
                .map_err(|e| e.to_string())?;
        notify::contact_test(store, &channels, ContactId(id))
            .await
            .map_err(|e| e.to_string())
    })?;
    match delivered.charge {
        Some((kind, sid)) => println!("delivered ({kind} {sid})"),
        None => println!("delivered"),
    }
    Ok(())
}

/// Which report `history`/`uptime` print.
pub(super) enum Report {
    /// `history`, of one location or all.
    History(Option<String>),
    Uptime,
}

/// `history` and `uptime`: read the check's history from the config's database and print it.
pub(super) fn report(
    path: &Path,
    check: &str,
    span: &str,
    json: bool,
    what: Report,
) -> Result<(), Error> {
    use crate::report;
    let (_, controller) = controller_config(path, "history")?;
    let Some(span) = config::parse_duration(span).filter(|d| !d.is_zero()) else {
        return Err(Error::new(
            Exit::Usage,
            format!("gobearmon: {span:?} is not a duration like \"24h\" or \"30d\""),
        ));
    };
    let span = span.as_secs() as i64;
    let now = crate::notify::unix_ms(std::time::SystemTime::now()) / 1000;
    let text = with_store(&controller, async |store| {
        let text = async {
            let info = report::find_check(store, check).await?;
            Ok::<_, report::ReportError>(match &what {
                Report::History(location) => {
                    let r = report::history(store, &info, span, location.as_deref(), now).await?;
                    render(&r, json, |r| r.text())
                }
                Report::Uptime => {
                    let r = report::uptime(store, &info, span, now).await?;
                    render(&r, json, |r| r.text())
                }
            })
        };
        text.await.map_err(|e| e.to_string())
    })?;
    println!("{}", text.trim_end());
    Ok(())
}

/// A report as JSON (`--json`) or as its text.
fn render<R: serde::Serialize>(report: &R, json: bool, text: impl FnOnce(&R) -> String) -> String {
    if json {
        serde_json::to_string_pretty(report).unwrap_or_default()
    } else {
        text(report)
    }
}

/// `gobearmon push-url CHECK --config FILE`.
pub(super) fn push_url(check: &str, path: &Path) -> Result<(), Error> {
    let (config, controller) = controller_config(path, "push checks")?;
    let base = match (&config.web.public_url, &config.web.addr) {
        (Some(url), _) => url.clone(),
        (None, Some(addr)) => format!("http://{}", public_addr(*addr)),
        (None, None) => {
            return Err(Error::new(
                Exit::Config,
                format!(
                    "{}: no [web] addr, so no node serves push URLs; set [web] addr (and public_url)",
                    path.display()
                ),
            ));
        }
    };
    let url = with_store(&controller, async |store| {
        crate::report::push_url(store, check, &base)
            .await
            .map_err(|e| e.to_string())
    })?;
    println!("{url}");
    Ok(())
}

/// `addr` as a job elsewhere reaches it: an unspecified address (`0.0.0.0`, `[::]`) becomes
/// this machine's host name.
fn public_addr(addr: std::net::SocketAddr) -> String {
    match addr {
        a if a.ip().is_unspecified() => {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".into());
            format!("{host}:{}", a.port())
        }
        a => a.to_string(),
    }
}
