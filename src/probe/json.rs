//! `expect_json`: conditions on an `http` check's JSON response body, parsed once when the
//! spec is loaded, judged against the (capped) body on every run.
//!
//! A condition is an object with a `path`, exactly one operator and optionally `match`:
//!
//! ```json
//! [{"path": "$.status", "equals": "ok"},
//!  {"path": "$.queue.depth", "less_than": 100},
//!  {"path": "$.items", "min_length": 1},
//!  {"path": "$.items[*].state", "equals": "up", "match": "any"}]
//! ```
//!
//! Paths are RFC 9535 JSONPath, parsed by `serde_json_path`: `$.a.b`, `$.a[0]`, `$.a[*]` and
//! `$['odd key']` are the common forms; filters (`$.a[?@.up == true]`) work too. A path
//! selects a list of values (none, one, or many through `[*]`).
//!
//! Operators, applied to each selected value:
//! - `equals` / `not_equals` (any JSON value): equal as JSON; numbers compare by value
//!   (`1` equals `1.0`).
//! - `less_than` / `greater_than` (a number): the value must be a number and compare so.
//! - `contains` (any JSON value): a string value contains the string given; an array value
//!   has an element equal to the value given.
//! - `min_length` / `max_length` (a non-negative integer): the length of an array, of a
//!   string (in characters) or of an object (its members) is at least / at most that.
//! - `exists` (`true` or `false`): the path selects something / nothing. It judges the list,
//!   so `match` does not apply to it.
//!
//! `match` says how a list of several values passes: `"all"` (the default: every selected
//! value satisfies the operator) or `"any"` (at least one does). A path that selects nothing
//! fails every operator but `exists: false`.
//!
//! Every condition must hold; the message names the first that does not and the value found.
//! A body that is not JSON, or larger than [`super::BODY_CAP`], is offline.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json_path::JsonPath;

use super::gojson::{Json, key_matches};
use super::outcome::cut_text;

/// Longest rendering of a found value in a message.
const VALUE_IN_MESSAGE: usize = 120;

/// One `expect_json` entry, ready to judge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawCondition", into = "RawCondition")]
pub struct JsonCondition {
    /// The path as written in the check.
    text: String,
    path: JsonPath,
    pub op: JsonOp,
    pub matching: JsonMatch,
}

/// What a selected value must satisfy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JsonOp {
    Equals(Value),
    NotEquals(Value),
    LessThan(serde_json::Number),
    GreaterThan(serde_json::Number),
    Contains(Value),
    MinLength(u64),
    MaxLength(u64),
    Exists(bool),
}

/// How a path that selects several values passes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JsonMatch {
    #[default]
    All,
    Any,
}

/// The serialised form (controller to worker): the path as text.
#[derive(Serialize, Deserialize)]
struct RawCondition {
    path: String,
    op: JsonOp,
    #[serde(rename = "match")]
    matching: JsonMatch,
}

impl TryFrom<RawCondition> for JsonCondition {
    type Error = String;
    fn try_from(r: RawCondition) -> Result<JsonCondition, String> {
        let path =
            JsonPath::parse(&r.path).map_err(|e| format!("invalid path {:?}: {e}", r.path))?;
        Ok(JsonCondition {
            text: r.path,
            path,
            op: r.op,
            matching: r.matching,
        })
    }
}

impl From<JsonCondition> for RawCondition {
    fn from(c: JsonCondition) -> RawCondition {
        RawCondition {
            path: c.text,
            op: c.op,
            matching: c.matching,
        }
    }
}

const OPERATORS: &str =
    "equals, not_equals, less_than, greater_than, contains, min_length, max_length or exists";

