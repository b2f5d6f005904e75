//! Bedrock's RetrievalFilter: parsed from the request JSON with errors that name
//! the offending member, and evaluated against a chunk's metadata.
//!
//! The wire shape is a union with exactly one member per object:
//! `equals | notEquals | greaterThan | greaterThanOrEquals | lessThan |
//! lessThanOrEquals | in | notIn | startsWith | listContains | stringContains`
//! each holding `{"key": ..., "value": ...}`, and `andAll | orAll` each holding
//! a list of at least two filters.
//!
//! Semantics (what [`Filter::matches`] does, and what every other vector store
//! must reproduce):
//! - `equals`: the chunk has the key and its value equals `value`. Numbers
//!   compare by value (`1` equals `1.0`); strings and booleans exactly; a list
//!   equals a list with the same elements in the same order. A scalar never
//!   equals a list: use `listContains` for list attributes.
//! - `notEquals` is exactly `!equals`, so a chunk **without** the key matches
//!   (as in Bedrock's default OpenSearch store, where it is a `must_not` term).
//! - `greaterThan`, `greaterThanOrEquals`, `lessThan`, `lessThanOrEquals`:
//!   the value must be a number; the chunk matches when its value is a number
//!   that compares so. A missing or non-numeric attribute does not match.
//! - `in`: the chunk's value equals (as in `equals`) one of the listed values.
//!   `notIn` is exactly `!in`, so a chunk without the key matches.
//! - `startsWith`: the chunk's value is a string that begins with `value`.
//! - `listContains`: the chunk's value is a list with an element equal to
//!   `value`.
//! - `stringContains`: the chunk's value is a string containing `value`, or a
//!   list with a string element containing it.
//! - `andAll` / `orAll`: every / any member matches.

use std::fmt;

use serde_json::{Map, Value};

/// Deepest nesting accepted; a bare condition has depth 1, an `andAll` of
/// conditions depth 2.
pub const MAX_DEPTH: usize = 5;
/// Most leaf conditions in one filter.
pub const MAX_CONDITIONS: usize = 50;
/// Most values in one `in` / `notIn` list.
pub const MAX_IN_VALUES: usize = 100;
/// Longest metadata key, in characters.
pub const MAX_KEY_CHARS: usize = 256;
/// Longest string value, in characters.
pub const MAX_STRING_CHARS: usize = 2048;

/// The comparison operators of a [`Filter::Compare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Equals,
    NotEquals,
    GreaterThan,
    GreaterThanOrEquals,
    LessThan,
    LessThanOrEquals,
}

impl CompareOp {
    /// The member name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            CompareOp::Equals => "equals",
            CompareOp::NotEquals => "notEquals",
            CompareOp::GreaterThan => "greaterThan",
            CompareOp::GreaterThanOrEquals => "greaterThanOrEquals",
            CompareOp::LessThan => "lessThan",
            CompareOp::LessThanOrEquals => "lessThanOrEquals",
        }
    }

    /// True for the four ordering operators, whose value is always a number.
    pub fn is_ordering(self) -> bool {
        !matches!(self, CompareOp::Equals | CompareOp::NotEquals)
    }
}

/// A parsed, validated RetrievalFilter. Values are as validated by
/// [`Filter::parse`]: ordering comparisons hold a number, `In` holds 1 to
/// [`MAX_IN_VALUES`] scalars, `ListContains` a scalar, `AndAll`/`OrAll` two or
/// more members.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `equals`, `notEquals` (value: string, number, boolean or list of
    /// scalars) and the ordering operators (value: number).
    Compare {
        op: CompareOp,
        key: String,
        value: Value,
    },
    /// `in` (`negate: false`) and `notIn` (`negate: true`); values are scalars.
    In {
        key: String,
        values: Vec<Value>,
        negate: bool,
    },
    StartsWith {
        key: String,
        prefix: String,
    },
    /// `value` is a scalar (string, number or boolean).
    ListContains {
        key: String,
        value: Value,
    },
    StringContains {
        key: String,
        value: String,
    },
    AndAll(Vec<Filter>),
    OrAll(Vec<Filter>),
}

