//! The query parameters that control-plane List operations share: pages
//! (`maxResults`, `nextToken`), time bounds and enum filters, each refused with the
//! ValidationException botocore's constraints would give.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use basalt_proto::BedrockError;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::edge::query_map;

const MAX_RESULTS: usize = 1000;

pub struct ListQuery(HashMap<String, String>);

/// Both bounds exclusive, as Bedrock's List operations apply them; an item without a
/// time is outside any bounded window.
pub struct Window {
    after: Option<OffsetDateTime>,
    before: Option<OffsetDateTime>,
}

impl Window {
    pub fn contains(&self, time: Option<OffsetDateTime>) -> bool {
        self.after.is_none_or(|a| time.is_some_and(|t| t > a))
            && self.before.is_none_or(|b| time.is_some_and(|t| t < b))
    }
}

/// Which items one response carries.
pub struct Page {
    pub start: usize,
    pub max: usize,
}

impl ListQuery {
    pub fn parse(
        query: Result<Query<HashMap<String, String>>, QueryRejection>,
    ) -> Result<Self, BedrockError> {
        query_map(query).map(Self)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// `maxResults` (1 to 1000, `default` when absent) and `nextToken`.
    pub fn page(&self, default: usize) -> Result<Page, BedrockError> {
        let max = match self.get("maxResults") {
            Some(m) => match m.parse::<usize>() {
                Ok(n) if (1..=MAX_RESULTS).contains(&n) => n,
                _ => {
                    return Err(BedrockError::constraint(
                        "maxResults",
                        m,
                        &format!("Member must have value between 1 and {MAX_RESULTS}"),
                    ))
                }
            },
            None => default,
        };
        let start = match self.get("nextToken") {
            Some(t) => t.parse::<usize>().map_err(|_| {
                BedrockError::validation("The nextToken is not one this server issued.")
            })?,
            None => 0,
        };
        Ok(Page { start, max })
    }

    /// An ISO 8601 time bound such as `submitTimeAfter`.
    pub fn time(&self, name: &str) -> Result<Option<OffsetDateTime>, BedrockError> {
        self.get(name)
            .map(|v| {
                OffsetDateTime::parse(v, &Rfc3339).map_err(|_| {
                    BedrockError::validation(format!(
                        "{name}: {v} is not an ISO 8601 timestamp (for example 2024-01-31T00:00:00Z)."
                    ))
                })
            })
            .transpose()
    }

    /// The time window a pair of bounds (`submitTimeAfter`, `submitTimeBefore`) sets.
    pub fn window(&self, after: &str, before: &str) -> Result<Window, BedrockError> {
        Ok(Window {
            after: self.time(after)?,
            before: self.time(before)?,
        })
    }

    /// A member that must be one of `allowed`.
    pub fn one_of(&self, name: &str, allowed: &[&str]) -> Result<Option<&str>, BedrockError> {
        match self.get(name) {
            Some(v) if !allowed.contains(&v) => Err(BedrockError::constraint(
                name,
                v,
                &format!(
                    "Member must satisfy enum value set: [{}]",
                    allowed.join(", ")
                ),
            )),
            v => Ok(v),
        }
    }

    /// `sortOrder`: descending (newest first) unless the caller asks otherwise.
    pub fn descending(&self) -> Result<bool, BedrockError> {
        Ok(self.one_of("sortOrder", &["Ascending", "Descending"])? != Some("Ascending"))
    }
}

impl Page {
    /// This page of `items` as `{<key>: [...], "nextToken"?}`.
    pub fn body<T>(&self, key: &str, items: &[T], shape: impl Fn(&T) -> Value) -> Value {
        let page: Vec<Value> = items
            .iter()
            .skip(self.start)
            .take(self.max)
            .map(shape)
            .collect();
        let mut body = json!({ key: page });
        if self.start + self.max < items.len() {
            body["nextToken"] = json!((self.start + self.max).to_string());
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> ListQuery {
        ListQuery(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn a_window_excludes_its_bounds_and_undated_items() {
        let q = query(&[
            ("creationTimeAfter", "2024-01-01T00:00:00Z"),
            ("creationTimeBefore", "2024-01-03T00:00:00Z"),
        ]);
        let w = q
            .window("creationTimeAfter", "creationTimeBefore")
            .expect("window");
        let at = |s: &str| OffsetDateTime::parse(s, &Rfc3339).ok();
        assert!(w.contains(at("2024-01-02T00:00:00Z")));
        assert!(!w.contains(at("2024-01-01T00:00:00Z")));
        assert!(!w.contains(at("2024-01-03T00:00:00Z")));
        assert!(!w.contains(None));
        let open = query(&[]).window("a", "b").expect("unbounded");
        assert!(open.contains(None));
        assert!(query(&[("a", "yesterday")]).window("a", "b").is_err());
    }

    #[test]
    fn pages_carry_a_token_until_the_last() {
        let items: Vec<u32> = (0..5).collect();
        let q = query(&[("maxResults", "2")]);
        let page = q.page(20).expect("page");
        let body = page.body("items", &items, |n| json!(n));
        assert_eq!(body, json!({"items": [0, 1], "nextToken": "2"}));
        let q = query(&[("maxResults", "2"), ("nextToken", "4")]);
        let body = q
            .page(20)
            .expect("page")
            .body("items", &items, |n| json!(n));
        assert_eq!(body, json!({"items": [4]}));
    }

    #[test]
    fn bad_members_are_named() {
        for (name, value) in [("maxResults", "0"), ("maxResults", "x"), ("nextToken", "?")] {
            assert!(query(&[(name, value)]).page(20).is_err(), "{name}={value}");
        }
        let e = query(&[("submitTimeAfter", "yesterday")])
            .time("submitTimeAfter")
            .expect_err("bad time");
        assert!(e.message.contains("submitTimeAfter"));
        let e = query(&[("sortOrder", "Up")])
            .descending()
            .expect_err("bad order");
        assert!(e.message.contains("sortOrder"));
        assert!(query(&[]).descending().expect("default"));
        assert_eq!(
            query(&[("submitTimeAfter", "2024-01-31T00:00:00Z")])
                .time("submitTimeAfter")
                .expect("time"),
            Some(time::macros::datetime!(2024-01-31 00:00 UTC))
        );
    }
}
