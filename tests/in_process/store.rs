//! The schema and the store against a real MariaDB, each test in its own database.

use std::collections::BTreeSet;
use std::time::Duration;

use gobearmon::config::Secret;
use gobearmon::model::{CheckId, CheckStatus, ContactId, Epoch, NodeId};
use gobearmon::store::catalog::Catalog;
use gobearmon::store::fence::{self, FencedTx, Raise};
use gobearmon::store::{Store, StoreError, schema};
use mysql_async::prelude::Queryable;
use testkit::db::TestDb;

/// gobearmon's original install.sql, verbatim in structure (its five tables, no new ones).
const ORIGINAL_SCHEMA: &str = "
CREATE TABLE checks (
	id INT NOT NULL PRIMARY KEY AUTO_INCREMENT,
	name VARCHAR(64) NOT NULL,
	type VARCHAR(16) NOT NULL,
	data VARCHAR(1024) NOT NULL,
	check_interval INT NOT NULL DEFAULT 60,
	delay INT NOT NULL DEFAULT 1,
	status ENUM ('online', 'offline') DEFAULT 'online',
	enabled TINYINT(1) NOT NULL DEFAULT 1
);
CREATE TABLE contacts (id INT NOT NULL PRIMARY KEY AUTO_INCREMENT, type VARCHAR(32) NOT NULL, data VARCHAR(512) NOT NULL);
CREATE TABLE alerts (id INT NOT NULL PRIMARY KEY AUTO_INCREMENT, check_id INT NOT NULL, contact_id INT NOT NULL,
	type ENUM ('online', 'offline', 'both') DEFAULT 'both', enabled TINYINT(1) NOT NULL DEFAULT 1);