/// Why a filter was refused; `path` names the offending member, e.g.
/// `filter.andAll[1].in.value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    pub path: String,
    /// Follows the path in the message, e.g. "must be a list".
    pub message: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.path, self.message)
    }
}

impl std::error::Error for FilterError {}

const OPERATORS: &str = "equals, notEquals, greaterThan, greaterThanOrEquals, lessThan, \
     lessThanOrEquals, in, notIn, startsWith, listContains, stringContains, andAll, orAll";

fn err(path: &str, message: impl Into<String>) -> FilterError {
    FilterError {
        path: path.to_string(),
        message: message.into(),
    }
}

impl Filter {
    /// Parses a filter; error paths start with `filter`.
    pub fn parse(v: &Value) -> Result<Filter, FilterError> {
        Filter::parse_at(v, "filter")
    }

    /// Parses a filter whose own path is `path`, e.g.
    /// `retrievalConfiguration.vectorSearchConfiguration.filter`.
    pub fn parse_at(v: &Value, path: &str) -> Result<Filter, FilterError> {
        let mut conditions = 0;
        parse_node(v, path, 1, &mut conditions)
    }

    /// Whether a chunk with this metadata passes the filter.
    pub fn matches(&self, metadata: &Map<String, Value>) -> bool {
        self.matches_with(&|key| metadata.get(key))
    }

    /// [`Filter::matches`] over metadata that `get` looks up by key (for
    /// column-wise stores). A JSON null behaves as a missing key: no filter
    /// value can be null, so the two match the same filters.
    pub fn matches_with<'v>(&self, get: &dyn Fn(&str) -> Option<&'v Value>) -> bool {
        match self {
            Filter::Compare { op, key, value } => {
                let Some(have) = get(key).filter(|v| !v.is_null()) else {
                    return *op == CompareOp::NotEquals;
                };
                match op {
                    CompareOp::Equals => json_eq(have, value),
                    CompareOp::NotEquals => !json_eq(have, value),
                    _ => match (have.as_f64(), value.as_f64()) {
                        (Some(a), Some(b)) => match op {
                            CompareOp::GreaterThan => a > b,
                            CompareOp::GreaterThanOrEquals => a >= b,
                            CompareOp::LessThan => a < b,
                            _ => a <= b,
                        },
                        _ => false,
                    },
                }
            }
            Filter::In {
                key,
                values,
                negate,
            } => {
                let found = get(key).is_some_and(|have| values.iter().any(|v| json_eq(have, v)));
                found != *negate
            }
            Filter::StartsWith { key, prefix } => get(key)
                .and_then(Value::as_str)
                .is_some_and(|s| s.starts_with(prefix.as_str())),
            Filter::ListContains { key, value } => get(key)
                .and_then(Value::as_array)
                .is_some_and(|list| list.iter().any(|e| json_eq(e, value))),
            Filter::StringContains { key, value } => match get(key) {
                Some(Value::String(s)) => s.contains(value.as_str()),
                Some(Value::Array(list)) => list
                    .iter()
                    .any(|e| e.as_str().is_some_and(|s| s.contains(value.as_str()))),
                _ => false,
            },
            Filter::AndAll(members) => members.iter().all(|f| f.matches_with(get)),
            Filter::OrAll(members) => members.iter().any(|f| f.matches_with(get)),
        }
    }

    /// The filter in Bedrock's wire shape (what [`Filter::parse`] reads).
    pub fn to_value(&self) -> Value {
        fn kv(op: &str, key: &str, value: Value) -> Value {
            serde_json::json!({ op: { "key": key, "value": value } })
        }
        match self {
            Filter::Compare { op, key, value } => kv(op.name(), key, value.clone()),
            Filter::In {
                key,
                values,
                negate,
            } => kv(
                if *negate { "notIn" } else { "in" },
                key,
                Value::Array(values.clone()),
            ),
            Filter::StartsWith { key, prefix } => kv("startsWith", key, prefix.as_str().into()),
            Filter::ListContains { key, value } => kv("listContains", key, value.clone()),
            Filter::StringContains { key, value } => {
                kv("stringContains", key, value.as_str().into())
            }
            Filter::AndAll(m) => {
                serde_json::json!({ "andAll": m.iter().map(Filter::to_value).collect::<Vec<_>>() })
            }
            Filter::OrAll(m) => {
                serde_json::json!({ "orAll": m.iter().map(Filter::to_value).collect::<Vec<_>>() })
            }
        }
    }

    /// Every metadata key the filter names (with repeats).
    pub fn keys(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_keys(&mut out);
        out
    }

    fn collect_keys<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Filter::Compare { key, .. }
            | Filter::In { key, .. }
            | Filter::StartsWith { key, .. }
            | Filter::ListContains { key, .. }
            | Filter::StringContains { key, .. } => out.push(key),
            Filter::AndAll(m) | Filter::OrAll(m) => m.iter().for_each(|f| f.collect_keys(out)),
        }
    }
}

