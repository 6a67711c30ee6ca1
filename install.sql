-- gobearmon schema for MySQL 5.7+/8 and MariaDB 10.3+.
--
-- Run it on an empty database to install, and run it again at any time: every statement is
-- idempotent. Run on a database made by the original gobearmon's install.sql it upgrades it in
-- place and keeps every row.
--
--   mysql -u root gobearmon < install.sql        (or: source install.sql)
--
-- The first five tables are gobearmon's, with the same columns, types and defaults, so
-- gobearmon's INSERTs keep working. `checks.confirmations` is new and nullable. The tables
-- after them are new: the epoch fence, the notification outbox, the latest result per check
-- and worker, and a change log that lets the controller notice edits without re-reading
-- every table (filled by triggers; creating triggers needs the TRIGGER privilege, and with
-- binary logging on MySQL also log_bin_trust_function_creators=1 or SUPER).

-- front-end tables (written by operators)
CREATE TABLE IF NOT EXISTS checks (
	id INT NOT NULL PRIMARY KEY AUTO_INCREMENT,
	name VARCHAR(64) NOT NULL,
	type VARCHAR(16) NOT NULL,
	data VARCHAR(1024) NOT NULL,
	check_interval INT NOT NULL DEFAULT 60,
	delay INT NOT NULL DEFAULT 1,
	status ENUM ('online', 'offline') DEFAULT 'online',
	enabled TINYINT(1) NOT NULL DEFAULT 1
);

CREATE TABLE IF NOT EXISTS contacts (
	id INT NOT NULL PRIMARY KEY AUTO_INCREMENT,
	type VARCHAR(32) NOT NULL,
	data VARCHAR(512) NOT NULL
);

CREATE TABLE IF NOT EXISTS alerts (
	id INT NOT NULL PRIMARY KEY AUTO_INCREMENT,
	check_id INT NOT NULL,
	contact_id INT NOT NULL,
	type ENUM ('online', 'offline', 'both') DEFAULT 'both',
	enabled TINYINT(1) NOT NULL DEFAULT 1
);

