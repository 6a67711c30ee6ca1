//! The controller's in-memory copy of `checks` (enabled ones), `contacts` and `alerts`
//! (enabled ones), kept current cheaply.
//!
//! A full load reads the three tables once. After that, [`Catalog::refresh`] reads only the
//! change log (`config_changes`, filled by install.sql's triggers) and re-reads just the rows
//! it names. Two safety nets cover what a change log can miss: entries are re-read for a short
//! overlap window (a transaction that commits after a later one), and a full load runs every
//! `full_every` anyway (a change made with triggers disabled, or an old schema).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use mysql_async::Row;
use mysql_async::prelude::Queryable;

use super::rows::{
    self, ALERT_COLUMNS, CHECK_COLUMNS, CONTACT_COLUMNS, RowProblem, alert_from_row,
    check_from_row, contact_from_row,
};
use super::{Store, StoreError};
use crate::model::{AlertId, AlertRow, CheckId, CheckRow, CheckStatus, ContactId, ContactRow};
use crate::probe::CheckSpec;

/// Change-log entries younger than this are read again on every refresh, so an entry whose
/// transaction committed after a later entry's is not missed.
const OVERLAP_SECS: u32 = 30;
/// Ids per `IN (...)` list.
const CHUNK: usize = 500;
/// Change-log entries older than this are deleted at full reloads.
const CHANGE_LOG_RETENTION_HOURS: u32 = 24;

/// What a load or refresh changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Checks added or changed in any column (the controller re-parses these).
    pub checks_upserted: Vec<CheckId>,
    /// Checks deleted or disabled.
    pub checks_removed: Vec<CheckId>,
    /// Contacts added, changed or deleted.
    pub contacts_changed: usize,
    /// Alerts added, changed, disabled or deleted.
    pub alerts_changed: usize,
    /// Whether this was a full load.
    pub full: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.checks_upserted.is_empty()
            && self.checks_removed.is_empty()
            && self.contacts_changed == 0
            && self.alerts_changed == 0
    }
}

/// A check as the catalog holds it: the row, and its definition parsed once when the row was
/// loaded or changed.
#[derive(Debug)]
pub struct LoadedCheck {
    pub row: CheckRow,
    pub spec: CheckSpec,
}

/// The operator's rows as the controller sees them.
#[derive(Debug)]
pub struct Catalog {
    checks: HashMap<CheckId, LoadedCheck>,
    contacts: HashMap<ContactId, ContactRow>,
    alerts: HashMap<AlertId, AlertRow>,
    /// (check, alert) pairs, to find a check's alerts without a scan.
    alerts_by_check: BTreeSet<(CheckId, AlertId)>,
    /// Problems of the rows currently loaded, by (table, id).
    problems: BTreeMap<(&'static str, i64), Vec<RowProblem>>,
    /// The highest change-log entry applied.
    cursor: i64,
    last_full: Instant,
    full_every: Duration,
}

/// What the next refresh reads: decided with the catalog in hand, read without it, so the
/// controller's users of the catalog never wait for the database.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    cursor: i64,
    full: bool,
}

/// A row decoded as it streamed in (the raw result set is never held whole).
type Decoded<T> = Result<(T, Vec<RowProblem>), RowProblem>;

/// Rows of one table read for a refresh.
#[derive(Debug, Default)]
struct Read<T> {
    /// The ids looked up (`None` on a full load: every id loaded when it is applied); the
    /// asked ids with no row are gone.
    asked: Option<BTreeSet<i64>>,
    rows: Vec<Decoded<T>>,
}

/// Rows read by [`Catalog::fetch`], applied by [`Catalog::apply`].
#[derive(Debug)]
pub struct Fetched {
    full: bool,
    cursor: i64,
    checks: Read<CheckRow>,
    contacts: Read<ContactRow>,
    alerts: Read<AlertRow>,
}

