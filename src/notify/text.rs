//! What a notification says: gobearmon's texts (reference section 3), kept word for word, and
//! the JSON body of the `webhook` contact type. Pure functions; the check data and the result
//! message are always redacted first ([`redact::check_data`], [`redact::message`]).
//!
//! SMS and voice texts are cut to what Twilio accepts ([`SMS_MAX`], [`SAY_MAX`]), on
//! character boundaries and marked as cut: an over-long text is refused as a final error, so
//! the alert would be lost.

use serde::Serialize;

use super::Notification;
use super::redact;
use crate::model::CheckStatus;
use crate::probe::cut_text;

/// Longest SMS body, in UTF-8 bytes. Twilio refuses a `Body` over 1,600 characters (error
/// 21617) and counts a character outside GSM-7 as more than one; a byte is never less than
/// Twilio's count, so 1,600 bytes always pass.
pub const SMS_MAX: usize = 1600;

/// Budget of the spoken text inside `<Say>`, XML-escaped, measured as it travels: form
/// URL-encoded in the `Twiml` field. Twilio takes at most 3,000 single-byte characters in
/// `<Say>` for Polly voices (4,096 for basic ones) and 4,500 URL-encoded (warning 13521), and
/// inline TwiML up to 4,000 characters (error 32018); the encoded length is never less than
/// the escaped bytes or the characters, so 3,000 keeps within all three.
pub const SAY_MAX: usize = 3000;

/// `Check offline: NAME` (gobearmon's subject).
/// A digest's: `gobearmon: 40 checks changed (38 offline, 2 online)`.
pub fn email_subject(n: &Notification) -> String {
    if !n.folded.is_empty() {
        return format!("gobearmon: {}", digest_count(n));
    }
    format!("Check {}: {}", n.new_status, n.name)
}

/// `40 checks changed (38 offline, 2 online)`.
fn digest_count(n: &Notification) -> String {
    let all = n.all().count();
    let offline = n
        .all()
        .filter(|m| m.new_status == CheckStatus::Offline)
        .count();
    format!(
        "{all} checks changed ({offline} offline, {} online)",
        all - offline
    )
}

/// One line per notification of a digest: its headline, and a reminder's number.
fn digest_lines(n: &Notification) -> Vec<String> {
    n.all()
        .map(|m| {
            let mut line = headline(m);
            if m.reminder > 0 {
                line.push_str(&format!(" (reminder {})", m.reminder));
            }
            line
        })
        .collect()
}

/// The first line shared by email and SMS: `Check [NAME] is now online.` or
/// `Check [NAME] is now offline: MESSAGE`.
fn headline(n: &Notification) -> String {
    match n.new_status {
        CheckStatus::Online => format!("Check [{}] is now online.", n.name),
        CheckStatus::Offline => format!("Check [{}] is now offline: {}", n.name, message(n)),
    }
}

/// The result message as every text shows it: redacted.
fn message(n: &Notification) -> String {
    redact::message(&n.message, &n.data)
}

/// gobearmon's email body, with the check data redacted.
/// A digest's lists each check's headline with its time and id.
pub fn email_body(n: &Notification) -> String {
    if !n.folded.is_empty() {
        let mut body = format!(
            "{}, folded into one message (storm control or the contact's hourly cap):\n",
            digest_count(n)
        );
        for (m, line) in n.all().zip(digest_lines(n)) {
            body.push_str(&format!(
                "\n- {} ({}, ID {})",
                line,
                rfc3339_ms(m.time_ms),
                m.check_id
            ));
        }
        body.push_str("\n\ngobearmon");
        return body;
    }
    format!(
        "{}\n\nID: {}\nName: {}\nType: {}\nData: {}\n\ngobearmon",
        headline(n),
        n.check_id,
        n.name,
        n.check_type,
        redact::check_data(&n.data)
    )
}