/// `expect_json` as given in the check's data: an array of condition objects.
pub(crate) fn parse_conditions(v: &Json) -> Result<Vec<JsonCondition>, String> {
    let Json::Array(items) = v else {
        return Err(format!(
            "invalid expect_json: expected an array of conditions, got {}",
            v.kind()
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            parse_condition(item).map_err(|e| format!("invalid expect_json[{i}]: {e}"))
        })
        .collect()
}

fn parse_condition(item: &Json) -> Result<JsonCondition, String> {
    let Json::Object(members) = item else {
        return Err(format!("expected an object, got {}", item.kind()));
    };
    let mut text = None;
    let mut matching = JsonMatch::default();
    let mut op = None;
    for (key, value) in members {
        let value = to_value(value);
        if key_matches(key, "path") {
            match value {
                Value::String(s) => text = Some(s),
                other => return Err(format!("path must be a string, got {other}")),
            }
        } else if key_matches(key, "match") {
            matching = match value.as_str() {
                Some("all") => JsonMatch::All,
                Some("any") => JsonMatch::Any,
                _ => return Err(format!("match must be \"any\" or \"all\", got {value}")),
            };
        } else {
            let parsed = parse_op(key, value)?;
            if op.replace(parsed).is_some() {
                return Err(format!("more than one operator (use one of {OPERATORS})"));
            }
        }
    }
    let text = text.ok_or("missing path")?;
    let op = op.ok_or_else(|| format!("missing operator (one of {OPERATORS})"))?;
    let path = JsonPath::parse(&text).map_err(|e| format!("invalid path {text:?}: {e}"))?;
    Ok(JsonCondition {
        text,
        path,
        op,
        matching,
    })
}

fn parse_op(key: &str, value: Value) -> Result<JsonOp, String> {
    let number = |v: Value| match v {
        Value::Number(n) => Ok(n),
        other => Err(format!("{key} needs a number, got {other}")),
    };
    let length = |v: &Value| {
        v.as_u64()
            .ok_or_else(|| format!("{key} needs a non-negative integer, got {v}"))
    };
    Ok(match key.to_ascii_lowercase().as_str() {
        "equals" => JsonOp::Equals(value),
        "not_equals" => JsonOp::NotEquals(value),
        "less_than" => JsonOp::LessThan(number(value)?),
        "greater_than" => JsonOp::GreaterThan(number(value)?),
        "contains" => JsonOp::Contains(value),
        "min_length" => JsonOp::MinLength(length(&value)?),
        "max_length" => JsonOp::MaxLength(length(&value)?),
        "exists" => match value {
            Value::Bool(b) => JsonOp::Exists(b),
            other => return Err(format!("exists needs true or false, got {other}")),
        },
        _ => return Err(format!("unknown operator {key:?} (expected {OPERATORS})")),
    })
}

fn to_value(j: &Json) -> Value {
    match j {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => Value::Number(n.clone()),
        Json::String(s) => Value::String(s.clone()),
        Json::Array(a) => Value::Array(a.iter().map(to_value).collect()),
        Json::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), to_value(v))).collect()),
    }
}

impl fmt::Display for JsonCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, arg) = match &self.op {
            JsonOp::Equals(v) => ("equals", v.to_string()),
            JsonOp::NotEquals(v) => ("not_equals", v.to_string()),
            JsonOp::LessThan(n) => ("less_than", n.to_string()),
            JsonOp::GreaterThan(n) => ("greater_than", n.to_string()),
            JsonOp::Contains(v) => ("contains", v.to_string()),
            JsonOp::MinLength(n) => ("min_length", n.to_string()),
            JsonOp::MaxLength(n) => ("max_length", n.to_string()),
            JsonOp::Exists(b) => ("exists", b.to_string()),
        };
        write!(
            f,
            "{} {name} {}",
            self.text,
            cut_text(&arg, VALUE_IN_MESSAGE)
        )?;
        if self.matching == JsonMatch::Any {
            f.write_str(" (match any)")?;
        }
        Ok(())
    }
}

/// Judges `body` against every condition: `None` when all hold, else the offline message.
pub(crate) fn judge(conditions: &[JsonCondition], body: &[u8]) -> Option<String> {
    let doc: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Some(format!("expect_json: the response body is not JSON: {e}")),
    };
    conditions.iter().enumerate().find_map(|(i, c)| {
        c.failure(&doc)
            .map(|why| format!("expect_json condition {} failed: {c}: {why}", i + 1))
    })
}