-- data tables (written by the controller)
CREATE TABLE IF NOT EXISTS check_events (
	id INT NOT NULL PRIMARY KEY AUTO_INCREMENT,
	check_id INT NOT NULL,
	type ENUM ('online', 'offline'),
	time TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS charges (
	id INT NOT NULL PRIMARY KEY AUTO_INCREMENT,
	check_id INT NOT NULL,
	type VARCHAR(32) NOT NULL,
	data VARCHAR(512) NOT NULL
);

-- charges.sid: the Twilio message or call SID (also in `data`, as gobearmon wrote it), unique,
-- so recording one send twice (a retried commit) adds no second row. Rows written before have
-- NULL, which the unique key allows any number of times. Added when missing.
SET @gbm_ddl = IF(
	(SELECT COUNT(*) FROM information_schema.COLUMNS
	 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'charges' AND COLUMN_NAME = 'sid') = 0,
	'ALTER TABLE charges ADD COLUMN sid VARCHAR(64) NULL DEFAULT NULL',
	'DO 0');
PREPARE gbm_stmt FROM @gbm_ddl;
EXECUTE gbm_stmt;
DEALLOCATE PREPARE gbm_stmt;
SET @gbm_ddl = IF(
	(SELECT COUNT(*) FROM information_schema.STATISTICS
	 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'charges' AND INDEX_NAME = 'charges_sid') = 0,
	'ALTER TABLE charges ADD UNIQUE KEY charges_sid (sid)',
	'DO 0');
PREPARE gbm_stmt FROM @gbm_ddl;
EXECUTE gbm_stmt;
DEALLOCATE PREPARE gbm_stmt;

-- checks.confirmations: per-check override of [controller] confirmations (NULL: the global
-- value). Added only when missing, in a form both MySQL and MariaDB accept.
SET @gbm_ddl = IF(
	(SELECT COUNT(*) FROM information_schema.COLUMNS
	 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'checks' AND COLUMN_NAME = 'confirmations') = 0,
	'ALTER TABLE checks ADD COLUMN confirmations INT NULL DEFAULT NULL',
	'DO 0');
PREPARE gbm_stmt FROM @gbm_ddl;
EXECUTE gbm_stmt;
DEALLOCATE PREPARE gbm_stmt;

-- The epoch fence: the highest view epoch that has taken control. A controller raises it when
-- it takes over; every write that matters locks this row and aborts unless it still holds the
-- writer's own epoch. It only ever grows.
CREATE TABLE IF NOT EXISTS epoch_fence (
	id TINYINT NOT NULL PRIMARY KEY,
	epoch BIGINT UNSIGNED NOT NULL,
	controller VARCHAR(64) NOT NULL DEFAULT '',
	raised_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
	holder_connection BIGINT UNSIGNED NOT NULL DEFAULT 0,
	holder_seq BIGINT UNSIGNED NOT NULL DEFAULT 0
);
INSERT IGNORE INTO epoch_fence (id, epoch, controller) VALUES (1, 0, '');
-- epoch_fence.holder_connection, holder_seq: every fenced transaction writes its session id
-- here (and counts up) right after locking the row, so a successor blocked by a holder that
-- hangs can see who it is (a dirty read) and end that session. Added when missing.
SET @gbm_ddl = IF(
	(SELECT COUNT(*) FROM information_schema.COLUMNS
	 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'epoch_fence' AND COLUMN_NAME = 'holder_connection') = 0,
	'ALTER TABLE epoch_fence ADD COLUMN holder_connection BIGINT UNSIGNED NOT NULL DEFAULT 0',
	'DO 0');
PREPARE gbm_stmt FROM @gbm_ddl;
EXECUTE gbm_stmt;
DEALLOCATE PREPARE gbm_stmt;
SET @gbm_ddl = IF(
	(SELECT COUNT(*) FROM information_schema.COLUMNS
	 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'epoch_fence' AND COLUMN_NAME = 'holder_seq') = 0,
	'ALTER TABLE epoch_fence ADD COLUMN holder_seq BIGINT UNSIGNED NOT NULL DEFAULT 0',
	'DO 0');
PREPARE gbm_stmt FROM @gbm_ddl;
EXECUTE gbm_stmt;
DEALLOCATE PREPARE gbm_stmt;

-- The notification outbox: one row per (flip event, contact), written in the same fenced
-- transaction as the flip and delivered afterwards with retries. `payload` is the
-- notification as it was at the flip (JSON), so later edits of the check do not change it.
-- It holds the check's `data` and the result message, JSON-escaped (up to six bytes per
-- character), so it is a MEDIUMTEXT: a payload refused as too long would leave the flip
-- unrecorded and retried forever. `last_error` is clipped to 1,000 characters by the writer.
CREATE TABLE IF NOT EXISTS notification_outbox (
	id BIGINT NOT NULL PRIMARY KEY AUTO_INCREMENT,
	event_id INT NOT NULL,
	check_id INT NOT NULL,
	contact_id INT NOT NULL,
	payload MEDIUMTEXT NOT NULL,
	state ENUM ('pending', 'sent', 'failed') NOT NULL DEFAULT 'pending',
	attempts INT NOT NULL DEFAULT 0,
	next_attempt_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
	claimed_by VARCHAR(64) NULL,
	claimed_until TIMESTAMP(3) NULL,
	claim_token BIGINT UNSIGNED NULL,
	last_error VARCHAR(1024) NULL,
	sent_at TIMESTAMP(3) NULL,
	admin_notified TINYINT(1) NOT NULL DEFAULT 0,
	created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
	UNIQUE KEY outbox_event_contact (event_id, contact_id),
	KEY outbox_due (state, next_attempt_at)
);
-- notification_outbox.claim_token: set by each claim, checked by the record of its outcome, so
-- a dispatcher whose claim was taken over (it ran out while the database was slow) records
-- nothing. Added when missing.
SET @gbm_ddl = IF(
	(SELECT COUNT(*) FROM information_schema.COLUMNS
	 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'notification_outbox' AND COLUMN_NAME = 'claim_token') = 0,
	'ALTER TABLE notification_outbox ADD COLUMN claim_token BIGINT UNSIGNED NULL DEFAULT NULL',
	'DO 0');