impl Catalog {
    /// Loads every enabled check, every contact and every enabled alert.
    pub async fn load(store: &Store, full_every: Duration) -> Result<Catalog, StoreError> {
        let mut catalog = Catalog {
            checks: HashMap::new(),
            contacts: HashMap::new(),
            alerts: HashMap::new(),
            alerts_by_check: BTreeSet::new(),
            problems: BTreeMap::new(),
            cursor: 0,
            last_full: Instant::now(),
            full_every,
        };
        catalog.full_reload(store).await?;
        Ok(catalog)
    }

    /// Brings the catalog up to date: incremental from the change log, or a full load when
    /// `full_every` has passed. (The controller does the same in three steps, [`plan`],
    /// [`fetch`] and [`apply`], holding the catalog only for the first and the last.)
    ///
    /// [`plan`]: Catalog::plan
    /// [`fetch`]: Catalog::fetch
    /// [`apply`]: Catalog::apply
    pub async fn refresh(&mut self, store: &Store) -> Result<Changes, StoreError> {
        let fetched = Catalog::fetch(store, self.plan()).await?;
        Ok(self.apply(fetched))
    }

    /// Re-reads the three tables and reports what differs from memory.
    pub async fn full_reload(&mut self, store: &Store) -> Result<Changes, StoreError> {
        let plan = Plan {
            cursor: self.cursor,
            full: true,
        };
        let fetched = Catalog::fetch(store, plan).await?;
        Ok(self.apply(fetched))
    }

    /// What the next refresh reads.
    pub fn plan(&self) -> Plan {
        Plan {
            cursor: self.cursor,
            full: self.last_full.elapsed() >= self.full_every,
        }
    }

    /// Reads what `plan` names: the whole tables, or the change log and the rows it names.
    pub async fn fetch(store: &Store, plan: Plan) -> Result<Fetched, StoreError> {
        if plan.full {
            return Catalog::fetch_full(store).await;
        }
        let mut conn = store.conn().await?;
        let entries: Vec<(i64, String, i64)> = conn
            .exec(
                format!(
                    "SELECT seq, table_name, row_id FROM config_changes \
                     WHERE seq > ? OR changed_at >= NOW(3) - INTERVAL {OVERLAP_SECS} SECOND"
                ),
                (plan.cursor,),
            )
            .await?;
        let mut checks = BTreeSet::new();
        let mut contacts = BTreeSet::new();
        let mut alerts = BTreeSet::new();
        let mut cursor = plan.cursor;
        for (seq, table, id) in entries {
            cursor = cursor.max(seq);
            match table.as_str() {
                "checks" => checks.insert(id),
                "contacts" => contacts.insert(id),
                "alerts" => alerts.insert(id),
                _ => false,
            };
        }
        let checks = read_ids(
            &mut conn,
            CHECK_COLUMNS,
            "checks",
            " AND enabled = 1",
            checks,
            check_from_row,
        )
        .await?;
        let contacts = read_ids(
            &mut conn,
            CONTACT_COLUMNS,
            "contacts",
            "",
            contacts,
            contact_from_row,
        )
        .await?;
        let alerts = read_ids(
            &mut conn,
            ALERT_COLUMNS,
            "alerts",
            " AND enabled = 1",
            alerts,
            alert_from_row,
        )
        .await?;
        Ok(Fetched {
            full: false,
            cursor,
            checks,
            contacts,
            alerts,
        })
    }

    async fn fetch_full(store: &Store) -> Result<Fetched, StoreError> {
        let mut conn = store.conn().await?;
        // The cursor is read first: anything changed while the tables are read is read again
        // by the next refresh.
        let cursor: Option<i64> = conn
            .query_first("SELECT COALESCE(MAX(seq), 0) FROM config_changes")
            .await?;
        let checks = read_all(
            &mut conn,
            format!("SELECT {CHECK_COLUMNS} FROM checks WHERE enabled = 1"),
            check_from_row,
        )
        .await?;
        let contacts = read_all(
            &mut conn,
            format!("SELECT {CONTACT_COLUMNS} FROM contacts"),
            contact_from_row,
        )
        .await?;
        let alerts = read_all(
            &mut conn,
            format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE enabled = 1"),
            alert_from_row,
        )
        .await?;
        conn.query_drop(format!(
            "DELETE FROM config_changes WHERE changed_at < NOW() - INTERVAL {CHANGE_LOG_RETENTION_HOURS} HOUR"
        ))
        .await?;
        Ok(Fetched {
            full: true,
            cursor: cursor.unwrap_or(0),
            checks,
            contacts,
            alerts,
        })
    }