/// gobearmon's SMS text, cut to [`SMS_MAX`].
/// A digest's: the count, then each headline.
pub fn sms(n: &Notification) -> String {
    if !n.folded.is_empty() {
        let text = format!(
            "gobearmon: {}. {}",
            digest_count(n),
            digest_lines(n).join(" ")
        );
        return cut_text(&text, SMS_MAX).into_owned();
    }
    cut_text(&headline(n), SMS_MAX).into_owned()
}

/// The words a voice call speaks (gobearmon's text; for online the message is usually empty,
/// so it ends with `Reason is . `).
/// A digest's speaks the count and the names.
pub fn voice(n: &Notification) -> String {
    if !n.folded.is_empty() {
        let names: Vec<String> = n
            .all()
            .map(|m| format!("{} . {}", m.name, m.new_status))
            .collect();
        return format!(
            "This is a monitoring-related call from go bear mon . {} . {} .",
            digest_count(n),
            names.join(" . ")
        );
    }
    format!(
        "This is a monitoring-related call from go bear mon . The check . {} . has been recorded . {} . Reason is . {}",
        n.name,
        n.new_status,
        message(n)
    )
}

/// The inline TwiML of a call: `<Response><Say>` the [`voice`] text `</Say></Response>`,
/// the text cut to [`SAY_MAX`].
pub fn voice_twiml(n: &Notification) -> String {
    format!("<Response><Say>{}</Say></Response>", say_text(&voice(n)))
}

/// `text` XML-escaped, cut (between characters, never inside an entity) so that its form
/// URL-encoded length stays within [`SAY_MAX`], with the cut marked.
fn say_text(text: &str) -> String {
    let escaped = xml_escape(text);
    if url_encoded_len(&escaped) <= SAY_MAX {
        return escaped;
    }
    let mark = format!("… [cut, {} bytes in all]", text.len());
    let budget = SAY_MAX.saturating_sub(url_encoded_len(&mark));
    let mut out = String::with_capacity(SAY_MAX);
    let mut used = 0;
    let mut buf = [0u8; 4];
    for c in text.chars() {
        let piece = escape_char(c).unwrap_or_else(|| c.encode_utf8(&mut buf));
        let cost = url_encoded_len(piece);
        if used + cost > budget {
            break;
        }
        used += cost;
        out.push_str(piece);
    }
    out.push_str(&mark);
    out
}

/// The length of `s` as `application/x-www-form-urlencoded` writes it: ASCII letters,
/// digits, `*-._` and space (`+`) take one character, every other byte three (`%XX`).
fn url_encoded_len(s: &str) -> usize {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b" *-._".contains(&b) {
                1
            } else {
                3
            }
        })
        .sum()
}

fn escape_char(c: char) -> Option<&'static str> {
    Some(match c {
        '&' => "&amp;",
        '<' => "&lt;",
        '>' => "&gt;",
        '"' => "&quot;",
        '\'' => "&apos;",
        _ => return None,
    })
}

/// Escapes the five XML special characters.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match escape_char(c) {
            Some(e) => out.push_str(e),
            None => out.push(c),
        }
    }
    out
}

/// The form fields of contact type `http` (gobearmon's webhook), in gobearmon's order (keys
/// sorted): `check_id`, `data` (redacted), `message`, `name`, `status`, `type`.
/// A digest's are those of its first check, with the digest's lines as `message`.
pub fn form_fields(n: &Notification) -> Vec<(&'static str, String)> {
    let message = if n.folded.is_empty() {
        message(n)
    } else {
        format!("{}: {}", digest_count(n), digest_lines(n).join(" "))
    };
    vec![
        ("check_id", n.check_id.to_string()),
        ("data", redact::check_data(&n.data)),
        ("message", message),
        ("name", n.name.clone()),
        ("status", n.new_status.to_string()),
        ("type", n.check_type.clone()),
    ]
}

/// The `schema` value of [`WebhookBody`]. A change that removes or retypes a field gets a new
/// version; new fields may be added within a version.
pub const WEBHOOK_SCHEMA: &str = "gobearmon.webhook.v1";

