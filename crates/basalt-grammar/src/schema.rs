//! The supported JSON Schema subset as a tree, and a validator over it.

use serde_json::{Map, Value};

use crate::SchemaError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SNode {
    /// Any JSON value (`{}`, `true`, an untyped schema, `items` left out).
    Any,
    Object {
        props: Vec<SProp>,
        /// Whether validation tolerates undeclared properties; generation never emits them.
        additional: bool,
    },
    Array {
        items: Box<SNode>,
        min: u32,
        max: Option<u32>,
    },
    String,
    Number,
    Integer,
    Boolean,
    Enum(Vec<Value>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SProp {
    pub name: String,
    pub node: SNode,
    pub required: bool,
}

const ANNOTATIONS: &[&str] = &[
    "description",
    "title",
    "default",
    "examples",
    "$schema",
    "$id",
    "$comment",
];
const KNOWN: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "enum",
    "const",
];

/// The pointer of the whole schema; children read `/properties/x`.
pub(crate) const ROOT: &str = "/";

pub(crate) fn child(at: &str, token: &str) -> String {
    let token = token.replace('~', "~0").replace('/', "~1");
    if at == ROOT {
        format!("/{token}")
    } else {
        format!("{at}/{token}")
    }
}

fn unsupported(construct: impl Into<String>, at: &str) -> SchemaError {
    SchemaError::Unsupported {
        construct: construct.into(),
        at: at.to_string(),
    }
}

fn invalid(reason: impl Into<String>, at: &str) -> SchemaError {
    SchemaError::Invalid {
        reason: reason.into(),
        at: at.to_string(),
    }
}

pub(crate) fn compile(v: &Value, at: &str) -> Result<SNode, SchemaError> {
    let obj = match v {
        Value::Object(m) => m,
        Value::Bool(true) => return Ok(SNode::Any),
        Value::Bool(false) => return Err(unsupported("false", at)),
        _ => return Err(invalid("a schema must be an object or a boolean", at)),
    };
    for k in obj.keys() {
        if !ANNOTATIONS.contains(&k.as_str()) && !KNOWN.contains(&k.as_str()) {
            return Err(unsupported(k.as_str(), at));
        }
    }
    let ty = match obj.get("type") {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(Value::Array(_)) => return Err(unsupported("type: [...]", at)),
        Some(_) => return Err(invalid("`type` must be a string", at)),
    };
    if ty == Some("null") {
        return Err(unsupported("type: null", at));
    }
    if obj.contains_key("enum") || obj.contains_key("const") {
        return compile_enum(obj, ty, at);
    }
    match ty {
        Some("object") => compile_object(obj, at),
        Some("array") => compile_array(obj, at),
        Some("string") => Ok(SNode::String),
        Some("number") => Ok(SNode::Number),
        Some("integer") => Ok(SNode::Integer),
        Some("boolean") => Ok(SNode::Boolean),
        Some(other) => Err(invalid(format!("unknown type `{other}`"), at)),
        None if ["properties", "required", "additionalProperties"]
            .iter()
            .any(|k| obj.contains_key(*k)) =>
        {
            compile_object(obj, at)
        }
        None if ["items", "minItems", "maxItems"]
            .iter()
            .any(|k| obj.contains_key(*k)) =>
        {
            compile_array(obj, at)
        }
        None => Ok(SNode::Any),
    }
}

fn compile_enum(
    obj: &Map<String, Value>,
    ty: Option<&str>,
    at: &str,
) -> Result<SNode, SchemaError> {
    let mut values: Vec<Value> = match obj.get("enum") {
        None => Vec::new(),
        Some(Value::Array(a)) if !a.is_empty() => a.clone(),
        Some(_) => return Err(invalid("`enum` must be a non-empty array", at)),
    };
    if let Some(c) = obj.get("const") {
        if obj.contains_key("enum") && !values.contains(c) {
            return Err(invalid("`const` is not one of `enum`", at));
        }
        values = vec![c.clone()];
    }
    let mut unique: Vec<Value> = Vec::with_capacity(values.len());
    for v in values {
        if v.is_null() {
            return Err(unsupported("enum: null", at));
        }
        if !unique.contains(&v) {
            unique.push(v);
        }
    }
    if let Some(ty) = ty {
        let ok = |v: &Value| match ty {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "number" => v.is_number(),
            "integer" => is_integer(v),
            "boolean" => v.is_boolean(),
            _ => false,
        };
        if let Some(bad) = unique.iter().find(|v| !ok(v)) {
            return Err(invalid(
                format!("enum value {bad} is not of type `{ty}`"),
                at,
            ));
        }
    }
    Ok(SNode::Enum(unique))
}

fn compile_object(obj: &Map<String, Value>, at: &str) -> Result<SNode, SchemaError> {
    let mut props = Vec::new();
    match obj.get("properties") {
        None => {}
        Some(Value::Object(m)) => {
            let at_props = child(at, "properties");
            for (name, sub) in m {
                props.push(SProp {
                    name: name.clone(),
                    node: compile(sub, &child(&at_props, name))?,
                    required: false,
                });
            }
        }
        Some(_) => return Err(invalid("`properties` must be an object", at)),
    }
    match obj.get("required") {
        None => {}
        Some(Value::Array(names)) => {
            let at_req = child(at, "required");
            for n in names {
                let Some(n) = n.as_str() else {
                    return Err(invalid("`required` must list strings", &at_req));
                };
                let Some(p) = props.iter_mut().find(|p| p.name == n) else {
                    return Err(invalid(
                        format!("required property `{n}` is not in `properties`"),
                        &at_req,
                    ));
                };
                p.required = true;
            }
        }
        Some(_) => return Err(invalid("`required` must be an array", at)),
    }
    let additional = match obj.get("additionalProperties") {
        None | Some(Value::Bool(true)) => true,
        Some(Value::Bool(false)) => false,
        Some(Value::Object(m)) if m.is_empty() => true,
        Some(_) => {
            return Err(unsupported(
                "additionalProperties",
                &child(at, "additionalProperties"),
            ))
        }
    };
    Ok(SNode::Object { props, additional })
}

fn compile_array(obj: &Map<String, Value>, at: &str) -> Result<SNode, SchemaError> {
    let items = match obj.get("items") {
        None => SNode::Any,
        Some(Value::Array(_)) => return Err(unsupported("items: [...]", at)),
        Some(v) => compile(v, &child(at, "items"))?,
    };
    let count = |k: &str| -> Result<Option<u32>, SchemaError> {
        match obj.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| invalid(format!("`{k}` must be a non-negative integer"), at)),
        }
    };
    let min = count("minItems")?.unwrap_or(0);
    let max = count("maxItems")?;
    if max.is_some_and(|m| m < min) {
        return Err(invalid("`maxItems` is below `minItems`", at));
    }
    Ok(SNode::Array {
        items: Box::new(items),
        min,
        max,
    })
}