/// JSON equality with numbers compared by value, so `1` equals `1.0`.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            // Integers beyond 2^53 would collide as floats; compare them exactly.
            _ if x.is_i64() && y.is_i64() => x.as_i64() == y.as_i64(),
            _ if x.is_u64() && y.is_u64() => x.as_u64() == y.as_u64(),
            (Some(p), Some(q)) => p == q,
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        _ => a == b,
    }
}

fn is_scalar(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

fn check_string(v: &Value, path: &str) -> Result<(), FilterError> {
    if let Value::String(s) = v {
        if s.chars().count() > MAX_STRING_CHARS {
            return Err(err(
                path,
                format!("must be at most {MAX_STRING_CHARS} characters long"),
            ));
        }
    }
    Ok(())
}

fn parse_node(
    v: &Value,
    path: &str,
    depth: usize,
    conditions: &mut usize,
) -> Result<Filter, FilterError> {
    if depth > MAX_DEPTH {
        return Err(err(
            path,
            format!("nests filters too deeply (at most {MAX_DEPTH} levels)"),
        ));
    }
    let Value::Object(obj) = v else {
        return Err(err(path, "must be an object"));
    };
    let mut members = obj.iter();
    let (op, inner) = match (members.next(), members.next()) {
        (Some(first), None) => first,
        (None, _) => {
            return Err(err(
                path,
                format!("must have exactly one member, one of {OPERATORS}"),
            ))
        }
        (Some(_), Some(_)) => {
            let names: Vec<&str> = obj.keys().map(String::as_str).collect();
            return Err(err(
                path,
                format!(
                    "must have exactly one member, got {} ({})",
                    names.len(),
                    names.join(", ")
                ),
            ));
        }
    };
    let path = format!("{path}.{op}");
    if op == "andAll" || op == "orAll" {
        let Value::Array(list) = inner else {
            return Err(err(&path, "must be a list of filters"));
        };
        if list.len() < 2 {
            return Err(err(&path, "must hold at least 2 filters"));
        }
        let parsed = list
            .iter()
            .enumerate()
            .map(|(i, m)| parse_node(m, &format!("{path}[{i}]"), depth + 1, conditions))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(if op == "andAll" {
            Filter::AndAll(parsed)
        } else {
            Filter::OrAll(parsed)
        });
    }
    let compare = match op.as_str() {
        "equals" => Some(CompareOp::Equals),
        "notEquals" => Some(CompareOp::NotEquals),
        "greaterThan" => Some(CompareOp::GreaterThan),
        "greaterThanOrEquals" => Some(CompareOp::GreaterThanOrEquals),
        "lessThan" => Some(CompareOp::LessThan),
        "lessThanOrEquals" => Some(CompareOp::LessThanOrEquals),
        "in" | "notIn" | "startsWith" | "listContains" | "stringContains" => None,
        _ => {
            let parent = path.rsplit_once('.').map_or("filter", |(p, _)| p);
            return Err(err(
                parent,
                format!("has an unknown member {op:?}; expected one of {OPERATORS}"),
            ));
        }
    };
    *conditions += 1;
    if *conditions > MAX_CONDITIONS {
        return Err(err(
            &path,
            format!("is one condition too many (at most {MAX_CONDITIONS} in one filter)"),
        ));
    }
    let Value::Object(kv) = inner else {
        return Err(err(&path, "must be an object with key and value"));
    };
    if let Some(extra) = kv.keys().find(|k| *k != "key" && *k != "value") {
        return Err(err(
            &path,
            format!("has an unknown member {extra:?}; expected key and value"),
        ));
    }
    let key_path = format!("{path}.key");
    let key = match kv.get("key") {
        Some(Value::String(k)) if k.is_empty() => {
            return Err(err(&key_path, "must not be empty"));
        }
        Some(Value::String(k)) if k.chars().count() > MAX_KEY_CHARS => {
            return Err(err(
                &key_path,
                format!("must be at most {MAX_KEY_CHARS} characters long"),
            ));
        }
        Some(Value::String(k)) => k.clone(),
        Some(_) => return Err(err(&key_path, "must be a string")),
        None => return Err(err(&key_path, "is required")),
    };
    let value_path = format!("{path}.value");
    let Some(value) = kv.get("value") else {
        return Err(err(&value_path, "is required"));
    };
    if let Some(op) = compare {
        if op.is_ordering() {
            if !value.is_number() {
                return Err(err(&value_path, "must be a number"));
            }
        } else {
            match value {
                Value::Array(items) => {
                    if items.len() > MAX_IN_VALUES {
                        return Err(err(
                            &value_path,
                            format!("must hold at most {MAX_IN_VALUES} values"),
                        ));
                    }
                    for (i, item) in items.iter().enumerate() {
                        let p = format!("{value_path}[{i}]");
                        if !is_scalar(item) {
                            return Err(err(&p, "must be a string, number or boolean"));
                        }
                        check_string(item, &p)?;
                    }
                }
                v if is_scalar(v) => check_string(v, &value_path)?,
                _ => {
                    return Err(err(
                        &value_path,
                        "must be a string, number, boolean or list",
                    ))
                }
            }
        }
        return Ok(Filter::Compare {
            op,
            key,
            value: value.clone(),
        });
    }
    match op.as_str() {
        "in" | "notIn" => {
            let Value::Array(items) = value else {
                return Err(err(&value_path, "must be a list"));
            };
            if items.is_empty() || items.len() > MAX_IN_VALUES {
                return Err(err(
                    &value_path,
                    format!("must hold 1 to {MAX_IN_VALUES} values, got {}", items.len()),
                ));
            }
            for (i, item) in items.iter().enumerate() {
                let p = format!("{value_path}[{i}]");
                if !is_scalar(item) {
                    return Err(err(&p, "must be a string, number or boolean"));
                }
                check_string(item, &p)?;
            }
            Ok(Filter::In {
                key,
                values: items.clone(),
                negate: op == "notIn",
            })
        }
        "startsWith" | "stringContains" => {
            let Value::String(s) = value else {
                return Err(err(&value_path, "must be a string"));
            };
            check_string(value, &value_path)?;
            Ok(if op == "startsWith" {
                Filter::StartsWith {
                    key,
                    prefix: s.clone(),
                }
            } else {
                Filter::StringContains {
                    key,
                    value: s.clone(),
                }
            })
        }
        _ => {
            // listContains
            if !is_scalar(value) {
                return Err(err(&value_path, "must be a string, number or boolean"));
            }
            check_string(value, &value_path)?;
            Ok(Filter::ListContains {
                key,
                value: value.clone(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Filter, FilterError> {
        Filter::parse_at(
            &v,
            "retrievalConfiguration.vectorSearchConfiguration.filter",
        )
    }

    fn parse_err(v: Value) -> String {
        match parse(v) {
            Ok(f) => panic!("parsed: {f:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn meta(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn m(filter: Value, metadata: Value) -> bool {
        Filter::parse(&filter)
            .expect("parses")
            .matches(&meta(metadata))
    }

    const P: &str = "retrievalConfiguration.vectorSearchConfiguration.filter";

    #[test]
    fn parses_the_boto3_example() {
        let f = parse(json!({"andAll":[{"equals":{"key":"a","value":1}},{"in":{"key":"b","value":["x","y"]}}]}))
            .expect("parses");
        assert_eq!(
            f,
            Filter::AndAll(vec![
                Filter::Compare {
                    op: CompareOp::Equals,
                    key: "a".into(),
                    value: json!(1)
                },
                Filter::In {
                    key: "b".into(),
                    values: vec![json!("x"), json!("y")],
                    negate: false
                },
            ])
        );
        assert_eq!(Filter::parse(&f.to_value()).expect("parses"), f);
    }

    #[test]
    fn errors_name_the_path() {
        assert_eq!(
            parse_err(
                json!({"andAll":[{"equals":{"key":"a","value":1}},{"in":{"key":"b","value":"x"}}]})
            ),
            format!("{P}.andAll[1].in.value must be a list")
        );
        assert_eq!(
            parse_err(
                json!({"orAll":[{"greaterThan":{"key":"a","value":"1"}},{"equals":{"key":"b","value":1}}]})
            ),
            format!("{P}.orAll[0].greaterThan.value must be a number")
        );
        assert_eq!(
            parse_err(json!({"startsWith":{"key":"a","value":1}})),
            format!("{P}.startsWith.value must be a string")
        );
        assert_eq!(
            parse_err(json!({"stringContains":{"key":"a","value":[]}})),
            format!("{P}.stringContains.value must be a string")
        );
        assert_eq!(
            parse_err(json!({"listContains":{"key":"a","value":["x"]}})),
            format!("{P}.listContains.value must be a string, number or boolean")
        );
        assert_eq!(
            parse_err(json!({"andAll":[{"equals":{"key":"a","value":1}}]})),
            format!("{P}.andAll must hold at least 2 filters")
        );
        assert_eq!(
            parse_err(json!({"orAll":{}})),
            format!("{P}.orAll must be a list of filters")
        );
        assert_eq!(
            parse_err(json!({"equals":{"key":"a","value":1},"in":{"key":"b","value":[1]}})),
            format!("{P} must have exactly one member, got 2 (equals, in)")
        );
        assert!(parse_err(json!({})).starts_with(&format!("{P} must have exactly one member")));
        assert!(parse_err(json!({"like":{"key":"a","value":1}}))
            .starts_with(&format!("{P} has an unknown member \"like\"")));
        assert_eq!(
            parse_err(json!({"equals":{"value":1}})),
            format!("{P}.equals.key is required")
        );
        assert_eq!(
            parse_err(json!({"equals":{"key":"a"}})),
            format!("{P}.equals.value is required")
        );
        assert_eq!(
            parse_err(json!({"equals":{"key":"a","value":null}})),
            format!("{P}.equals.value must be a string, number, boolean or list")
        );
        assert_eq!(
            parse_err(json!({"equals":{"key":"","value":1}})),
            format!("{P}.equals.key must not be empty")
        );
        assert_eq!(
            parse_err(json!({"equals":{"key":"a","value":1,"x":2}})),
            format!("{P}.equals has an unknown member \"x\"; expected key and value")
        );
        assert_eq!(
            parse_err(json!({"notIn":{"key":"a","value":[1,{}]}})),
            format!("{P}.notIn.value[1] must be a string, number or boolean")
        );
        assert_eq!(parse_err(json!([])), format!("{P} must be an object"));
        assert_eq!(
            Filter::parse(&json!({"in":{"key":"a","value":[]}}))
                .expect_err("refused")
                .to_string(),
            "filter.in.value must hold 1 to 100 values, got 0"
        );
    }

    #[test]
    fn limits_are_enforced_and_stated() {
        let leaf = json!({"equals":{"key":"a","value":1}});
        // Depth 5 is fine, depth 6 is not.
        let mut v = leaf.clone();
        for _ in 0..4 {
            v = json!({"andAll":[v, leaf.clone()]});
        }
        assert!(parse(v.clone()).is_ok());
        let deeper = json!({"orAll":[v, leaf.clone()]});
        let e = parse_err(deeper);
        assert!(e.contains("at most 5 levels"), "{e}");
        assert_eq!(
            e,
            format!("{P}.orAll[0].andAll[0].andAll[0].andAll[0].andAll[0] nests filters too deeply (at most 5 levels)")
        );

        let many: Vec<Value> = (0..51).map(|_| leaf.clone()).collect();
        let e = parse_err(json!({ "orAll": many }));
        assert_eq!(
            e,
            format!("{P}.orAll[50].equals is one condition too many (at most 50 in one filter)")
        );
        let fifty: Vec<Value> = (0..50).map(|_| leaf.clone()).collect();
        assert!(parse(json!({ "orAll": fifty })).is_ok());

        let values: Vec<Value> = (0..101).map(|i| json!(i)).collect();
        assert_eq!(
            parse_err(json!({"in":{"key":"a","value":values}})),
            format!("{P}.in.value must hold 1 to 100 values, got 101")
        );
        let long = "x".repeat(MAX_STRING_CHARS + 1);
        assert_eq!(
            parse_err(json!({"equals":{"key":"a","value":long}})),
            format!("{P}.equals.value must be at most 2048 characters long")
        );
        let long_key = "k".repeat(MAX_KEY_CHARS + 1);
        assert_eq!(
            parse_err(json!({"equals":{"key":long_key,"value":1}})),
            format!("{P}.equals.key must be at most 256 characters long")
        );
    }

    #[test]
    fn equals_and_not_equals() {
        let md = json!({"n": 1, "f": 2.5, "s": "x", "b": true, "l": ["a", "b"]});
        assert!(m(json!({"equals":{"key":"n","value":1.0}}), md.clone()));
        assert!(m(json!({"equals":{"key":"n","value":1}}), md.clone()));
        assert!(!m(json!({"equals":{"key":"n","value":"1"}}), md.clone()));
        assert!(m(json!({"equals":{"key":"f","value":2.5}}), md.clone()));
        assert!(m(json!({"equals":{"key":"s","value":"x"}}), md.clone()));
        assert!(!m(json!({"equals":{"key":"s","value":"X"}}), md.clone()));
        assert!(m(json!({"equals":{"key":"b","value":true}}), md.clone()));
        assert!(m(
            json!({"equals":{"key":"l","value":["a","b"]}}),
            md.clone()
        ));
        assert!(!m(json!({"equals":{"key":"l","value":"a"}}), md.clone()));
        assert!(!m(
            json!({"equals":{"key":"missing","value":1}}),
            md.clone()
        ));
        assert!(!m(json!({"notEquals":{"key":"n","value":1.0}}), md.clone()));
        assert!(m(json!({"notEquals":{"key":"n","value":2}}), md.clone()));
        // A chunk without the key matches notEquals.
        assert!(m(json!({"notEquals":{"key":"missing","value":1}}), md));
    }

    #[test]
    fn ordering() {
        let md = json!({"n": 5, "s": "9"});
        assert!(m(
            json!({"greaterThan":{"key":"n","value":4.5}}),
            md.clone()
        ));
        assert!(!m(json!({"greaterThan":{"key":"n","value":5}}), md.clone()));
        assert!(m(
            json!({"greaterThanOrEquals":{"key":"n","value":5}}),
            md.clone()
        ));
        assert!(m(json!({"lessThan":{"key":"n","value":6}}), md.clone()));
        assert!(!m(json!({"lessThan":{"key":"n","value":5}}), md.clone()));
        assert!(m(
            json!({"lessThanOrEquals":{"key":"n","value":5.0}}),
            md.clone()
        ));
        // Non-numeric or missing attributes never match an ordering.
        assert!(!m(json!({"lessThan":{"key":"s","value":100}}), md.clone()));
        assert!(!m(
            json!({"greaterThan":{"key":"missing","value":0}}),
            md.clone()
        ));
        assert!(!m(json!({"lessThan":{"key":"missing","value":0}}), md));
    }

    #[test]
    fn in_and_not_in() {
        let md = json!({"n": 2, "s": "b", "l": ["a"]});
        assert!(m(json!({"in":{"key":"n","value":[1, 2.0]}}), md.clone()));
        assert!(m(json!({"in":{"key":"s","value":["a","b"]}}), md.clone()));
        assert!(!m(json!({"in":{"key":"s","value":["a","c"]}}), md.clone()));
        assert!(!m(
            json!({"in":{"key":"missing","value":["a"]}}),
            md.clone()
        ));
        assert!(!m(json!({"in":{"key":"l","value":["a"]}}), md.clone()));
        assert!(m(
            json!({"notIn":{"key":"s","value":["a","c"]}}),
            md.clone()
        ));
        assert!(!m(json!({"notIn":{"key":"s","value":["b"]}}), md.clone()));
        assert!(m(json!({"notIn":{"key":"missing","value":["a"]}}), md));
    }

    #[test]
    fn string_and_list_operators() {
        let md = json!({"s": "report-2024.pdf", "l": ["alpha", "beta"], "nums": [1, 2], "n": 3});
        assert!(m(
            json!({"startsWith":{"key":"s","value":"report"}}),
            md.clone()
        ));
        assert!(!m(
            json!({"startsWith":{"key":"s","value":"2024"}}),
            md.clone()
        ));
        assert!(!m(
            json!({"startsWith":{"key":"l","value":"al"}}),
            md.clone()
        ));
        assert!(!m(
            json!({"startsWith":{"key":"n","value":"3"}}),
            md.clone()
        ));
        assert!(m(
            json!({"listContains":{"key":"l","value":"beta"}}),
            md.clone()
        ));
        assert!(!m(
            json!({"listContains":{"key":"l","value":"bet"}}),
            md.clone()
        ));
        assert!(m(
            json!({"listContains":{"key":"nums","value":2.0}}),
            md.clone()
        ));
        assert!(!m(
            json!({"listContains":{"key":"s","value":"report-2024.pdf"}}),
            md.clone()
        ));
        assert!(m(
            json!({"stringContains":{"key":"s","value":"2024"}}),
            md.clone()
        ));
        assert!(!m(
            json!({"stringContains":{"key":"s","value":"2025"}}),
            md.clone()
        ));
        assert!(m(
            json!({"stringContains":{"key":"l","value":"lph"}}),
            md.clone()
        ));
        assert!(!m(
            json!({"stringContains":{"key":"l","value":"gamma"}}),
            md.clone()
        ));
        assert!(!m(
            json!({"stringContains":{"key":"missing","value":"a"}}),
            md
        ));
    }

    #[test]
    fn a_null_value_is_a_missing_key() {
        let md = json!({"n": null});
        for f in [
            json!({"equals":{"key":"n","value":1}}),
            json!({"lessThan":{"key":"n","value":1}}),
            json!({"in":{"key":"n","value":[1]}}),
            json!({"startsWith":{"key":"n","value":"a"}}),
            json!({"listContains":{"key":"n","value":"a"}}),
            json!({"stringContains":{"key":"n","value":"a"}}),
        ] {
            assert!(!m(f.clone(), md.clone()), "{f}");
        }
        assert!(m(json!({"notEquals":{"key":"n","value":1}}), md.clone()));
        assert!(m(json!({"notIn":{"key":"n","value":[1]}}), md));
    }

    #[test]
    fn and_all_or_all() {
        let md = json!({"a": 1, "b": "x"});
        let yes = json!({"equals":{"key":"a","value":1}});
        let no = json!({"equals":{"key":"a","value":2}});
        assert!(m(json!({"andAll":[yes.clone(), yes.clone()]}), md.clone()));
        assert!(!m(json!({"andAll":[yes.clone(), no.clone()]}), md.clone()));
        assert!(m(json!({"orAll":[no.clone(), yes.clone()]}), md.clone()));
        assert!(!m(json!({"orAll":[no.clone(), no.clone()]}), md.clone()));
        assert!(m(
            json!({"orAll":[no.clone(), {"andAll":[yes.clone(), {"startsWith":{"key":"b","value":"x"}}]}]}),
            md
        ));
        let f = Filter::parse(
            &json!({"orAll":[no, {"andAll":[yes, {"startsWith":{"key":"b","value":"x"}}]}]}),
        )
        .expect("parses");
        assert_eq!(f.keys(), vec!["a", "a", "b"]);
    }
}