/// The JSON body of contact type `webhook`, schema `gobearmon.webhook.v1`:
///
/// ```json
/// {
///   "schema": "gobearmon.webhook.v1",
///   "event_id": 42,
///   "test": false,
///   "check": {"id": 7, "name": "web1", "type": "http"},
///   "old_status": "online",
///   "new_status": "offline",
///   "message": "status mismatch, got 500 but expected 200",
///   "time": "2026-11-21T10:00:00.123Z",
///   "confirmed_by": ["w1", "w2"]
/// }
/// ```
///
/// `event_id` is the `check_events` row (0 for a test), also sent as the `Idempotency-Key`
/// header; `time` is the flip's time in UTC (RFC 3339, milliseconds); `confirmed_by` lists the
/// workers whose results made the flip (empty when unknown). The check's parameters are not
/// included.
#[derive(Debug, Serialize)]
pub struct WebhookBody<'a> {
    pub schema: &'static str,
    pub event_id: i64,
    pub test: bool,
    pub check: WebhookCheck<'a>,
    pub old_status: CheckStatus,
    pub new_status: CheckStatus,
    pub message: &'a str,
    pub time: String,
    pub confirmed_by: Vec<&'a str>,
    /// A digest (storm control, caps): every flip it carries, this one first; absent for a
    /// single notification.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub digest: Vec<WebhookBody<'a>>,
}

/// The `check` object of [`WebhookBody`].
#[derive(Debug, Serialize)]
pub struct WebhookCheck<'a> {
    pub id: i64,
    pub name: &'a str,
    #[serde(rename = "type")]
    pub check_type: &'a str,
}