fn is_integer(v: &Value) -> bool {
    v.is_i64()
        || v.is_u64()
        || v.as_f64()
            .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn validate(node: &SNode, v: &Value, at: &str) -> Result<(), String> {
    let expected = |what: &str| Err(format!("{at}: expected {what}, got {}", kind(v)));
    match node {
        SNode::Any => Ok(()),
        SNode::String if v.is_string() => Ok(()),
        SNode::String => expected("a string"),
        SNode::Number if v.is_number() => Ok(()),
        SNode::Number => expected("a number"),
        SNode::Integer if is_integer(v) => Ok(()),
        SNode::Integer => expected("an integer"),
        SNode::Boolean if v.is_boolean() => Ok(()),
        SNode::Boolean => expected("a boolean"),
        SNode::Enum(values) if values.contains(v) => Ok(()),
        SNode::Enum(values) => {
            let list: Vec<String> = values.iter().map(Value::to_string).collect();
            Err(format!("{at}: {v} is not one of {}", list.join(", ")))
        }
        SNode::Array { items, min, max } => {
            let Value::Array(a) = v else {
                return expected("an array");
            };
            if a.len() < *min as usize {
                return Err(format!("{at}: fewer than {min} items"));
            }
            if let Some(max) = max {
                if a.len() > *max as usize {
                    return Err(format!("{at}: more than {max} items"));
                }
            }
            for (i, item) in a.iter().enumerate() {
                validate(items, item, &child(at, &i.to_string()))?;
            }
            Ok(())
        }
        SNode::Object { props, additional } => {
            let Value::Object(m) = v else {
                return expected("an object");
            };
            for p in props {
                match m.get(&p.name) {
                    Some(pv) => validate(&p.node, pv, &child(at, &p.name))?,
                    None if p.required => {
                        return Err(format!("{at}: missing required property `{}`", p.name))
                    }
                    None => {}
                }
            }
            if !additional {
                if let Some(k) = m.keys().find(|k| !props.iter().any(|p| &p.name == *k)) {
                    return Err(format!("{at}: unexpected property `{k}`"));
                }
            }
            Ok(())
        }
    }
}