    /// Applies rows read by [`Catalog::fetch`] and reports what changed.
    pub fn apply(&mut self, fetched: Fetched) -> Changes {
        let mut changes = Changes {
            full: fetched.full,
            ..Changes::default()
        };
        self.apply_checks(fetched.checks, &mut changes);
        self.apply_contacts(fetched.contacts, &mut changes);
        self.apply_alerts(fetched.alerts, &mut changes);
        if fetched.full {
            self.cursor = fetched.cursor;
            self.last_full = Instant::now();
        } else {
            self.cursor = self.cursor.max(fetched.cursor);
        }
        changes
    }

    fn apply_checks(&mut self, read: Read<CheckRow>, changes: &mut Changes) {
        let asked = read
            .asked
            .unwrap_or_else(|| self.checks.keys().map(|k| k.0).collect());
        let mut seen = BTreeSet::new();
        for decoded in read.rows {
            match decoded {
                Ok((check, problems)) => {
                    seen.insert(check.id.0);
                    self.set_problems("checks", check.id.0, problems);
                    if self.checks.get(&check.id).map(|c| &c.row) != Some(&check) {
                        changes.checks_upserted.push(check.id);
                        let spec = CheckSpec::parse(&check.check_type, &check.data);
                        self.checks
                            .insert(check.id, LoadedCheck { row: check, spec });
                    }
                }
                Err(problem) => self.report_skipped(problem),
            }
        }
        for id in asked.difference(&seen) {
            if self.checks.remove(&CheckId(*id)).is_some() {
                changes.checks_removed.push(CheckId(*id));
            }
            self.problems.remove(&("checks", *id));
        }
    }

    fn apply_contacts(&mut self, read: Read<ContactRow>, changes: &mut Changes) {
        let asked = read
            .asked
            .unwrap_or_else(|| self.contacts.keys().map(|k| k.0).collect());
        let mut seen = BTreeSet::new();
        for decoded in read.rows {
            match decoded {
                Ok((contact, problems)) => {
                    seen.insert(contact.id.0);
                    self.set_problems("contacts", contact.id.0, problems);
                    if self.contacts.get(&contact.id) != Some(&contact) {
                        changes.contacts_changed += 1;
                        self.contacts.insert(contact.id, contact);
                    }
                }
                Err(problem) => self.report_skipped(problem),
            }
        }
        for id in asked.difference(&seen) {
            if self.contacts.remove(&ContactId(*id)).is_some() {
                changes.contacts_changed += 1;
            }
            self.problems.remove(&("contacts", *id));
        }
    }

    fn apply_alerts(&mut self, read: Read<AlertRow>, changes: &mut Changes) {
        let asked = read
            .asked
            .unwrap_or_else(|| self.alerts.keys().map(|k| k.0).collect());
        let mut seen = BTreeSet::new();
        for decoded in read.rows {
            match decoded {
                Ok((alert, problems)) => {
                    seen.insert(alert.id.0);
                    self.set_problems("alerts", alert.id.0, problems);
                    if self.alerts.get(&alert.id) != Some(&alert) {
                        changes.alerts_changed += 1;
                        let pair = (alert.check_id, alert.id);
                        if let Some(old) = self.alerts.insert(alert.id, alert) {
                            self.alerts_by_check.remove(&(old.check_id, old.id));
                        }
                        self.alerts_by_check.insert(pair);
                    }
                }
                Err(problem) => self.report_skipped(problem),
            }
        }
        for id in asked.difference(&seen) {
            if let Some(old) = self.alerts.remove(&AlertId(*id)) {
                self.alerts_by_check.remove(&(old.check_id, old.id));
                changes.alerts_changed += 1;
            }
            self.problems.remove(&("alerts", *id));
        }
    }