PREPARE gbm_stmt FROM @gbm_ddl;
EXECUTE gbm_stmt;
DEALLOCATE PREPARE gbm_stmt;

-- Databases installed with `payload TEXT` (64 KiB) are widened in place.
SET @gbm_ddl = IF(
	(SELECT COUNT(*) FROM information_schema.COLUMNS
	 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'notification_outbox'
	   AND COLUMN_NAME = 'payload' AND DATA_TYPE IN ('tinytext', 'text')) = 1,
	'ALTER TABLE notification_outbox MODIFY payload MEDIUMTEXT NOT NULL',
	'DO 0');
PREPARE gbm_stmt FROM @gbm_ddl;
EXECUTE gbm_stmt;
DEALLOCATE PREPARE gbm_stmt;

-- The latest result of every check from every worker (for `gobearmon status` and for a new
-- controller that takes over an open round). Workers cut messages to 1,024 bytes (so at most
-- 1,024 characters) and the controller clips to 1,024 characters.
CREATE TABLE IF NOT EXISTS check_results (
	check_id INT NOT NULL,
	node_id VARCHAR(64) NOT NULL,
	status ENUM ('online', 'offline', 'fail') NOT NULL,
	message VARCHAR(1024) NOT NULL DEFAULT '',
	duration_ms INT NOT NULL DEFAULT 0,
	epoch BIGINT UNSIGNED NOT NULL DEFAULT 0,
	updated_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
	PRIMARY KEY (check_id, node_id)
);

-- The change log behind cheap reloads: triggers record which row of checks, contacts or
-- alerts changed; the controller reads only new entries and re-reads only those rows.
CREATE TABLE IF NOT EXISTS config_changes (
	seq BIGINT NOT NULL PRIMARY KEY AUTO_INCREMENT,
	table_name VARCHAR(16) NOT NULL,
	row_id INT NOT NULL,
	changed_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
	KEY config_changes_time (changed_at)
);

DROP TRIGGER IF EXISTS gbm_checks_ins;
CREATE TRIGGER gbm_checks_ins AFTER INSERT ON checks FOR EACH ROW
	INSERT INTO config_changes (table_name, row_id) VALUES ('checks', NEW.id);
DROP TRIGGER IF EXISTS gbm_checks_upd;
CREATE TRIGGER gbm_checks_upd AFTER UPDATE ON checks FOR EACH ROW
	INSERT INTO config_changes (table_name, row_id) VALUES ('checks', NEW.id);
DROP TRIGGER IF EXISTS gbm_checks_del;
CREATE TRIGGER gbm_checks_del AFTER DELETE ON checks FOR EACH ROW
	INSERT INTO config_changes (table_name, row_id) VALUES ('checks', OLD.id);

DROP TRIGGER IF EXISTS gbm_contacts_ins;
CREATE TRIGGER gbm_contacts_ins AFTER INSERT ON contacts FOR EACH ROW
	INSERT INTO config_changes (table_name, row_id) VALUES ('contacts', NEW.id);
DROP TRIGGER IF EXISTS gbm_contacts_upd;
CREATE TRIGGER gbm_contacts_upd AFTER UPDATE ON contacts FOR EACH ROW
	INSERT INTO config_changes (table_name, row_id) VALUES ('contacts', NEW.id);
DROP TRIGGER IF EXISTS gbm_contacts_del;
CREATE TRIGGER gbm_contacts_del AFTER DELETE ON contacts FOR EACH ROW
	INSERT INTO config_changes (table_name, row_id) VALUES ('contacts', OLD.id);

DROP TRIGGER IF EXISTS gbm_alerts_ins;
CREATE TRIGGER gbm_alerts_ins AFTER INSERT ON alerts FOR EACH ROW
	INSERT INTO config_changes (table_name, row_id) VALUES ('alerts', NEW.id);
DROP TRIGGER IF EXISTS gbm_alerts_upd;
CREATE TRIGGER gbm_alerts_upd AFTER UPDATE ON alerts FOR EACH ROW
	INSERT INTO config_changes (table_name, row_id) VALUES ('alerts', NEW.id);