impl JsonCondition {
    /// Why this condition does not hold for `doc`, naming the value found.
    fn failure(&self, doc: &Value) -> Option<String> {
        let nodes = self.path.query_located(doc).all();
        if let JsonOp::Exists(want) = self.op {
            return match (want, nodes.first()) {
                (true, None) => Some("nothing found at that path".to_owned()),
                (false, Some(n)) => Some(format!("found {} at {}", shown(n.node()), n.location())),
                _ => None,
            };
        }
        let Some(first) = nodes.first() else {
            return Some("nothing found at that path".to_owned());
        };
        match self.matching {
            JsonMatch::All => nodes.iter().find(|n| !self.op.holds(n.node())).map(|n| {
                if nodes.len() == 1 {
                    format!("found {}", shown(n.node()))
                } else {
                    format!("found {} at {}", shown(n.node()), n.location())
                }
            }),
            JsonMatch::Any if nodes.iter().any(|n| self.op.holds(n.node())) => None,
            JsonMatch::Any if nodes.len() == 1 => Some(format!("found {}", shown(first.node()))),
            JsonMatch::Any => Some(format!(
                "none of {} values matches, the first is {} at {}",
                nodes.len(),
                shown(first.node()),
                first.location()
            )),
        }
    }
}

impl JsonOp {
    fn holds(&self, v: &Value) -> bool {
        match self {
            JsonOp::Equals(want) => same(v, want),
            JsonOp::NotEquals(want) => !same(v, want),
            JsonOp::LessThan(n) => compare(v, n).is_some_and(|o| o.is_lt()),
            JsonOp::GreaterThan(n) => compare(v, n).is_some_and(|o| o.is_gt()),
            JsonOp::Contains(want) => match (v, want) {
                (Value::String(s), Value::String(w)) => s.contains(w.as_str()),
                (Value::Array(items), w) => items.iter().any(|i| same(i, w)),
                _ => false,
            },
            JsonOp::MinLength(n) => length(v).is_some_and(|l| l >= *n),
            JsonOp::MaxLength(n) => length(v).is_some_and(|l| l <= *n),
            // Judged on the node list in `failure`.
            JsonOp::Exists(_) => true,
        }
    }
}

/// JSON equality with numbers compared by value, so `1` equals `1.0`.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, a)| y.get(k).is_some_and(|b| same(a, b)))
        }
        _ => a == b,
    }
}

fn compare(v: &Value, n: &serde_json::Number) -> Option<std::cmp::Ordering> {
    match (v.as_i64(), n.as_i64()) {
        (Some(a), Some(b)) => Some(a.cmp(&b)),
        _ => v.as_f64()?.partial_cmp(&n.as_f64()?),
    }
}

fn length(v: &Value) -> Option<u64> {
    Some(match v {
        Value::Array(a) => a.len() as u64,
        Value::String(s) => s.chars().count() as u64,
        Value::Object(m) => m.len() as u64,
        _ => return None,
    })
}

