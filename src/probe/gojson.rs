//! Just enough of Go's `encoding/json` decoding rules to read gobearmon's check parameters
//! the way gobearmon did: object members are decoded in document order (a later key that maps
//! to the same field overwrites an earlier one), keys match field names case-insensitively,
//! unknown keys are ignored, `null` leaves a field at its default, and a value of the wrong
//! JSON type is an error worded like Go's.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value that keeps object members in document order (serde_json's `Value` sorts them).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// Go's name for the JSON kind, as it appears in `cannot unmarshal <kind> into ...`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "bool",
            Json::Number(_) => "number",
            Json::String(_) => "string",
            Json::Array(_) => "array",
            Json::Object(_) => "object",
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Json>()? {
            members.push((k, v));
        }
        Ok(Json::Object(members))
    }
}

/// Parses a whole document (trailing non-whitespace is an error, as in Go).
pub(crate) fn parse(data: &str) -> Result<Json, String> {
    let mut de = serde_json::Deserializer::from_str(data);
    let value = Json::deserialize(&mut de).map_err(go_syntax_error)?;
    de.end().map_err(go_syntax_error)?;
    Ok(value)
}

fn go_syntax_error(e: serde_json::Error) -> String {
    if e.is_eof() {
        // Go's wording for a document that stops early (including an empty one).
        "unexpected end of JSON input".to_owned()
    } else {
        e.to_string()
    }
}

/// Go's case-insensitive key comparison (`bytes.EqualFold` plus the two special folds Go's
/// decoder knows: the Kelvin sign folds to `k` and the long s to `s`).
pub(crate) fn key_matches(key: &str, field: &str) -> bool {
    let fold = |c: char| match c {
        '\u{212A}' => 'k',
        '\u{017F}' => 's',
        c => c.to_ascii_lowercase(),
    };
    key.chars().map(fold).eq(field.chars().map(fold))
}

/// Decoding of one parameters struct: the Go struct name makes the error messages read like
/// gobearmon's (`json: cannot unmarshal string into Go struct field TcpCheckParams.timeout of
/// type int`).
pub(crate) struct Fields<'a> {
    go_struct: &'static str,
    members: &'a [(String, Json)],
}