/// The [`WebhookBody`] of `n`, serialized.
pub fn webhook_json(n: &Notification) -> Vec<u8> {
    let messages: Vec<String> = n.all().map(message).collect();
    let mut body = webhook_body(n, &messages[0]);
    if !n.folded.is_empty() {
        body.digest = n
            .all()
            .zip(&messages)
            .map(|(m, text)| webhook_body(m, text))
            .collect();
    }
    // Serializing a struct of strings, integers and enums into memory cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

fn webhook_body<'a>(n: &'a Notification, message: &'a str) -> WebhookBody<'a> {
    WebhookBody {
        schema: WEBHOOK_SCHEMA,
        event_id: n.event_id.0,
        test: n.test,
        check: WebhookCheck {
            id: n.check_id.0,
            name: &n.name,
            check_type: &n.check_type,
        },
        old_status: n.old_status,
        new_status: n.new_status,
        message,
        time: rfc3339_ms(n.time_ms),
        confirmed_by: n.confirmed_by.iter().map(|w| w.0.as_str()).collect(),
        digest: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------
// Meta-alerts: the monitor telling the admin about itself.

/// The no-controller alert: no controller has stamped itself alive since `at_ms`.
pub fn no_controller(at_ms: i64, now_ms: i64) -> String {
    format!(
        "No controller has acted since {} (more than {} s): no check is being run or \
         confirmed, and no notification is sent.",
        rfc3339_ms(at_ms),
        (now_ms - at_ms) / 1000
    )
}

/// A row of table `canaries` that workers cannot run (`problem` names it, redacted).
pub fn bad_canary(problem: &str) -> String {
    format!(
        "A row of table canaries cannot be used: {problem}\n\
         Workers skip it and run the others; fix or delete the row."
    )
}

/// An `sms` or `voice` contact whose `max_per_hour` is 0 or less.
pub fn bad_cap(contact: i64, kind: &str, max_per_hour: i64, default_cap: u32) -> String {
    format!(
        "Contact {contact} ({kind}) has max_per_hour = {max_per_hour}, which would hold every \
         message to it forever. It gets the default cap instead ([twilio] max_per_hour = \
         {default_cap} messages an hour). Set a positive max_per_hour, or NULL for the default."
    )
}

/// Results of the result history dropped since `since_ms` (the writer's buffer was full).
pub fn history_dropped(dropped: u64, since_ms: i64) -> String {
    format!(
        "{dropped} check results were dropped from the result history since {} because the \
         history writer fell behind or the database was away (its buffer is full). Uptime and \
         charts lack them; alerting is not affected.",
        rfc3339_ms(since_ms)
    )
}

/// A history round (`write` or `upkeep`) that keeps failing.
pub fn history_failing(round: &str, failures: u32, error: &str) -> String {
    let what = match round {
        "write" => "Writing check results to the result history",
        _ => "Rolling up and pruning the result history",
    };
    format!(
        "{what} has failed {failures} times in a row. Last error: {error}\n\
         The controller keeps trying; alerting is not affected."
    )
}

/// A meta-alert that its channel refused for good.
pub fn meta_undelivered(channel: &str, subject: &str, message: &str, error: &str) -> String {
    format!(
        "A meta-alert could not be delivered to {channel} (attempts used up). Last error: \
         {error}\n\nThe alert: {subject}\n\n{message}"
    )
}

/// Why an acknowledgement of incident `event` was refused: it is no longer the open one
/// (`open`: the incident open now). `how` says how to acknowledge the open one, where the
/// person is (the command line, the dashboard).
pub fn stale_ack(check: &str, event: i64, open: Option<i64>, how: &str) -> String {
    match open {
        Some(open) => format!(
            "Incident {event} of check {check} is no longer open: nothing was acknowledged. \
             Incident {open} is open now; {how}"
        ),
        None => format!(
            "Incident {event} of check {check} is no longer open and the check has no open \
             incident: nothing was acknowledged."
        ),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for milliseconds since the Unix epoch (UTC).
pub fn rfc3339_ms(unix_ms: i64) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_default()
}

/// The body of the "database unreachable" meta-alert.
pub fn database_unreachable(limit: std::time::Duration, nodes: usize) -> String {
    let which = if nodes == 1 {
        "The database server".to_string()
    } else {
        format!("None of the {nodes} database nodes")
    };
    format!(
        "{which} has answered for {limit:?} ([controller] db_down_alert).\n\
         Nothing can be recorded meanwhile. Checks keep running, and status changes detected \
         now are kept in memory and recorded and notified, in order, once a node answers. \
         The dead man's switch stops beating until then.\n"
    )
}

/// The counters behind a listener's connection-pressure notice.
#[derive(Debug, Clone, Copy)]
pub struct PressureCounts {
    /// Connections closed at once because their source was at its cap (since start).
    pub refused: u64,
    /// Unauthenticated connections closed to make room (since start).
    pub shed: u64,
    /// Unauthenticated connections open now.
    pub open: usize,
    /// Node connections open now.
    pub nodes: usize,
    pub max_connections: usize,
    pub max_per_source: usize,
}

/// The admin notice of a listener that sheds or refuses connections: `(subject, body)`.
pub fn listener_pressure(what: &str, addr: &str, c: PressureCounts) -> (String, String) {
    let subject = "gobearmon: a listener is shedding connections".to_string();
    let body = format!(
        "{what} at {addr} is under connection pressure: clients without credentials hold \
         {open} of its {max} unauthenticated slots.\n\
         Since start: {refused} connections closed at once because their source address \
         already held {per} ([listen] max_per_source), {shed} idle ones closed to make room \
         ([listen] max_connections).\n\
         Node traffic is still served: {nodes} node connections are open, and they are never \
         shed. If this is not an attack, raise the [listen] limits.\n",
        open = c.open,
        max = c.max_connections,
        refused = c.refused,
        per = c.max_per_source,
        shed = c.shed,
        nodes = c.nodes,
    );
    (subject, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CheckId, NodeId};
    use crate::notify::EventId;

    fn flip(status: CheckStatus, message: &str) -> Notification {
        Notification {
            event_id: EventId(42),
            check_id: CheckId(7),
            name: "my http check".into(),
            check_type: "http".into(),
            data: r#"{"url":"http://x/","password":"hunter2"}"#.into(),
            old_status: status.opposite(),
            new_status: status,
            message: message.into(),
            time_ms: 1_795_000_000_123,
            confirmed_by: vec![NodeId("w1".into()), NodeId("w2".into())],
            test: false,
            reminder: 0,
            folded: Vec::new(),
        }
    }

    #[test]
    fn email_texts_are_gobearmons() {
        let n = flip(CheckStatus::Offline, "connection refused");
        assert_eq!(email_subject(&n), "Check offline: my http check");
        assert_eq!(
            email_body(&n),
            "Check [my http check] is now offline: connection refused\n\nID: 7\nName: my http check\nType: http\nData: {\"password\":\"<redacted>\",\"url\":\"http://x/\"}\n\ngobearmon"
        );
        let n = flip(CheckStatus::Online, "");
        assert_eq!(email_subject(&n), "Check online: my http check");
        assert!(email_body(&n).starts_with("Check [my http check] is now online.\n\nID: 7\n"));
        assert!(!email_body(&n).contains("hunter2"));
    }

    #[test]
    fn sms_and_voice_texts_are_gobearmons() {
        let n = flip(CheckStatus::Offline, "timeout <5s> & more");
        assert_eq!(
            sms(&n),
            "Check [my http check] is now offline: timeout <5s> & more"
        );
        assert_eq!(
            voice(&n),
            "This is a monitoring-related call from go bear mon . The check . my http check . has been recorded . offline . Reason is . timeout <5s> & more"
        );
        assert_eq!(
            voice_twiml(&n),
            "<Response><Say>This is a monitoring-related call from go bear mon . The check . my http check . has been recorded . offline . Reason is . timeout &lt;5s&gt; &amp; more</Say></Response>"
        );
        assert!(voice(&flip(CheckStatus::Online, "")).ends_with("Reason is . "));
    }

    #[test]
    fn long_sms_is_cut_within_twilios_limit_on_a_char_boundary() {
        // Two- and four-byte characters: a cut by bytes would split them.
        let n = flip(CheckStatus::Offline, &"é😀".repeat(2000));
        let text = sms(&n);
        assert!(text.len() <= SMS_MAX, "{} bytes", text.len());
        assert!(text.encode_utf16().count() <= 1600);
        assert!(text.starts_with("Check [my http check] is now offline: é😀é😀"));
        let whole = headline(&n).len();
        assert!(
            text.ends_with(&format!("… [cut, {whole} bytes in all]")),
            "{text}"
        );
        // A text that fits is left alone.
        let short = flip(CheckStatus::Offline, &"é".repeat(700));
        assert_eq!(sms(&short), headline(&short));
    }

    #[test]
    fn long_voice_twiml_is_cut_within_twilios_limits() {
        // Characters that XML-escape to entities and multi-byte ones.
        let n = flip(CheckStatus::Offline, &"<&>\"' ü€😀 word".repeat(400));
        let twiml = voice_twiml(&n);
        let say = twiml
            .strip_prefix("<Response><Say>")
            .and_then(|t| t.strip_suffix("</Say></Response>"))
            .expect("one Say in a Response");
        assert!(url_encoded_len(say) <= SAY_MAX, "{}", url_encoded_len(say));
        assert!(say.len() <= 3000 && twiml.chars().count() <= 4000);
        assert!(say.starts_with("This is a monitoring-related call from go bear mon . The check . my http check . has been recorded . offline . Reason is . &lt;&amp;&gt;&quot;&apos; ü€😀 word"));
        let whole = voice(&n).len();
        assert!(
            say.ends_with(&format!("… [cut, {whole} bytes in all]")),
            "{say}"
        );
        // No entity is cut in half: before the mark the text ends with a whole character.
        let body = say.split("… [cut,").next().unwrap();
        let last_amp = body.rfind('&').unwrap();
        assert!(body[last_amp..].contains(';'), "{}", &body[last_amp..]);
        // A usual text is left whole.
        let usual = flip(CheckStatus::Offline, "connection refused");
        assert_eq!(
            voice_twiml(&usual),
            format!(
                "<Response><Say>{}</Say></Response>",
                xml_escape(&voice(&usual))
            )
        );
    }

    #[test]
    fn form_fields_are_sorted_and_redacted() {
        let fields = form_fields(&flip(CheckStatus::Offline, "down"));
        let keys: Vec<_> = fields.iter().map(|(k, _)| *k).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert!(!fields.iter().any(|(_, v)| v.contains("hunter2")));
    }

    #[test]
    fn webhook_body_follows_schema_v1() {
        let v: serde_json::Value =
            serde_json::from_slice(&webhook_json(&flip(CheckStatus::Offline, "down"))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "schema": "gobearmon.webhook.v1",
                "event_id": 42,
                "test": false,
                "check": {"id": 7, "name": "my http check", "type": "http"},
                "old_status": "online",
                "new_status": "offline",
                "message": "down",
                "time": "2026-11-18T11:06:40.123Z",
                "confirmed_by": ["w1", "w2"]
            })
        );
    }

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
    }

    fn digest_of_three() -> Notification {
        let mut b = flip(CheckStatus::Offline, "timeout");
        b.name = "db".into();
        b.event_id = EventId(43);
        let mut c = flip(CheckStatus::Online, "");
        c.name = "mail".into();
        c.reminder = 0;
        let mut d = flip(CheckStatus::Offline, "refused hunter2");
        d.name = "dns".into();
        d.reminder = 2;
        // A digest folded into another is flattened.
        let inner = b.digest(vec![d]);
        flip(CheckStatus::Offline, "connection refused").digest(vec![inner, c])
    }

    #[test]
    fn a_digest_lists_every_check_in_each_channel() {
        let n = digest_of_three();
        assert_eq!(n.folded.len(), 3);
        assert_eq!(
            email_subject(&n),
            "gobearmon: 4 checks changed (3 offline, 1 online)"
        );
        let body = email_body(&n);
        for line in [
            "Check [my http check] is now offline: connection refused",
            "Check [db] is now offline: timeout",
            "Check [dns] is now offline: refused <redacted> (reminder 2)",
            "Check [mail] is now online.",
        ] {
            assert!(body.contains(line), "{line:?} missing from {body}");
        }
        assert!(!body.contains("hunter2"), "{body}");
        let sms = sms(&n);
        assert!(
            sms.starts_with(
                "gobearmon: 4 checks changed (3 offline, 1 online). Check [my http check]"
            ),
            "{sms}"
        );
        assert!(sms.contains("Check [mail] is now online."), "{sms}");
        let voice = voice(&n);
        assert!(
            voice.contains("4 checks changed")
                && voice.contains("db . offline")
                && voice.contains("mail . online"),
            "{voice}"
        );
        let json: serde_json::Value = serde_json::from_slice(&webhook_json(&n)).unwrap();
        let names: Vec<&str> = json["digest"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["check"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["my http check", "db", "dns", "mail"]);
        assert_eq!(json["event_id"], 42);
        assert_eq!(n.idempotency_key(), "42-digest3");
        let single: serde_json::Value =
            serde_json::from_slice(&webhook_json(&flip(CheckStatus::Offline, "x"))).unwrap();
        assert!(single.get("digest").is_none());
        let fields = form_fields(&n);
        assert!(
            fields[2].1.starts_with("4 checks changed"),
            "{:?}",
            fields[2]
        );
    }

    #[test]
    fn a_digest_survives_the_outbox_payload_round_trip() {
        let n = digest_of_three();
        let back: Notification = serde_json::from_str(&serde_json::to_string(&n).unwrap()).unwrap();
        assert_eq!(back, n);
        let plain = flip(CheckStatus::Online, "");
        assert!(!serde_json::to_string(&plain).unwrap().contains("folded"));
    }
}