fn shown(v: &Value) -> String {
    cut_text(&v.to_string(), VALUE_IN_MESSAGE).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conditions(text: &str) -> Result<Vec<JsonCondition>, String> {
        parse_conditions(&super::super::gojson::parse(text).unwrap())
    }

    fn verdict(conds: &str, body: &str) -> Option<String> {
        judge(&conditions(conds).unwrap(), body.as_bytes())
    }

    const BODY: &str = r#"{"status":"ok","queue":{"depth":7},"version":"1.2.3",
        "items":[{"state":"up","n":1},{"state":"down","n":2.0}],"empty":[],"none":null}"#;

    #[test]
    fn every_operator_passes_and_fails() {
        let cases = [
            (
                r#"{"path":"$.status","equals":"ok"}"#,
                r#"{"path":"$.status","equals":"down"}"#,
            ),
            (
                r#"{"path":"$.status","not_equals":"down"}"#,
                r#"{"path":"$.status","not_equals":"ok"}"#,
            ),
            (
                r#"{"path":"$.queue.depth","less_than":100}"#,
                r#"{"path":"$.queue.depth","less_than":7}"#,
            ),
            (
                r#"{"path":"$.queue.depth","greater_than":6.5}"#,
                r#"{"path":"$.status","greater_than":1}"#,
            ),
            (
                r#"{"path":"$.version","contains":".2."}"#,
                r#"{"path":"$.version","contains":"9"}"#,
            ),
            (
                r#"{"path":"$.items","min_length":2}"#,
                r#"{"path":"$.empty","min_length":1}"#,
            ),
            (
                r#"{"path":"$.version","max_length":5}"#,
                r#"{"path":"$.version","max_length":4}"#,
            ),
            (
                r#"{"path":"$.none","exists":true}"#,
                r#"{"path":"$.gone","exists":true}"#,
            ),
            (
                r#"{"path":"$.gone","exists":false}"#,
                r#"{"path":"$.status","exists":false}"#,
            ),
            (
                r#"{"path":"$.items[1].n","equals":2}"#,
                r#"{"path":"$.items[0].n","equals":2}"#,
            ),
            (
                r#"{"path":"$.items[*].state","equals":"up","match":"any"}"#,
                r#"{"path":"$.items[*].state","equals":"up"}"#,
            ),
        ];
        for (pass, fail) in cases {
            assert_eq!(verdict(&format!("[{pass}]"), BODY), None, "{pass}");
            assert!(verdict(&format!("[{fail}]"), BODY).is_some(), "{fail}");
        }
    }

    #[test]
    fn messages_name_the_condition_and_the_value() {
        assert_eq!(
            verdict(
                r#"[{"path":"$.status","equals":"ok"},{"path":"$.queue.depth","less_than":5}]"#,
                BODY
            )
            .unwrap(),
            "expect_json condition 2 failed: $.queue.depth less_than 5: found 7"
        );
        assert_eq!(
            verdict(r#"[{"path":"$.items[*].state","equals":"up"}]"#, BODY).unwrap(),
            "expect_json condition 1 failed: $.items[*].state equals \"up\": found \"down\" at \
             $['items'][1]['state']"
        );
        assert_eq!(
            verdict(
                r#"[{"path":"$.items[*].state","equals":"x","match":"any"}]"#,
                BODY
            )
            .unwrap(),
            "expect_json condition 1 failed: $.items[*].state equals \"x\" (match any): none of \
             2 values matches, the first is \"up\" at $['items'][0]['state']"
        );
        assert_eq!(
            verdict(r#"[{"path":"$.gone.deeper","equals":1}]"#, BODY).unwrap(),
            "expect_json condition 1 failed: $.gone.deeper equals 1: nothing found at that path"
        );
        assert!(
            verdict(r#"[{"path":"$.a","equals":1}]"#, "<html>")
                .unwrap()
                .starts_with("expect_json: the response body is not JSON: ")
        );
    }

    #[test]
    fn spec_errors_are_clear() {
        let err = |t: &str| conditions(t).unwrap_err();
        assert!(err(r#"{"path":"$.a"}"#).starts_with("invalid expect_json: expected an array"));
        assert_eq!(
            err(r#"[{"path":"$.a","equal":1}]"#),
            format!("invalid expect_json[0]: unknown operator \"equal\" (expected {OPERATORS})")
        );
        assert!(
            err(r#"[{"path":"$.a[","equals":1}]"#)
                .starts_with("invalid expect_json[0]: invalid path \"$.a[\": ")
        );
        assert!(
            err(r#"[{"path":"$.a","equals":1,"exists":true}]"#).contains("more than one operator")
        );
        assert!(err(r#"[{"equals":1}]"#).ends_with("missing path"));
        assert!(err(r#"[{"path":"$.a","less_than":"7"}]"#).contains("less_than needs a number"));
        assert!(err(r#"[{"path":"$.a","min_length":-1}]"#).contains("non-negative integer"));
        assert!(err(r#"[{"path":"$.a","exists":1}]"#).contains("true or false"));
        assert!(
            err(r#"[{"path":"$.a","exists":true,"match":"some"}]"#).contains("\"any\" or \"all\"")
        );
    }

    #[test]
    fn serialised_form_round_trips() {
        let c = conditions(r#"[{"path":"$.items[*].n","less_than":3,"match":"any"}]"#).unwrap();
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(
            text,
            r#"[{"path":"$.items[*].n","op":{"less_than":3},"match":"any"}]"#
        );
        let back: Vec<JsonCondition> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, c);
    }
}