    fn set_problems(&mut self, table: &'static str, id: i64, problems: Vec<RowProblem>) {
        let key = (table, id);
        if problems.is_empty() {
            self.problems.remove(&key);
            return;
        }
        if self.problems.get(&key) != Some(&problems) {
            for p in &problems {
                tracing::warn!(table, id, problem = %p.message, "row problem");
            }
        }
        self.problems.insert(key, problems);
    }

    fn report_skipped(&mut self, problem: RowProblem) {
        tracing::warn!(table = problem.table, id = problem.id, problem = %problem.message, "row skipped");
        self.problems
            .insert((problem.table, problem.id), vec![problem]);
    }

    /// An enabled check.
    pub fn check(&self, id: CheckId) -> Option<&CheckRow> {
        self.checks.get(&id).map(|c| &c.row)
    }

    /// The parsed definition of an enabled check.
    pub fn spec(&self, id: CheckId) -> Option<&CheckSpec> {
        self.checks.get(&id).map(|c| &c.spec)
    }

    /// Every enabled check, in no particular order.
    pub fn checks(&self) -> impl Iterator<Item = &CheckRow> {
        self.checks.values().map(|c| &c.row)
    }

    pub fn check_count(&self) -> usize {
        self.checks.len()
    }

    pub fn contact(&self, id: ContactId) -> Option<&ContactRow> {
        self.contacts.get(&id)
    }

    /// The contacts a flip of `check` to `new_status` notifies: enabled alerts whose type
    /// selects the flip, joined to existing contacts, one per alert row (gobearmon sends once
    /// per alert row; duplicate rows to one contact are collapsed here, since the outbox is
    /// keyed per contact).
    pub fn contacts_for_flip(&self, check: CheckId, new_status: CheckStatus) -> Vec<&ContactRow> {
        let mut seen = BTreeSet::new();
        self.alerts_by_check
            .range((check, AlertId(i64::MIN))..=(check, AlertId(i64::MAX)))
            .filter_map(|(_, a)| self.alerts.get(a))
            .filter(|a| a.kind.is_some_and(|k| k.matches(new_status)))
            .filter_map(|a| self.contacts.get(&a.contact_id))
            .filter(|c| seen.insert(c.id))
            .collect()
    }

    /// Problems of the rows currently loaded.
    pub fn problems(&self) -> impl Iterator<Item = &RowProblem> {
        self.problems.values().flatten()
    }
}

/// Reads the rows of `table` with the given ids (in chunks), decoding each as it arrives.
async fn read_ids<T>(
    conn: &mut mysql_async::Conn,
    columns: &str,
    table: &str,
    filter: &str,
    ids: BTreeSet<i64>,
    decode: fn(&Row) -> Decoded<T>,
) -> Result<Read<T>, StoreError> {
    let mut rows = Vec::new();
    let list: Vec<i64> = ids.iter().copied().collect();
    for chunk in list.chunks(CHUNK) {
        // The ids are integers read from our own change log, so formatting them into the
        // statement cannot inject anything.
        let list = chunk
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!("SELECT {columns} FROM {table} WHERE id IN ({list}){filter}");
        rows.extend(conn.query_iter(sql).await?.map(|r| decode(&r)).await?);
    }
    Ok(Read {
        asked: Some(ids),
        rows,
    })
}

/// Reads a whole table, decoding each row as it arrives.
async fn read_all<T>(
    conn: &mut mysql_async::Conn,
    sql: String,
    decode: fn(&Row) -> Decoded<T>,
) -> Result<Read<T>, StoreError> {
    let rows = conn.query_iter(sql).await?.map(|r| decode(&r)).await?;
    Ok(Read { asked: None, rows })
}

/// Re-exported so callers can name the problem type from here.
pub use rows::RowProblem as Problem;