impl<'a> Fields<'a> {
    /// The top-level value must be an object (or `null`, which Go accepts and decodes to all
    /// defaults).
    pub(crate) fn of(go_struct: &'static str, doc: &'a Json) -> Result<Fields<'a>, String> {
        match doc {
            Json::Object(members) => Ok(Fields { go_struct, members }),
            Json::Null => Ok(Fields {
                go_struct,
                members: &[],
            }),
            other => Err(format!(
                "json: cannot unmarshal {} into Go value of type gobearmon.{go_struct}",
                other.kind()
            )),
        }
    }

    /// The values given for `field`, in document order (the last non-null one wins).
    fn values(&self, field: &'static str) -> impl Iterator<Item = &'a Json> {
        self.members
            .iter()
            .filter(move |(k, _)| key_matches(k, field))
            .map(|(_, v)| v)
    }

    fn mismatch(&self, field: &str, value: &Json, go_type: &str) -> String {
        let what = match value {
            Json::Number(n) => format!("number {n}"),
            other => other.kind().to_owned(),
        };
        format!(
            "json: cannot unmarshal {what} into Go struct field {}.{field} of type {go_type}",
            self.go_struct
        )
    }

    /// The last non-null value given for `field`, whatever its JSON type.
    pub(crate) fn raw(&self, field: &'static str) -> Option<&'a Json> {
        self.values(field)
            .filter(|v| !matches!(v, Json::Null))
            .last()
    }

    pub(crate) fn string(&self, field: &'static str) -> Result<Option<String>, String> {
        let mut out = None;
        for v in self.values(field) {
            match v {
                Json::Null => {}
                Json::String(s) => out = Some(s.clone()),
                other => return Err(self.mismatch(field, other, "string")),
            }
        }
        Ok(out)
    }

    /// A Go `int` (64-bit): a JSON number without fraction or exponent in the i64 range.
    pub(crate) fn int(&self, field: &'static str) -> Result<Option<i64>, String> {
        let mut out = None;
        for v in self.values(field) {
            match v {
                Json::Null => {}
                Json::Number(n) if n.as_i64().is_some() => out = n.as_i64(),
                other => return Err(self.mismatch(field, other, "int")),
            }
        }
        Ok(out)
    }

    pub(crate) fn bool(&self, field: &'static str) -> Result<Option<bool>, String> {
        let mut out = None;
        for v in self.values(field) {
            match v {
                Json::Null => {}
                Json::Bool(b) => out = Some(*b),
                other => return Err(self.mismatch(field, other, "bool")),
            }
        }
        Ok(out)
    }

    /// A Go `map[string]string`: members in document order; a `null` member value decodes to
    /// the empty string as in Go. Several objects for the same field merge, as Go's decoder
    /// reuses the map.
    pub(crate) fn string_map(
        &self,
        field: &'static str,
    ) -> Result<Option<Vec<(String, String)>>, String> {
        let mut out: Option<Vec<(String, String)>> = None;
        for v in self.values(field) {
            match v {
                Json::Null => {}
                Json::Object(members) => {
                    let map = out.get_or_insert_with(Vec::new);
                    for (k, v) in members {
                        let value = match v {
                            Json::String(s) => s.clone(),
                            Json::Null => String::new(),
                            other => return Err(self.mismatch(field, other, "string")),
                        };
                        map.push((k.clone(), value));
                    }
                }
                other => return Err(self.mismatch(field, other, "map[string]string")),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_fold_like_go() {
        assert!(key_matches("URL", "url"));
        assert!(key_matches("Expect_Status", "expect_status"));
        assert!(key_matches("\u{212A}ey", "key"));
        assert!(!key_matches("urls", "url"));
    }

    #[test]
    fn members_keep_document_order() {
        let doc = parse(r#"{"b":1,"a":{"z":1,"y":2}}"#).unwrap();
        let Json::Object(members) = doc else {
            panic!("an object")
        };
        let keys: Vec<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["b", "a"]);
        let Json::Object(inner) = &members[1].1 else {
            panic!("an object")
        };
        assert_eq!(inner[0].0, "z");
    }

    #[test]
    fn last_key_wins_and_null_keeps_default() {
        let doc = parse(r#"{"URL":"a","url":"b","Url":null}"#).unwrap();
        let f = Fields::of("HttpCheckParams", &doc).unwrap();
        assert_eq!(f.string("url").unwrap().as_deref(), Some("b"));
    }

    #[test]
    fn type_mismatch_reads_like_go() {
        let doc = parse(r#"{"timeout":"15"}"#).unwrap();
        let f = Fields::of("TcpCheckParams", &doc).unwrap();
        assert_eq!(
            f.int("timeout").unwrap_err(),
            "json: cannot unmarshal string into Go struct field TcpCheckParams.timeout of type int"
        );
        let doc = parse(r#"{"timeout":15.5}"#).unwrap();
        let f = Fields::of("TcpCheckParams", &doc).unwrap();
        assert_eq!(
            f.int("timeout").unwrap_err(),
            "json: cannot unmarshal number 15.5 into Go struct field TcpCheckParams.timeout of type int"
        );
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(parse("").unwrap_err(), "unexpected end of JSON input");
        assert_eq!(parse("{").unwrap_err(), "unexpected end of JSON input");
        assert!(parse("{not json").is_err());
        assert!(parse("{} x").is_err());
        let doc = parse("[1]").unwrap();
        assert_eq!(
            Fields::of("HttpCheckParams", &doc).err().unwrap(),
            "json: cannot unmarshal array into Go value of type gobearmon.HttpCheckParams"
        );
    }
}