CREATE TABLE check_events (id INT NOT NULL PRIMARY KEY AUTO_INCREMENT, check_id INT NOT NULL,
	type ENUM ('online', 'offline'), time TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE charges (id INT NOT NULL PRIMARY KEY AUTO_INCREMENT, check_id INT NOT NULL,
	type VARCHAR(32) NOT NULL, data VARCHAR(512) NOT NULL);
";

/// The inserts of gobearmon's README, verbatim.
const README_INSERTS: &str = r#"
INSERT INTO checks (name, type, data) VALUES ('ping ipv6', 'icmp', '{"target":"example.com","force_ip":6}');
INSERT INTO checks (name, type, data, check_interval, delay) VALUES ('my http check', 'http', '{"url":"https:\/\/example.com","method":"GET","expect_status":200,"timeout":15}', 120, 5);
INSERT INTO contacts (type, data) VALUES ('email', 'admin@example.com');
INSERT INTO alerts (check_id, contact_id, type) VALUES (1, 1, 'both');
"#;

async fn tables(db: &TestDb) -> BTreeSet<String> {
    let mut c = db.conn().await;
    let names: Vec<String> = c
        .query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()")
        .await
        .unwrap();
    names.into_iter().collect()
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    let mut c = db.conn().await;
    c.query_first(sql).await.unwrap().unwrap()
}

#[tokio::test]
async fn install_sql_runs_twice_on_an_empty_database() {
    let db = TestDb::empty("install_twice").await;
    let store = db.store();
    schema::install(&store).await.expect("first run");
    schema::install(&store).await.expect("second run");
    schema::verify(&store).await.expect("all tables present");
    let t = tables(&db).await;
    for name in schema::TABLES {
        assert!(t.contains(*name), "{name} missing from {t:?}");
    }
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM epoch_fence").await,
        1,
        "one fence row after two runs"
    );
    store.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn verify_names_missing_tables() {
    let db = TestDb::empty("verify_missing").await;
    db.exec(ORIGINAL_SCHEMA).await;
    let store = db.store();
    let err = schema::verify(&store).await.unwrap_err().to_string();
    assert!(
        err.contains("epoch_fence") && err.contains("install.sql"),
        "{err}"
    );
    store.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn install_sql_upgrades_an_original_gobearmon_database_keeping_rows() {
    let db = TestDb::empty("upgrade").await;
    db.exec(ORIGINAL_SCHEMA).await;
    db.exec(README_INSERTS).await;
    db.exec(
        "INSERT INTO check_events (check_id, type) VALUES (1, 'offline'), (1, 'online');
         INSERT INTO charges (check_id, type, data) VALUES (1, 'sms', 'SM123');
         UPDATE checks SET status = NULL WHERE id = 1;",
    )
    .await;
    let before: Vec<(i64, String, String, String, i64, i64)> = db
        .conn()
        .await
        .query("SELECT id, name, type, data, check_interval, delay FROM checks ORDER BY id")
        .await
        .unwrap();

    let store = db.store();
    schema::install(&store).await.expect("upgrade");
    schema::install(&store).await.expect("upgrade again");
    schema::verify(&store).await.expect("new tables present");

    let after: Vec<(i64, String, String, String, i64, i64)> = db
        .conn()
        .await
        .query("SELECT id, name, type, data, check_interval, delay FROM checks ORDER BY id")
        .await
        .unwrap();
    assert_eq!(before, after);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM contacts").await, 1);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM alerts").await, 1);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM check_events").await, 2);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM charges").await, 1);
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM checks WHERE confirmations IS NULL"
        )
        .await,
        2,
        "the new column exists and is NULL for old rows"
    );
    store.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn readme_inserts_run_verbatim_and_load() {
    let (db, store) = TestDb::installed("readme").await;
    db.exec(README_INSERTS).await;
    let catalog = Catalog::load(&store, Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(catalog.check_count(), 2);
    let ping = catalog.check(CheckId(1)).unwrap();
    assert_eq!(ping.check_type, "icmp");
    assert_eq!(ping.interval_secs, 60, "default check_interval");
    assert_eq!(ping.delay, 1, "default delay");
    assert_eq!(ping.status, CheckStatus::Online);
    let http = catalog.check(CheckId(2)).unwrap();
    assert_eq!((http.interval_secs, http.delay), (120, 5));
    assert_eq!(
        http.data,
        r#"{"url":"https://example.com","method":"GET","expect_status":200,"timeout":15}"#
    );
    let offline = catalog.contacts_for_flip(CheckId(1), CheckStatus::Offline);
    assert_eq!(offline.len(), 1);
    assert_eq!(offline[0].data, "admin@example.com");
    assert_eq!(catalog.problems().count(), 0);
    store.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn reload_sees_inserts_updates_disables_and_deletes() {
    let (db, store) = TestDb::installed("reload").await;
    db.exec(
        r#"INSERT INTO checks (id, name, type, data) VALUES
             (1, 'a', 'tcp', '{"address":"127.0.0.1:1"}'),
             (2, 'b', 'tcp', '{"address":"127.0.0.1:2"}'),
             (3, 'c', 'tcp', '{"address":"127.0.0.1:3"}');"#,
    )
    .await;
    let mut catalog = Catalog::load(&store, Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(catalog.check_count(), 3);

    let nothing = catalog.refresh(&store).await.unwrap();
    assert!(nothing.is_empty(), "no edits, no changes: {nothing:?}");

    db.exec(
        r#"INSERT INTO checks (id, name, type, data) VALUES (4, 'd', 'http', '{"url":"http://127.0.0.1:9/"}');
           UPDATE checks SET data = '{"address":"127.0.0.1:22"}' WHERE id = 2;
           UPDATE checks SET enabled = 0 WHERE id = 3;
           DELETE FROM checks WHERE id = 1;"#,
    )
    .await;
    let changes = catalog.refresh(&store).await.unwrap();
    assert!(!changes.full, "an incremental refresh");
    let mut upserted = changes.checks_upserted.clone();
    upserted.sort();
    let mut removed = changes.checks_removed.clone();
    removed.sort();
    assert_eq!(upserted, vec![CheckId(2), CheckId(4)]);
    assert_eq!(removed, vec![CheckId(1), CheckId(3)]);
    assert_eq!(
        catalog.check(CheckId(2)).unwrap().data,
        r#"{"address":"127.0.0.1:22"}"#
    );
    assert!(catalog.check(CheckId(1)).is_none() && catalog.check(CheckId(3)).is_none());

    // Re-enabling brings it back; the overlap window re-reads recent entries without
    // reporting unchanged rows as changes.
    db.exec("UPDATE checks SET enabled = 1 WHERE id = 3;").await;
    let changes = catalog.refresh(&store).await.unwrap();
    assert_eq!(changes.checks_upserted, vec![CheckId(3)]);
    assert!(changes.checks_removed.is_empty());

    // Contacts and alerts are followed the same way.
    db.exec(
        "INSERT INTO contacts (id, type, data) VALUES (7, 'email', 'a@test');
         INSERT INTO alerts (id, check_id, contact_id, type) VALUES (1, 2, 7, 'offline');",
    )
    .await;
    let changes = catalog.refresh(&store).await.unwrap();
    assert_eq!((changes.contacts_changed, changes.alerts_changed), (1, 1));
    assert_eq!(
        catalog.contacts_for_flip(CheckId(2), CheckStatus::Offline)[0].id,
        ContactId(7)
    );
    db.exec("UPDATE alerts SET enabled = 0 WHERE id = 1;").await;
    catalog.refresh(&store).await.unwrap();
    assert!(
        catalog
            .contacts_for_flip(CheckId(2), CheckStatus::Offline)
            .is_empty()
    );

    // A full reload agrees with the incremental state.
    let full = catalog.full_reload(&store).await.unwrap();
    assert!(full.full && full.is_empty(), "{full:?}");
    store.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn bad_rows_are_kept_and_reported_without_stopping_the_load() {
    let (db, store) = TestDb::installed("bad_rows").await;
    db.exec(
        r#"INSERT INTO checks (id, name, type, data, status) VALUES
             (1, 'null status', 'tcp', '{"address":"127.0.0.1:1"}', NULL),
             (2, 'broken json', 'http', '{not json', 'offline'),
             (3, 'bogus type', 'bogus', '{}', 'online'),
             (4, 'fine', 'tcp', '{"address":"127.0.0.1:1"}', 'offline');
           INSERT INTO checks (id, name, type, data, confirmations) VALUES (5, 'own quorum', 'tcp', '{}', 3);
           INSERT INTO contacts (id, type, data) VALUES (1, 'pager', 'x');
           INSERT INTO alerts (id, check_id, contact_id, type) VALUES (1, 4, 1, NULL);"#,
    )
    .await;
    let catalog = Catalog::load(&store, Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(catalog.check_count(), 5, "every row is kept");
    let null = catalog.check(CheckId(1)).unwrap();
    assert_eq!(null.status, CheckStatus::Online);
    assert!(!null.status_was_valid);
    assert_eq!(
        catalog.check(CheckId(2)).unwrap().status,
        CheckStatus::Offline
    );
    assert_eq!(
        catalog.check(CheckId(4)).unwrap().status,
        CheckStatus::Offline
    );
    assert_eq!(catalog.check(CheckId(5)).unwrap().confirmations, Some(3));
    assert_eq!(catalog.check(CheckId(4)).unwrap().confirmations, None);
    let problems: Vec<(&str, i64, String)> = catalog
        .problems()
        .map(|p| (p.table, p.id, p.message.clone()))
        .collect();
    let has = |table: &str, id: i64, needle: &str| {
        problems
            .iter()
            .any(|(t, i, m)| *t == table && *i == id && m.contains(needle))
    };
    assert!(has("checks", 1, "NULL"), "{problems:?}");
    assert!(has("checks", 2, "not valid JSON"), "{problems:?}");
    assert!(
        has("checks", 3, "invalid check type: bogus"),
        "{problems:?}"
    );
    assert!(has("contacts", 1, "pager"), "{problems:?}");
    assert!(has("alerts", 1, "NULL"), "{problems:?}");
    assert!(
        !problems.iter().any(|(_, i, _)| *i == 4 || *i == 5),
        "{problems:?}"
    );
    // A NULL alert type matches no flip (gobearmon's rule).
    assert!(
        catalog
            .contacts_for_flip(CheckId(4), CheckStatus::Offline)
            .is_empty()
    );
    store.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn alert_types_and_enabled_select_contacts() {
    let (db, store) = TestDb::installed("alert_select").await;
    db.exec(
        r#"INSERT INTO checks (id, name, type, data) VALUES (3, 's4', 'tcp', '{}');
           INSERT INTO contacts (id, type, data) VALUES (1, 'email', 'a@t'), (2, 'email', 'b@t'), (3, 'email', 'c@t'), (4, 'email', 'd@t');
           INSERT INTO alerts (check_id, contact_id, type, enabled) VALUES
             (3, 1, 'both', 1), (3, 2, 'offline', 1), (3, 3, 'online', 1), (3, 4, 'both', 0),
             (3, 99, 'both', 1);"#,
    )
    .await;
    let catalog = Catalog::load(&store, Duration::from_secs(600))
        .await
        .unwrap();
    let ids = |s| {
        let mut v: Vec<i64> = catalog
            .contacts_for_flip(CheckId(3), s)
            .iter()
            .map(|c| c.id.0)
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(CheckStatus::Offline), vec![1, 2]);
    assert_eq!(ids(CheckStatus::Online), vec![1, 3]);
    store.close().await;
    db.drop_db().await;
}

async fn event_count(db: &TestDb) -> i64 {
    count(db, "SELECT COUNT(*) FROM check_events").await
}

#[tokio::test]
async fn fence_only_grows_and_stops_stale_writers() {
    let (db, store) = TestDb::installed("fence").await;
    db.exec("INSERT INTO checks (id, name, type, data) VALUES (1, 'x', 'tcp', '{}');")
        .await;
    let a = NodeId("w1".into());
    let b = NodeId("w2".into());
    assert_eq!(fence::current(&store).await.unwrap(), Epoch(0));
    assert_eq!(
        fence::raise(&store, Epoch(3), &a).await.unwrap(),
        Raise::Raised
    );
    assert_eq!(
        fence::raise(&store, Epoch(3), &a).await.unwrap(),
        Raise::AlreadyHeld
    );
    assert_eq!(
        fence::raise(&store, Epoch(2), &b).await.unwrap(),
        Raise::Superseded { stored: Epoch(3) }
    );
    assert_eq!(
        fence::current(&store).await.unwrap(),
        Epoch(3),
        "never lowered"
    );

    // The current epoch: every write of the transaction lands.
    let mut tx = FencedTx::begin(&store, Epoch(3), &a).await.unwrap();
    tx.tx()
        .query_drop("UPDATE checks SET status = 'offline' WHERE id = 1")
        .await
        .unwrap();
    tx.tx()
        .query_drop("INSERT INTO check_events (check_id, type) VALUES (1, 'offline')")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(event_count(&db).await, 1);

    // A newer controller raises the fence; the old epoch can no longer write anything.
    assert_eq!(
        fence::raise(&store, Epoch(4), &b).await.unwrap(),
        Raise::Raised
    );
    match FencedTx::begin(&store, Epoch(3), &a).await {
        Err(StoreError::Fenced { ours, stored }) => {
            assert_eq!((ours, stored), (Epoch(3), Epoch(4)));
        }
        other => panic!("stale epoch must be fenced, got {other:?}"),
    }
    assert_eq!(event_count(&db).await, 1);

    // A transaction opened before the raise holds the row: the raise waits for it, so its
    // writes land before the new epoch, never after; and one that is rolled back leaves
    // nothing.
    let mut tx = FencedTx::begin(&store, Epoch(4), &b).await.unwrap();
    tx.tx()
        .query_drop("INSERT INTO check_events (check_id, type) VALUES (1, 'online')")
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(event_count(&db).await, 1);
    let status: String = db
        .conn()
        .await
        .query_first("SELECT status FROM checks WHERE id = 1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, "offline");
    store.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn raise_waits_for_an_open_fenced_transaction() {
    let (db, store) = TestDb::installed("fence_wait").await;
    let w1 = NodeId("w1".into());
    fence::raise(&store, Epoch(1), &w1).await.unwrap();
    let mut old = FencedTx::begin(&store, Epoch(1), &w1).await.unwrap();
    let store2 = store.clone();
    let raiser =
        tokio::spawn(async move { fence::raise(&store2, Epoch(2), &NodeId("w2".into())).await });
    // The raise cannot finish while the old controller's transaction holds the row.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !raiser.is_finished(),
        "raise must wait for the fenced transaction"
    );
    old.tx()
        .query_drop("INSERT INTO check_events (check_id, type) VALUES (9, 'offline')")
        .await
        .unwrap();
    old.commit().await.unwrap();
    assert_eq!(raiser.await.unwrap().unwrap(), Raise::Raised);
    assert_eq!(event_count(&db).await, 1);
    assert!(matches!(
        FencedTx::begin(&store, Epoch(1), &w1).await,
        Err(StoreError::Fenced { .. })
    ));
    store.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_dead_database_url_is_skipped() {
    let db = TestDb::empty("failover").await;
    // Port 1 on loopback refuses connections at once.
    let store = Store::new(&[
        Secret::new("mysql://nobody:pw@127.0.0.1:1/nothing"),
        Secret::new(db.url.clone()),
    ])
    .unwrap();
    schema::install(&store).await.expect("second URL used");
    schema::verify(&store).await.unwrap();
    let dead_only = Store::new(&[Secret::new("mysql://nobody:pw@127.0.0.1:1/nothing")]).unwrap();
    let err = dead_only.conn().await.unwrap_err();
    assert!(err.is_retryable());
    assert!(
        !err.to_string().contains("pw@"),
        "no credentials in errors: {err}"
    );
    store.close().await;
    db.drop_db().await;
}

/// What a session of `store` runs with.
async fn session_timeouts(store: &Store) -> (u64, u64) {
    let mut c = store.conn().await.unwrap();
    c.query_first("SELECT @@innodb_lock_wait_timeout, @@wait_timeout")
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn sessions_have_short_lock_wait_and_idle_timeouts_also_after_a_reset() {
    let (db, store) = TestDb::installed("session").await;
    let first = session_timeouts(&store).await;
    assert_eq!(
        first,
        (
            gobearmon::store::LOCK_WAIT_TIMEOUT_SECS,
            gobearmon::store::SESSION_WAIT_TIMEOUT_SECS
        ),
        "a new session"
    );
    // The connection went back to the pool and was reset; the settings are set again.
    assert_eq!(session_timeouts(&store).await, first, "a reused session");
    store.close().await;
    db.drop_db().await;
}

/// A bound far below the server's `wait_timeout` (8 h) and its default lock wait (50 s), and
/// well above the few seconds the take-over needs.
const TAKE_OVER: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_fence_holder_that_hangs_is_ended_and_the_successor_raises() {
    let (db, store) = TestDb::installed("fence_hung").await;
    db.exec("INSERT INTO checks (id, name, type, data) VALUES (1, 'x', 'tcp', '{}');")
        .await;
    let w1 = NodeId("w1".into());
    let w2 = NodeId("w2".into());
    // The old controller: its own pool, a fenced transaction with a write in it, and then
    // nothing (frozen, or its host is gone while the server keeps the session).
    let old_store = db.store();
    fence::raise(&old_store, Epoch(1), &w1).await.unwrap();
    let mut old = FencedTx::begin(&old_store, Epoch(1), &w1).await.unwrap();
    old.tx()
        .query_drop("INSERT INTO check_events (check_id, type) VALUES (1, 'offline')")
        .await
        .unwrap();

    let raised = tokio::time::timeout(TAKE_OVER, fence::raise(&store, Epoch(2), &w2))
        .await
        .expect(
            "the successor raises the fence within seconds, not after the holder's wait_timeout",
        );
    assert_eq!(raised.unwrap(), Raise::Raised);
    assert_eq!(fence::current(&store).await.unwrap(), Epoch(2));
    assert!(
        old.commit().await.is_err(),
        "the old holder's session was ended"
    );
    assert_eq!(event_count(&db).await, 0, "the old write was rolled back");
    // The new controller writes at once.
    let tx = FencedTx::begin(&store, Epoch(2), &w2).await.unwrap();
    tx.commit().await.unwrap();
    old_store.close().await;
    store.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_raise_never_ends_a_newer_holder_and_reports_who_holds_the_fence() {
    let (db, store) = TestDb::installed("fence_newer").await;
    let w1 = NodeId("w1".into());
    let w2 = NodeId("w2".into());
    let newer_store = db.store();
    fence::raise(&newer_store, Epoch(5), &w2).await.unwrap();
    let newer = FencedTx::begin(&newer_store, Epoch(5), &w2).await.unwrap();

    // An older controller that has not noticed yet tries to raise to its epoch.
    let err = tokio::time::timeout(TAKE_OVER, fence::raise(&store, Epoch(4), &w1))
        .await
        .expect("a blocked raise gives up within seconds")
        .unwrap_err();
    match &err {
        StoreError::FenceLocked {
            holder: Some(holder),
        } => assert_eq!((holder.epoch, &holder.node), (Epoch(5), &w2)),
        other => panic!("expected the fence locked by epoch 5, got {other:?}"),
    }
    assert!(err.is_retryable());
    newer
        .commit()
        .await
        .expect("the newer holder was left alone");
    assert_eq!(
        fence::raise(&store, Epoch(4), &w1).await.unwrap(),
        Raise::Superseded { stored: Epoch(5) }
    );

    // A session that locks the row without recording itself is not guessed at.
    let mut raw = db.conn().await;
    raw.query_drop("START TRANSACTION").await.unwrap();
    raw.query_drop("SELECT epoch FROM epoch_fence WHERE id = 1 FOR UPDATE")
        .await
        .unwrap();
    let err = tokio::time::timeout(TAKE_OVER, fence::raise(&store, Epoch(6), &w1))
        .await
        .expect("a blocked raise gives up within seconds")
        .unwrap_err();
    assert!(
        matches!(err, StoreError::FenceLocked { holder: None }),
        "{err:?}"
    );
    raw.query_drop("ROLLBACK").await.unwrap();
    drop(raw);
    newer_store.close().await;
    store.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn an_epoch_held_by_another_node_is_neither_raised_nor_written() {
    let (db, store) = TestDb::installed("fence_node").await;
    let w1 = NodeId("w1".into());
    let w2 = NodeId("w2".into());
    assert_eq!(
        fence::raise(&store, Epoch(7), &w1).await.unwrap(),
        Raise::Raised
    );
    assert_eq!(
        fence::raise(&store, Epoch(7), &w2).await.unwrap(),
        Raise::HeldBy { node: w1.clone() }
    );
    match FencedTx::begin(&store, Epoch(7), &w2).await {
        Err(StoreError::Fenced { ours, stored }) => {
            assert_eq!((ours, stored), (Epoch(7), Epoch(7)))
        }
        other => panic!("another node's epoch must be fenced, got {other:?}"),
    }
    FencedTx::begin(&store, Epoch(7), &w1)
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();
    let controller: String = db
        .conn()
        .await
        .query_first("SELECT controller FROM epoch_fence WHERE id = 1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(controller, "w1");
    store.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_busy_pool_is_waited_for_and_never_counts_as_an_unreachable_database() {
    let db = TestDb::empty("pool_busy").await;
    let timeouts = gobearmon::store::StoreTimeouts {
        connect: Duration::from_millis(300),
        pool_wait: Duration::from_secs(30),
        operation: Duration::from_secs(30),
    };
    // One connection in the pool of the first URL; the second URL refuses at once.
    let store = Store::with_timeouts(
        &[
            Secret::new(format!("{}?pool_min=0&pool_max=1", db.url)),
            Secret::new("mysql://nobody:pw@127.0.0.1:1/nothing"),
        ],
        timeouts,
    )
    .unwrap();
    let held = store.conn().await.unwrap();
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut c = store.conn().await?;
            let name: Option<String> = c.query_first("SELECT DATABASE()").await?;
            Ok::<_, StoreError>(name)
        })
    };
    tokio::pin!(waiter);
    // Several connect timeouts pass while our only connection is out: still waiting.
    let early = tokio::time::timeout(timeouts.connect * 5, &mut waiter).await;
    assert!(
        early.is_err(),
        "a wait for a pooled connection ended as {:?}",
        early.map(|j| j.map(|r| r.map_err(|e| e.to_string())))
    );
    drop(held);
    let name = tokio::time::timeout(Duration::from_secs(10), &mut waiter)
        .await
        .expect("the connection comes once ours is returned")
        .unwrap()
        .expect("the waiter got the first database's connection");
    assert_eq!(name.as_deref(), Some(db.name.as_str()));
    store.close().await;
    db.drop_db().await;
}

/// Push checks: a row whose data is unusable (a short or long token, a grace out of range) is
/// skipped and reported; a good one is loaded. Pushes are counted per check in
/// `check_pushes`, a failure keeps its message, and a read says how old the latest push is.
#[tokio::test]
async fn push_checks_are_validated_at_load_and_pushes_are_counted() {
    use gobearmon::store::push;
    let (db, store) = TestDb::installed("push_rows").await;
    let long = "t".repeat(129);
    db.exec(&format!(
        r#"INSERT INTO checks (id, name, type, data, check_interval) VALUES
             (1, 'nightly backup', 'push', '{{"token":"backup-token-0123456789","grace":30}}', 5),
             (2, 'short token', 'push', '{{"token":"short"}}', 5),
             (3, 'long token', 'push', '{{"token":"{long}"}}', 5),
             (4, 'long grace', 'push', '{{"token":"grace-token-0123456789","grace":90000}}', 5);"#
    ))
    .await;
    let catalog = Catalog::load(&store, Duration::from_secs(600))
        .await
        .unwrap();
    assert!(catalog.check(CheckId(1)).is_some());
    for id in [2, 3, 4] {
        assert!(
            catalog.check(CheckId(id)).is_none(),
            "check {id} is skipped"
        );
    }
    let problems: Vec<(i64, bool, String)> = catalog
        .problems()
        .map(|p| (p.id, p.kept, p.message.clone()))
        .collect();
    let has = |id: i64, needle: &str| {
        problems
            .iter()
            .any(|(i, kept, m)| *i == id && !kept && m.contains(needle))
    };
    assert!(
        has(2, "token is 5 characters long; expected 16 to 128"),
        "{problems:?}"
    );
    assert!(has(3, "token is 129 characters long"), "{problems:?}");
    assert!(
        has(4, "grace is 90000; expected 0 to 86400 seconds"),
        "{problems:?}"
    );
    assert!(!problems.iter().any(|(i, _, _)| *i == 1), "{problems:?}");

    // Only enabled push checks carry tokens to the web face.
    db.exec(
        "INSERT INTO checks (id, name, type, data, enabled) VALUES (5, 'off', 'push', '{}', 0)",
    )
    .await;
    let ids: Vec<i64> = push::push_checks(&store)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id.0)
        .collect();
    assert_eq!(ids, vec![1, 2, 3, 4]);

    assert!(push::read(&store, None).await.unwrap().is_empty());
    push::record(&store, CheckId(1), true, "").await.unwrap();
    push::record(&store, CheckId(1), false, "disk full")
        .await
        .unwrap();
    push::record(&store, CheckId(1), true, "ignored for a success")
        .await
        .unwrap();
    let rows = push::read(&store, None).await.unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(
        (r.check, r.pushes, r.fails, r.last_ok),
        (CheckId(1), 3, 1, true)
    );
    assert_eq!(r.fail_message, "disk full");
    assert!(r.age_ms < 60_000, "{r:?}");
    // A read since a later time finds nothing; since the push, the row.
    assert!(
        push::read(&store, Some(r.last_ms + 1))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(push::read(&store, Some(r.last_ms)).await.unwrap().len(), 1);
    // Rows of checks that are no longer push checks are pruned.
    push::record(&store, CheckId(4), true, "").await.unwrap();
    db.exec("UPDATE checks SET type = 'tcp' WHERE id = 4").await;
    assert_eq!(push::prune(&store).await.unwrap(), 1);
    assert_eq!(push::read(&store, None).await.unwrap().len(), 1);
    store.close().await;
    db.drop_db().await;
}