DROP TRIGGER IF EXISTS gbm_alerts_del;
CREATE TRIGGER gbm_alerts_del AFTER DELETE ON alerts FOR EACH ROW
	INSERT INTO config_changes (table_name, row_id) VALUES ('alerts', OLD.id);

-- check_events.message, confirmed_by: the result message that confirmed an offline flip
-- (cut to 1,024 characters) and the workers that confirmed it (comma-separated node ids), so
-- an incident can say what failed and who saw it. NULL for events written before, and for
-- events written by gobearmon. Added when missing.
SET @gbm_ddl = IF(
	(SELECT COUNT(*) FROM information_schema.COLUMNS
	 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'check_events' AND COLUMN_NAME = 'message') = 0,
	'ALTER TABLE check_events ADD COLUMN message VARCHAR(1024) NULL DEFAULT NULL',
	'DO 0');
PREPARE gbm_stmt FROM @gbm_ddl;
EXECUTE gbm_stmt;
DEALLOCATE PREPARE gbm_stmt;
SET @gbm_ddl = IF(
	(SELECT COUNT(*) FROM information_schema.COLUMNS
	 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'check_events' AND COLUMN_NAME = 'confirmed_by') = 0,
	'ALTER TABLE check_events ADD COLUMN confirmed_by VARCHAR(1024) NULL DEFAULT NULL',
	'DO 0');
PREPARE gbm_stmt FROM @gbm_ddl;
EXECUTE gbm_stmt;
DEALLOCATE PREPARE gbm_stmt;
-- Incidents and uptime read one check's events in time order.
SET @gbm_ddl = IF(
	(SELECT COUNT(*) FROM information_schema.STATISTICS
	 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'check_events' AND INDEX_NAME = 'check_events_check_time') = 0,
	'ALTER TABLE check_events ADD KEY check_events_check_time (check_id, time)',
	'DO 0');
PREPARE gbm_stmt FROM @gbm_ddl;
EXECUTE gbm_stmt;
DEALLOCATE PREPARE gbm_stmt;

-- check_results.location: the worker's [worker] location (its node id when it has none), for
-- "the last result per location". Added when missing.
SET @gbm_ddl = IF(
	(SELECT COUNT(*) FROM information_schema.COLUMNS
	 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'check_results' AND COLUMN_NAME = 'location') = 0,
	'ALTER TABLE check_results ADD COLUMN location VARCHAR(64) NOT NULL DEFAULT \'\'',
	'DO 0');
PREPARE gbm_stmt FROM @gbm_ddl;
EXECUTE gbm_stmt;
DEALLOCATE PREPARE gbm_stmt;

-- check_results.http_status, cert_expiry, timing: what /metrics exposes per check and worker
-- beside the status and duration: the http status code, the earliest certificate expiry
-- (Unix seconds) and the http phases ("dns,connect,tls,first_byte,total", milliseconds since
-- the run started). NULL where the check type has none. Added when missing.
SET @gbm_ddl = IF(
	(SELECT COUNT(*) FROM information_schema.COLUMNS
	 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'check_results' AND COLUMN_NAME = 'http_status') = 0,
	'ALTER TABLE check_results ADD COLUMN http_status SMALLINT UNSIGNED NULL DEFAULT NULL, ADD COLUMN cert_expiry BIGINT NULL DEFAULT NULL, ADD COLUMN timing VARCHAR(128) CHARACTER SET ascii NULL DEFAULT NULL',
	'DO 0');
PREPARE gbm_stmt FROM @gbm_ddl;
EXECUTE gbm_stmt;
DEALLOCATE PREPARE gbm_stmt;

-- Result history, written by the acting controller under the fence. Times are Unix
-- milliseconds (raw) and Unix seconds (rollups) as BIGINT: no time zone can shift them.
--
-- result_history: every result at interval resolution, kept for [history] raw_retention
-- (default 7 days) and pruned in small batches. `location` is the worker's [worker] location
-- (its node id when it has none). `message` is kept for offline and fail results only. The key
-- makes a batch written twice (a commit whose answer was lost) add nothing.
CREATE TABLE IF NOT EXISTS result_history (
	check_id INT NOT NULL,
	at_ms BIGINT NOT NULL,
	node_id VARCHAR(64) NOT NULL,
	location VARCHAR(64) NOT NULL DEFAULT '',
	status ENUM ('online', 'offline', 'fail') NOT NULL,
	duration_ms INT NOT NULL DEFAULT 0,
	message VARCHAR(1024) NOT NULL DEFAULT '',
	PRIMARY KEY (check_id, at_ms, node_id),
	KEY result_history_time (at_ms)
);

