//! Column widths against what can reach them, on real MariaDB: `install.sql` widens the
//! outbox payload in place on a database installed before, keeping its rows.

use mysql_async::prelude::Queryable;
use testkit::db::TestDb;

/// The outbox table as `install.sql` created it before the payload became a MEDIUMTEXT.
const OLD_OUTBOX: &str = "CREATE TABLE notification_outbox (
	id BIGINT NOT NULL PRIMARY KEY AUTO_INCREMENT,
	event_id INT NOT NULL,
	check_id INT NOT NULL,
	contact_id INT NOT NULL,
	payload TEXT NOT NULL,
	state ENUM ('pending', 'sent', 'failed') NOT NULL DEFAULT 'pending',
	attempts INT NOT NULL DEFAULT 0,
	next_attempt_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
	claimed_by VARCHAR(64) NULL,
	claimed_until TIMESTAMP(3) NULL,
	last_error VARCHAR(1024) NULL,
	sent_at TIMESTAMP(3) NULL,
	admin_notified TINYINT(1) NOT NULL DEFAULT 0,
	created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
	UNIQUE KEY outbox_event_contact (event_id, contact_id),
	KEY outbox_due (state, next_attempt_at)
);
INSERT INTO notification_outbox (event_id, check_id, contact_id, payload) VALUES (1, 1, 1, '{\"old\":true}');";

#[tokio::test]
async fn install_sql_widens_an_old_outbox_payload_in_place() {
    let db = TestDb::empty("limits_payload").await;
    db.exec(OLD_OUTBOX).await;
    let store = db.store();
    gobearmon::store::schema::install(&store)
        .await
        .expect("install.sql upgrades");
    gobearmon::store::schema::install(&store)
        .await
        .expect("and runs again");
    let mut c = db.conn().await;
    let kind: String = c
        .query_first(
            "SELECT DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() \
             AND TABLE_NAME = 'notification_outbox' AND COLUMN_NAME = 'payload'",
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kind, "mediumtext");
    let kept: String = c
        .query_first("SELECT payload FROM notification_outbox WHERE event_id = 1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept, r#"{"old":true}"#, "the old row is kept");
    // More than a TEXT holds: a 1,024-character `data` of control characters is 6 KiB
    // escaped, and a message from a worker that does not cut its messages can be far longer.
    let payload = format!(r#"{{"message":"{}"}}"#, "x".repeat(100_000));
    c.exec_drop(
        "INSERT INTO notification_outbox (event_id, check_id, contact_id, payload) VALUES (2, 1, 1, ?)",
        (payload.as_str(),),
    )
    .await
    .expect("a 100 KB payload fits");
    drop(c);
    store.close().await;
    db.drop_db().await;
}
