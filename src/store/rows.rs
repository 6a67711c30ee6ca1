//! Decoding the operator's rows. Operators write these tables by hand, so decoding is
//! lenient: a NULL or unknown status is read as online, a bad `data` or `type` is kept (its
//! runs report the problem as gobearmon does), and only a row that cannot be used at all is
//! skipped. Every oddity becomes a [`RowProblem`] that is logged and shown in status.

use mysql_async::{Row, Value};
use serde::Serialize;

use crate::model::{
    AlertId, AlertKind, AlertRow, CheckId, CheckRow, CheckStatus, ContactId, ContactKind,
    ContactRow,
};

/// The check types this version runs.
pub const CHECK_TYPES: &[&str] = &["http", "tcp", "icmp", "ssl_expire", "dns", "push"];

/// The columns read from `checks`, in the order [`check_from_row`] expects.
pub const CHECK_COLUMNS: &str =
    "id, name, type, data, check_interval, delay, status, confirmations";
/// The columns read from `contacts`, in the order [`contact_from_row`] expects.
pub const CONTACT_COLUMNS: &str = "id, type, data";
/// The columns read from `alerts`, in the order [`alert_from_row`] expects.
pub const ALERT_COLUMNS: &str = "id, check_id, contact_id, type";

/// Something odd about one row, reported rather than fatal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowProblem {
    pub table: &'static str,
    pub id: i64,
    pub message: String,
    /// False when the row was skipped; true when it is used despite the problem.
    pub kept: bool,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::NULL => None,
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        other => Some(other.as_sql(true)),
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::UInt(u) => i64::try_from(*u).ok(),
        Value::Bytes(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
        _ => None,
    }
}

fn column(row: &Row, i: usize) -> Value {
    row.as_ref(i).cloned().unwrap_or(Value::NULL)
}

/// Decodes a `checks` row selected with [`CHECK_COLUMNS`]. `Err` only when the id itself is
/// unusable.
pub fn check_from_row(row: &Row) -> Result<(CheckRow, Vec<RowProblem>), RowProblem> {
    let id = int(&column(row, 0)).ok_or_else(|| RowProblem {
        table: "checks",
        id: -1,
        message: "row without a usable id".into(),
        kept: false,
    })?;
    let mut problems = Vec::new();
    let mut note = |message: String| {
        problems.push(RowProblem {
            table: "checks",
            id,
            message,
            kept: true,
        })
    };
    let name = text(&column(row, 1)).unwrap_or_default();
    let check_type = text(&column(row, 2)).unwrap_or_default();
    let data = text(&column(row, 3)).unwrap_or_default();
    let interval_secs = int(&column(row, 4)).unwrap_or(60);
    let delay = int(&column(row, 5)).unwrap_or(1);
    if check_type == "push"
        && let Err(e) = crate::probe::PushSpec::parse(&data)
    {
        // A push check with a bad token cannot be pushed to, and one with a bad grace cannot
        // be judged: skipped (and shown) until the row is fixed.
        return Err(RowProblem {
            table: "checks",
            id,
            message: format!("push check data: {e}; the check is skipped until it is fixed"),
            kept: false,
        });
    }
    let status_raw = text(&column(row, 6));
    let status = status_raw.as_deref().and_then(CheckStatus::parse);
    if status.is_none() {
        note(match &status_raw {
            None => "status is NULL; read as online".to_string(),
            Some(s) => format!("status {s:?} is not online or offline; read as online"),
        });
    }
    let confirmations = match int(&column(row, 7)) {
        None => None,
        Some(n) if (1..=100).contains(&n) => Some(n as u32),
        Some(n) => {
            note(format!(
                "confirmations {n} is outside 1..=100; the global value is used"
            ));
            None
        }
    };
    if !CHECK_TYPES.contains(&check_type.as_str()) {
        note(format!(
            "unknown check type {check_type:?}: its runs report `invalid check type: {check_type}`"
        ));
    } else if let Err(e) = serde_json::from_str::<serde_json::Value>(&data) {
        note(format!(
            "data is not valid JSON ({e}): its runs report `failed to decode check parameters`"
        ));
    }
    if interval_secs <= 0 {
        note(format!(
            "check_interval {interval_secs} is not positive; the check runs back to back"
        ));
    }
    Ok((
        CheckRow {
            id: CheckId(id),
            name,
            check_type,
            data,
            interval_secs,
            delay,
            status: status.unwrap_or(CheckStatus::Online),
            status_was_valid: status.is_some(),
            confirmations,
        },
        problems,
    ))
}

/// Decodes a `contacts` row selected with [`CONTACT_COLUMNS`].
pub fn contact_from_row(row: &Row) -> Result<(ContactRow, Vec<RowProblem>), RowProblem> {
    let id = int(&column(row, 0)).ok_or_else(|| RowProblem {
        table: "contacts",
        id: -1,
        message: "row without a usable id".into(),
        kept: false,
    })?;
    let kind = ContactKind::parse(&text(&column(row, 1)).unwrap_or_default());
    let data = text(&column(row, 2)).unwrap_or_default();
    let mut problems = Vec::new();
    if let ContactKind::Unknown(t) = &kind {
        problems.push(RowProblem {
            table: "contacts",
            id,
            message: format!(
                "unknown contact type {t:?}: deliveries fail with `alert type {t} does not exist`"
            ),
            kept: true,
        });
    }
    Ok((
        ContactRow {
            id: ContactId(id),
            kind,
            data,
        },
        problems,
    ))
}

/// Decodes an `alerts` row selected with [`ALERT_COLUMNS`].
pub fn alert_from_row(row: &Row) -> Result<(AlertRow, Vec<RowProblem>), RowProblem> {
    let id = int(&column(row, 0));
    let check_id = int(&column(row, 1));
    let contact_id = int(&column(row, 2));
    let (Some(id), Some(check_id), Some(contact_id)) = (id, check_id, contact_id) else {
        return Err(RowProblem {
            table: "alerts",
            id: id.unwrap_or(-1),
            message: "alert without a usable id, check_id or contact_id".into(),
            kept: false,
        });
    };
    let raw = text(&column(row, 3));
    let kind = raw.as_deref().and_then(AlertKind::parse);
    let mut problems = Vec::new();
    if kind.is_none() {
        problems.push(RowProblem {
            table: "alerts",
            id,
            message: format!(
                "alert type {} matches no flip",
                raw.map_or("NULL".to_string(), |r| format!("{r:?}"))
            ),
            kept: true,
        });
    }
    Ok((
        AlertRow {
            id: AlertId(id),
            check_id: CheckId(check_id),
            contact_id: ContactId(contact_id),
            kind,
        },
        problems,
    ))
}
