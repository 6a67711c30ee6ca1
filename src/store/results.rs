//! The latest result of each check from each worker (`check_results`), written in batches.

use mysql_async::prelude::Queryable;

use super::{Store, StoreError};
use crate::model::{CheckId, Epoch, NodeId};

/// Characters of a message kept in `check_results.message` (a `VARCHAR(1024)`).
const MESSAGE_CHARS: usize = 1024;

/// Rows per statement.
const ROWS_PER_STATEMENT: usize = 500;

/// One worker's latest result of one check.
#[derive(Debug, Clone)]
pub struct LatestResult {
    pub check: CheckId,
    pub node: NodeId,
    /// The worker's location, or its node id when it has none.
    pub location: String,
    /// `online`, `offline` or `fail`.
    pub status: &'static str,
    pub message: String,
    pub duration_ms: u64,
    /// http: the final response's status code.
    pub http_status: Option<u16>,
    /// ssl_expire and https: the earliest certificate expiry, Unix seconds.
    pub cert_expiry: Option<i64>,
    /// http: the phases, as [`timing_column`] writes them.
    pub timing: Option<String>,
}

/// What a run's details give `check_results` beyond its status: the http status code, the
/// certificate expiry and the http phases.
pub fn probe_columns(
    details: &crate::probe::Details,
) -> (Option<u16>, Option<i64>, Option<String>) {
    let expiry = details.not_after.as_deref().and_then(|t| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(|t| t.unix_timestamp())
    });
    (
        details.http_status,
        expiry,
        details.timing.as_ref().map(timing_column),
    )
}

/// `check_results.timing`: `dns,connect,tls,first_byte,total` in milliseconds since the run
/// started, one decimal. A value a worker got wrong (negative, not finite, over a day) is
/// written as 0 or a day, so the row always fits its column.
pub fn timing_column(t: &crate::probe::Timing) -> String {
    let ms = |v: f64| {
        if v.is_finite() {
            v.clamp(0.0, 86_400_000.0)
        } else {
            0.0
        }
    };
    format!(
        "{:.1},{:.1},{:.1},{:.1},{:.1}",
        ms(t.dns_ms),
        ms(t.connect_ms),
        ms(t.tls_ms),
        ms(t.first_byte_ms),
        ms(t.total_ms)
    )
}

/// The phases of a `check_results.timing` value, `None` when it is not five numbers.
pub fn parse_timing(s: &str) -> Option<[f64; 5]> {
    let mut out = [0.0; 5];
    let mut parts = s.split(',');
    for slot in &mut out {
        *slot = parts.next()?.trim().parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Writes (inserts or replaces) the latest results, tagged with the writer's epoch.
pub async fn write_latest(
    store: &Store,
    epoch: Epoch,
    batch: &[LatestResult],
) -> Result<(), StoreError> {
    store
        .bounded("writing the latest results", write(store, epoch, batch))
        .await
}

async fn write(store: &Store, epoch: Epoch, batch: &[LatestResult]) -> Result<(), StoreError> {
    let mut conn = store.conn().await?;
    for chunk in batch.chunks(ROWS_PER_STATEMENT) {
        let mut sql = String::from(
            "INSERT INTO check_results (check_id, node_id, location, status, message, duration_ms, epoch, \
             http_status, cert_expiry, timing) VALUES ",
        );
        let mut params: Vec<mysql_async::Value> = Vec::with_capacity(chunk.len() * 10);
        for (i, r) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
            let message: String = r.message.chars().take(MESSAGE_CHARS).collect();
            params.extend([
                r.check.0.into(),
                r.node.0.clone().into(),
                r.location.chars().take(64).collect::<String>().into(),
                r.status.into(),
                message.into(),
                r.duration_ms.min(i32::MAX as u64).into(),
                epoch.0.into(),
                r.http_status.into(),
                r.cert_expiry.into(),
                r.timing.clone().into(),
            ]);
        }
        sql.push_str(
            " ON DUPLICATE KEY UPDATE location = VALUES(location), status = VALUES(status), message = VALUES(message), \
             duration_ms = VALUES(duration_ms), epoch = VALUES(epoch), http_status = VALUES(http_status), \
             cert_expiry = VALUES(cert_expiry), timing = VALUES(timing), updated_at = CURRENT_TIMESTAMP(3)",
        );
        conn.exec_drop(sql, mysql_async::Params::Positional(params))
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{Details, Timing};

    #[test]
    fn details_give_the_status_code_the_expiry_and_the_phases() {
        let details = Details {
            http_status: Some(204),
            not_after: Some("2030-03-17T12:00:00Z".into()),
            timing: Some(Timing {
                dns_ms: 1.26,
                connect_ms: 2.0,
                tls_ms: 5.5,
                first_byte_ms: 9.0,
                total_ms: f64::NAN,
            }),
            ..Details::default()
        };
        let (code, expiry, timing) = probe_columns(&details);
        assert_eq!(code, Some(204));
        assert_eq!(expiry, Some(1_899_979_200));
        let timing = timing.unwrap();
        assert_eq!(timing, "1.3,2.0,5.5,9.0,0.0");
        assert_eq!(parse_timing(&timing), Some([1.3, 2.0, 5.5, 9.0, 0.0]));
        assert_eq!(parse_timing("1,2,3"), None);
        assert_eq!(parse_timing("1,2,3,4,5,6"), None);
        assert_eq!(parse_timing("1,2,x,4,5"), None);
        assert_eq!(probe_columns(&Details::default()), (None, None, None));
    }
}