-- result_rollups: per check, location and UTC hour or day: counts of online, offline and fail
-- results, and the latency of the online ones (count, sum, min, max, and a fixed-bucket
-- histogram "bucket:count,..." that merges exactly; see src/history/histogram.rs). A day is
-- the merge of its 24 hours. Kept for [history] rollup_retention (default forever).
CREATE TABLE IF NOT EXISTS result_rollups (
	check_id INT NOT NULL,
	location VARCHAR(64) NOT NULL,
	period ENUM ('hour', 'day') NOT NULL,
	period_start BIGINT NOT NULL,
	online INT UNSIGNED NOT NULL DEFAULT 0,
	offline INT UNSIGNED NOT NULL DEFAULT 0,
	fail INT UNSIGNED NOT NULL DEFAULT 0,
	latency_count INT UNSIGNED NOT NULL DEFAULT 0,
	latency_sum_ms BIGINT UNSIGNED NOT NULL DEFAULT 0,
	latency_min_ms INT UNSIGNED NOT NULL DEFAULT 0,
	latency_max_ms INT UNSIGNED NOT NULL DEFAULT 0,
	histogram VARCHAR(2048) CHARACTER SET ascii NOT NULL DEFAULT '',
	PRIMARY KEY (check_id, period, period_start, location),
	KEY result_rollups_time (period, period_start)
) ROW_FORMAT=COMPRESSED KEY_BLOCK_SIZE=4;
-- Compressed pages: rollups are written once an hour and kept for ever by default, and their
-- histograms compress well (about 7 KB instead of 25 KB per check and day, scripts/bench-history).
-- A table made before is converted once (a rebuild: minutes for a large table).
SET @gbm_ddl = IF(
	(SELECT COUNT(*) FROM information_schema.TABLES
	 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'result_rollups' AND ROW_FORMAT <> 'Compressed') = 1,
	'ALTER TABLE result_rollups ROW_FORMAT=COMPRESSED KEY_BLOCK_SIZE=4',
	'DO 0');
PREPARE gbm_stmt FROM @gbm_ddl;
EXECUTE gbm_stmt;
DEALLOCATE PREPARE gbm_stmt;

-- check_latency: each check's latency over the 24 hours of hourly rollups before window_end
-- (Unix seconds), all locations merged; rewritten after every rollup, so that a list of
-- checks reads one row per check.
CREATE TABLE IF NOT EXISTS check_latency (
	check_id INT NOT NULL PRIMARY KEY,
	window_end BIGINT NOT NULL,
	p50_ms INT UNSIGNED NULL,
	p95_ms INT UNSIGNED NULL,
	p99_ms INT UNSIGNED NULL
);

-- history_cursor: how far the rollups have got: `rolled_to` is the start (Unix seconds) of the
-- first hour not rolled up yet. One row.
CREATE TABLE IF NOT EXISTS history_cursor (
	id TINYINT NOT NULL PRIMARY KEY,
	rolled_to BIGINT NOT NULL DEFAULT 0
);
INSERT IGNORE INTO history_cursor (id, rolled_to) VALUES (1, 0);

-- check_pushes: what the jobs watched by push checks (type 'push') have reported, one row per
-- check, written by whichever controller-capable worker received the push (POST or GET
-- /push/{token} on [web] addr). Times are Unix milliseconds of the database's clock. `pushes`
-- and `fails` only grow, so the acting controller sees every push since it last looked, a
-- failure followed at once by a success included.
CREATE TABLE IF NOT EXISTS check_pushes (
	check_id INT NOT NULL PRIMARY KEY,
	last_ms BIGINT NOT NULL,
	last_ok TINYINT(1) NOT NULL,
	pushes BIGINT UNSIGNED NOT NULL DEFAULT 0,
	fails BIGINT UNSIGNED NOT NULL DEFAULT 0,
	fail_message VARCHAR(1024) NOT NULL DEFAULT '',
	KEY check_pushes_time (last_ms)
);

