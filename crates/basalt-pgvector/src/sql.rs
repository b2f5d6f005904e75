//! SQL text built from user input: identifiers are quoted, every value is a
//! bind parameter.

use basalt_index::filter::CompareOp;
use basalt_index::Filter;
use tokio_postgres::types::ToSql;

/// Keys Basalt adds to the stored metadata for itself; hidden from hits and
/// from filters.
pub const PRIVATE_PREFIX: &str = "x-basalt-kb-";
/// The chunk's document, so that a document's chunks are replaced or deleted
/// together.
pub const DOCUMENT_ID_KEY: &str = "x-basalt-kb-document-id";
/// The chunk id (the primary key may be a UUID derived from it).
pub const CHUNK_ID_KEY: &str = "x-basalt-kb-chunk-id";
/// What a hit returns when it differs from the searched text.
pub const RETURN_TEXT_KEY: &str = "x-basalt-kb-return-text";

/// `"name"`, with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Bind parameters in order; `push` returns the placeholder.
#[derive(Default)]
pub struct Params {
    values: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Params {
    pub fn push<T: ToSql + Sync + Send + 'static>(&mut self, value: T) -> String {
        self.values.push(Box::new(value));
        format!("${}", self.values.len())
    }

    pub fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values
            .iter()
            .map(|v| v.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// A boolean SQL expression (never NULL) that is true exactly when
/// [`Filter::matches`] is for the metadata in `meta`, a jsonb expression.
pub fn filter_sql(filter: &Filter, meta: &str, p: &mut Params) -> String {
    match filter {
        Filter::Compare { op, key, value } => {
            let h = attr(key, meta, p);
            match op {
                // jsonb equality compares numbers by value and lists element by
                // element, as `json_eq` does.
                CompareOp::Equals => {
                    format!("COALESCE({h} = {}::jsonb, false)", p.push(value.clone()))
                }
                CompareOp::NotEquals => {
                    format!(
                        "NOT COALESCE({h} = {}::jsonb, false)",
                        p.push(value.clone())
                    )
                }
                _ => {
                    let Some(bound) = value.as_f64() else {
                        return "false".into();
                    };
                    let cmp = match op {
                        CompareOp::GreaterThan => ">",
                        CompareOp::GreaterThanOrEquals => ">=",
                        CompareOp::LessThan => "<",
                        _ => "<=",
                    };
                    // CASE keeps the cast away from non-numbers.
                    format!(
                        "COALESCE(CASE WHEN jsonb_typeof({h}) = 'number' \
                         THEN ({h} #>> '{{}}')::float8 {cmp} {}::float8 END, false)",
                        p.push(bound)
                    )
                }
            }
        }
        Filter::In {
            key,
            values,
            negate,
        } => {
            let h = attr(key, meta, p);
            let found = format!(
                "COALESCE({h} = ANY({}::jsonb[]), false)",
                p.push(values.clone())
            );
            if *negate {
                format!("NOT {found}")
            } else {
                found
            }
        }
        Filter::StartsWith { key, prefix } => {
            let h = attr(key, meta, p);
            format!(
                "COALESCE(CASE WHEN jsonb_typeof({h}) = 'string' \
                 THEN starts_with({h} #>> '{{}}', {}::text) END, false)",
                p.push(prefix.clone())
            )
        }
        Filter::ListContains { key, value } => {
            let h = attr(key, meta, p);
            format!(
                "COALESCE(CASE WHEN jsonb_typeof({h}) = 'array' THEN EXISTS \
                 (SELECT 1 FROM jsonb_array_elements({h}) e WHERE e = {}::jsonb) END, false)",
                p.push(value.clone())
            )
        }
        Filter::StringContains { key, value } => {
            let h = attr(key, meta, p);
            let needle = p.push(value.clone());
            format!(
                "COALESCE(CASE jsonb_typeof({h}) \
                 WHEN 'string' THEN strpos({h} #>> '{{}}', {needle}::text) > 0 \
                 WHEN 'array' THEN EXISTS (SELECT 1 FROM jsonb_array_elements({h}) e \
                 WHERE jsonb_typeof(e) = 'string' AND strpos(e #>> '{{}}', {needle}::text) > 0) \
                 END, false)"
            )
        }
        Filter::AndAll(members) => join(members, " AND ", meta, p),
        Filter::OrAll(members) => join(members, " OR ", meta, p),
    }
}

fn join(members: &[Filter], op: &str, meta: &str, p: &mut Params) -> String {
    let parts: Vec<String> = members.iter().map(|f| filter_sql(f, meta, p)).collect();
    format!("({})", parts.join(op))
}

/// The attribute as jsonb; NULL for Basalt's own keys, which hits never show.
fn attr(key: &str, meta: &str, p: &mut Params) -> String {
    if key.starts_with(PRIVATE_PREFIX) {
        return "NULL::jsonb".into();
    }
    format!("({meta} -> {}::text)", p.push(key.to_string()))
}

/// Whether a stored metadata key is a user attribute (copied to the custom
/// metadata column) rather than Bedrock's or Basalt's own.
pub fn is_user_key(key: &str) -> bool {
    !key.starts_with("x-amz-bedrock-kb-") && !key.starts_with(PRIVATE_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("chunks"), "\"chunks\"");
        assert_eq!(quote_ident("a\"; drop"), "\"a\"\"; drop\"");
    }

    #[test]
    fn filters_bind_every_value() {
        let f = Filter::parse(&json!({"andAll":[
            {"equals":{"key":"a'; drop table x; --","value":"it's"}},
            {"in":{"key":"b","value":[1,2]}},
            {"equals":{"key":"x-basalt-kb-document-id","value":"d"}}
        ]}))
        .expect("parses");
        let mut p = Params::default();
        let sql = filter_sql(&f, "m", &mut p);
        assert!(!sql.contains("drop") && !sql.contains("it's"), "{sql}");
        assert!(sql.contains("NULL::jsonb"), "{sql}");
        assert_eq!(p.refs().len(), 5);
    }
}
