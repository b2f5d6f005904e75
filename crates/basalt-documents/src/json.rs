//! JSON to `path: value` lines, one per leaf (`author.name: Ann`,
//! `tags[1]: b`). A top-level array (or a JSON Lines file) is a list of
//! records: each element is flattened on its own, without the index, and
//! elements are separated by a blank line. Empty objects and arrays are
//! dropped; strings keep their own line breaks.

use serde_json::Value;

use crate::MAX_JSON_DEPTH;

pub(crate) fn to_text(input: &str) -> Result<String, String> {
    let records = match serde_json::from_str::<Value>(input) {
        Ok(Value::Array(items)) => items,
        Ok(v) => vec![v],
        Err(first) => {
            // JSON Lines (one value per line) reads as a top-level array.
            let values: Result<Vec<Value>, _> = serde_json::Deserializer::from_str(input)
                .into_iter()
                .collect();
            match values {
                Ok(v) if v.len() > 1 => v,
                _ => return Err(describe(&first)),
            }
        }
    };
    let mut out = String::with_capacity(input.len());
    for record in &records {
        let mut lines = String::new();
        flatten(record, &mut String::new(), 1, &mut lines)?;
        if lines.trim().is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&lines);
    }
    Ok(crate::tidy(&out))
}

fn describe(e: &serde_json::Error) -> String {
    if e.to_string().contains("recursion limit") {
        return format!("nested deeper than {MAX_JSON_DEPTH} levels");
    }
    e.to_string()
}

fn flatten(v: &Value, path: &mut String, depth: usize, out: &mut String) -> Result<(), String> {
    if depth > MAX_JSON_DEPTH {
        return Err(format!(
            "nested deeper than {MAX_JSON_DEPTH} levels (at {path})"
        ));
    }
    let leaf = |out: &mut String, path: &str, text: &str| {
        if !path.is_empty() {
            out.push_str(path);
            out.push_str(": ");
        }
        out.push_str(text);
        out.push('\n');
    };
    match v {
        Value::Null => leaf(out, path, "null"),
        Value::Bool(b) => leaf(out, path, if *b { "true" } else { "false" }),
        Value::Number(n) => leaf(out, path, &n.to_string()),
        Value::String(s) => leaf(out, path, s),
        Value::Array(items) => {
            for (k, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{k}]"));
                flatten(item, path, depth + 1, out)?;
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                flatten(item, path, depth + 1, out)?;
                path.truncate(len);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::to_text;

    #[test]
    fn flattens_to_paths() {
        let j = r#"{"title":"Heat","year":1995,"cast":[{"name":"Pacino"},{"name":"De Niro"}],"meta":{"ok":true,"none":null,"empty":{}}}"#;
        assert_eq!(
            to_text(j).unwrap(),
            "title: Heat\nyear: 1995\ncast[0].name: Pacino\ncast[1].name: De Niro\nmeta.ok: true\nmeta.none: null"
        );
    }

    #[test]
    fn top_level_arrays_and_json_lines_are_records() {
        assert_eq!(to_text(r#"[{"a":1},{"a":2}]"#).unwrap(), "a: 1\n\na: 2");
        assert_eq!(to_text("{\"a\":1}\n{\"a\":2}\n").unwrap(), "a: 1\n\na: 2");
        assert_eq!(to_text(r#""just a string""#).unwrap(), "just a string");
        assert_eq!(to_text("[[1,2]]").unwrap(), "[0]: 1\n[1]: 2");
    }

    #[test]
    fn depth_is_limited() {
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        assert!(to_text(&deep)
            .unwrap_err()
            .contains("nested deeper than 64"));
        let very_deep = format!("{}1{}", "[".repeat(1000), "]".repeat(1000));
        assert!(to_text(&very_deep)
            .unwrap_err()
            .contains("nested deeper than 64"));
        let ok = format!("{}1{}", "[".repeat(60), "]".repeat(60));
        assert_eq!(to_text(&ok).unwrap(), format!("{}: 1", "[0]".repeat(59)));
    }

    #[test]
    fn syntax_errors_say_where() {
        let e = to_text("{\"a\": }").unwrap_err();
        assert!(e.contains("line 1 column"), "{e}");
    }
}