-- Vantage health and meta-alerts (issue 15).
--
-- canaries: reference targets every worker probes besides its own [worker] canaries
-- (tcp://host:port, http(s)://..., icmp://host, dns://server/name), handed to workers with
-- their poll replies within one reload period. A worker is impaired while more than half of
-- its canary runs of the last 3 rounds failed.
CREATE TABLE IF NOT EXISTS canaries (
	id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
	url VARCHAR(1024) NOT NULL,
	enabled TINYINT NOT NULL DEFAULT 1
);

-- meta_alerts: one row per alert kind and subject (a worker, a viewserver member, ''),
-- open or resolved. Opening and resolving are single-row updates guarded by is_open (and,
-- for opening, by started_ms, the start of the outage), so however many nodes see the same
-- outage only one of them sends its alert and only one its recovery.
CREATE TABLE IF NOT EXISTS meta_alerts (
	kind VARCHAR(32) NOT NULL,
	subject VARCHAR(255) NOT NULL DEFAULT '',
	is_open TINYINT NOT NULL DEFAULT 0,
	started_ms BIGINT NOT NULL DEFAULT 0,
	opened_ms BIGINT NOT NULL DEFAULT 0,
	resolved_ms BIGINT NULL,
	opened_by VARCHAR(64) NOT NULL DEFAULT '',
	message VARCHAR(2048) NOT NULL DEFAULT '',
	detail TEXT NULL,
	PRIMARY KEY (kind, subject)
);

-- controller_alive: when an acting controller last said it was alive (Unix ms). Every
-- controller-capable worker reads it to tell that there has been no controller for longer
-- than [controller] no_controller_alert. One row; 0 means no controller ever acted.
CREATE TABLE IF NOT EXISTS controller_alive (
	id TINYINT NOT NULL PRIMARY KEY,
	epoch BIGINT NOT NULL DEFAULT 0,
	node VARCHAR(64) NOT NULL DEFAULT '',
	at_ms BIGINT NOT NULL DEFAULT 0
);
INSERT IGNORE INTO controller_alive (id, epoch, node, at_ms) VALUES (1, 0, '', 0);

-- meta_alert_deliveries: each meta-alert event (opened, resolved) to send, one row per channel
-- (email to [smtp] admin, the admin_webhook), written in the transaction that opened or
-- resolved the meta_alerts row, so it is sent once whichever node saw it. Every
-- controller-capable worker delivers: it claims due rows (claim_token, claimed_until), sends,
-- and records the outcome; a failed attempt is retried with the outbox's backoff
-- ([controller] delivery_*) until it is sent or its attempts are used up ('failed').
CREATE TABLE IF NOT EXISTS meta_alert_deliveries (
	id BIGINT NOT NULL PRIMARY KEY AUTO_INCREMENT,
	kind VARCHAR(32) NOT NULL,
	subject VARCHAR(255) NOT NULL DEFAULT '',
	started_ms BIGINT NOT NULL,
	event VARCHAR(16) NOT NULL,
	channel VARCHAR(16) NOT NULL,
	reported_by VARCHAR(64) NOT NULL DEFAULT '',
	message VARCHAR(2048) NOT NULL DEFAULT '',
	state ENUM ('pending', 'sent', 'failed') NOT NULL DEFAULT 'pending',
	attempts INT NOT NULL DEFAULT 0,
	next_attempt_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
	claimed_by VARCHAR(64) NULL,
	claimed_until TIMESTAMP(3) NULL,
	claim_token BIGINT UNSIGNED NULL,
	last_error VARCHAR(1024) NULL,
	sent_at TIMESTAMP(3) NULL,
	created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
	UNIQUE KEY meta_delivery_once (kind, subject, started_ms, event, channel),
	KEY meta_delivery_due (state, next_attempt_at)
);

-- Alert policy (issue 14). A database without policy rows behaves exactly as before.
-- alerts.after: notify an outage only if the check is still offline this many seconds after
-- the flip (NULL or 0: at once). alerts.remind_every: while offline and unacknowledged, tell
-- the contact again every this many seconds (NULL: never).
SET @gbm_ddl = IF(
	(SELECT COUNT(*) FROM information_schema.COLUMNS
	 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'alerts' AND COLUMN_NAME = 'after') = 0,
	'ALTER TABLE alerts ADD COLUMN `after` INT NULL DEFAULT NULL, ADD COLUMN remind_every INT NULL DEFAULT NULL',
	'DO 0');
PREPARE gbm_stmt FROM @gbm_ddl;
EXECUTE gbm_stmt;
DEALLOCATE PREPARE gbm_stmt;

-- notification_outbox.slot: 0 for a flip's notice, k >= 1 for its k-th reminder; unique with
-- (event, contact), so a send computed twice (after a failover) is written once.
SET @gbm_ddl = IF(
	(SELECT COUNT(*) FROM information_schema.COLUMNS
	 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'notification_outbox' AND COLUMN_NAME = 'slot') = 0,
	'ALTER TABLE notification_outbox ADD COLUMN slot INT NOT NULL DEFAULT 0, DROP KEY outbox_event_contact, ADD UNIQUE KEY outbox_event_contact (event_id, contact_id, slot)',
	'DO 0');
PREPARE gbm_stmt FROM @gbm_ddl;
EXECUTE gbm_stmt;
DEALLOCATE PREPARE gbm_stmt;

-- Maintenance windows: notifications of the covered checks (check_id NULL: every check) are
-- held while a window is open, and the time is left out of SLA uptime. One-off: starts_at and
-- ends_at (UTC). Weekly: weekday (1 = Monday .. 7 = Sunday), start_time (local), duration
-- (seconds), time_zone ('UTC' or an offset such as '+02:00').
CREATE TABLE IF NOT EXISTS maintenance (
	id INT NOT NULL PRIMARY KEY AUTO_INCREMENT,
	check_id INT NULL DEFAULT NULL,
	starts_at DATETIME(3) NULL DEFAULT NULL,
	ends_at DATETIME(3) NULL DEFAULT NULL,
	weekday TINYINT NULL DEFAULT NULL,
	start_time TIME NULL DEFAULT NULL,
	duration INT NULL DEFAULT NULL,
	time_zone VARCHAR(16) NOT NULL DEFAULT 'UTC',
	reason VARCHAR(255) NOT NULL DEFAULT '',
	KEY maintenance_check (check_id)
);

-- Acknowledgements (`gobearmon ack`): one per incident (its offline check_events row); stops
-- the incident's reminders and pending escalations.
CREATE TABLE IF NOT EXISTS incident_acks (
	event_id INT NOT NULL PRIMARY KEY,
	check_id INT NOT NULL,
	acked_by VARCHAR(64) NOT NULL,
	comment VARCHAR(1024) NOT NULL DEFAULT '',
	acked_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
);

-- Check dependencies: while a check that check_id depends on (depends_on) is offline, check_id's
-- notifications are held and it is listed in the parent's message ("also affected: ...");
-- its status and history are still recorded. Self-loops, unknown checks and cycles are
-- refused when loaded (the admin is told), the other rows still apply.
CREATE TABLE IF NOT EXISTS check_dependencies (
	check_id INT NOT NULL,
	depends_on INT NOT NULL,
	PRIMARY KEY (check_id, depends_on),
	KEY check_dependencies_parent (depends_on)
);

-- Storm control and caps (issue 14). contacts.max_per_hour: at most this many messages an
-- hour to an sms or voice contact (NULL: [twilio] max_per_hour, default 30); past it messages
-- fold into the next allowed one. notification_outbox.reason: why a row was sent, held, folded
-- or dropped; folded_into: the row whose message carried a folded row; held_until: when a
-- row held by storm control or a cap is looked at again. States 'held' (waiting, see
-- reason), 'folded' (sent inside another row's message) and 'dropped' (never sent).
SET @gbm_ddl = IF(
	(SELECT COUNT(*) FROM information_schema.COLUMNS
	 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'contacts' AND COLUMN_NAME = 'max_per_hour') = 0,
	'ALTER TABLE contacts ADD COLUMN max_per_hour INT NULL DEFAULT NULL',
	'DO 0');
PREPARE gbm_stmt FROM @gbm_ddl;
EXECUTE gbm_stmt;
DEALLOCATE PREPARE gbm_stmt;
SET @gbm_ddl = IF(
	(SELECT COUNT(*) FROM information_schema.COLUMNS
	 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'notification_outbox' AND COLUMN_NAME = 'reason') = 0,
	'ALTER TABLE notification_outbox ADD COLUMN reason VARCHAR(255) NULL DEFAULT NULL, ADD COLUMN folded_into BIGINT NULL DEFAULT NULL, ADD COLUMN held_until TIMESTAMP(3) NULL DEFAULT NULL, MODIFY state ENUM (\'pending\', \'sent\', \'failed\', \'held\', \'folded\', \'dropped\') NOT NULL DEFAULT \'pending\', ADD KEY outbox_contact_sent (contact_id, sent_at)',
	'DO 0');
PREPARE gbm_stmt FROM @gbm_ddl;
EXECUTE gbm_stmt;
DEALLOCATE PREPARE gbm_stmt;

-- Checks whose latest flip is suppressed as flapping, named by the flip path, so the policy task
-- reads only these (not every check with recent flips); removed once its state is told.
CREATE TABLE IF NOT EXISTS flapping_checks (
	check_id INT NOT NULL PRIMARY KEY,
	event_id INT NOT NULL,
	since TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
);

-- Dashboard users (`gobearmon user add`): role 'viewer' (reads) or 'operator' (also pauses,
-- resumes, acknowledges, sends test notifications). password_hash is argon2id (PHC string).
CREATE TABLE IF NOT EXISTS web_users (
	id INT NOT NULL PRIMARY KEY AUTO_INCREMENT,
	name VARCHAR(64) NOT NULL,
	password_hash VARCHAR(255) NOT NULL,
	role VARCHAR(16) NOT NULL DEFAULT 'viewer',
	created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
	UNIQUE KEY web_users_name (name)
);

-- Dashboard sessions: the SHA-256 of the cookie's random token (never the token), so that any
-- controller-capable worker accepts a session; csrf is the token every form posts back.
CREATE TABLE IF NOT EXISTS web_sessions (
	token_sha256 BINARY(32) NOT NULL PRIMARY KEY,
	user_id INT NOT NULL,
	csrf VARCHAR(64) NOT NULL,
	created_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
	expires_at TIMESTAMP(3) NOT NULL,
	KEY web_sessions_user (user_id)
);
-- web_sessions.password_stamp: SHA-256 (hex) of the user's password hash when the session
-- began. A session is honoured only while it matches, so changing a password (by `gobearmon
-- user add` or by SQL) ends every session of that user. Sessions from before have NULL and
-- must log in again. Added when missing.
SET @gbm_ddl = IF(
	(SELECT COUNT(*) FROM information_schema.COLUMNS
	 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'web_sessions' AND COLUMN_NAME = 'password_stamp') = 0,
	'ALTER TABLE web_sessions ADD COLUMN password_stamp CHAR(64) NULL DEFAULT NULL',
	'DO 0');
PREPARE gbm_stmt FROM @gbm_ddl;
EXECUTE gbm_stmt;
DEALLOCATE PREPARE gbm_stmt;

-- Public status pages (`/status/{slug}`, no login) and the checks each one shows.
CREATE TABLE IF NOT EXISTS status_pages (
	id INT NOT NULL PRIMARY KEY AUTO_INCREMENT,
	slug VARCHAR(64) NOT NULL,
	title VARCHAR(255) NOT NULL,
	description TEXT NOT NULL,
	UNIQUE KEY status_pages_slug (slug)
);

CREATE TABLE IF NOT EXISTS status_page_checks (
	page_id INT NOT NULL,
	check_id INT NOT NULL,
	group_name VARCHAR(255) NOT NULL DEFAULT '',
	display_name VARCHAR(255) NOT NULL DEFAULT '',
	sort_order INT NOT NULL DEFAULT 0,
	PRIMARY KEY (page_id, check_id)
);
