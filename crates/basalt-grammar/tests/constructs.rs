//! One test per construct, through the public API.

use basalt_grammar::{Grammar, Matcher, Schema, SchemaError, TokenTrie};
use serde_json::{json, Value};

fn grammar(schema: Value) -> Grammar {
    Grammar::json(Schema::compile(&schema).expect("schema compiles"))
}

/// Feeds `text` byte by byte (every prefix must be accepted); returns the matcher.
fn feed(g: &Grammar, text: &str) -> Matcher {
    let mut m = g.matcher();
    for (i, b) in text.bytes().enumerate() {
        assert!(
            m.advance(&[b]),
            "byte {i} ({:?}) of {text:?} rejected",
            b as char
        );
    }
    m
}

fn complete(g: &Grammar, text: &str) -> bool {
    let mut m = g.matcher();
    m.advance(text.as_bytes()) && m.is_complete()
}

fn accepts(g: &Grammar, text: &str) -> bool {
    g.matcher().accepts(text.as_bytes())
}

#[test]
fn strings_with_escapes() {
    let g = grammar(json!({"type": "string"}));
    for ok in [
        r#""""#,
        r#""plain""#,
        r#""q\"b\\s\/\b\f\n\r\t""#,
        r#""\u00e9\uD83D\uDE00""#,
        "\"caf\u{e9} \u{1F600}\"",
    ] {
        assert!(complete(&g, ok), "{ok}");
        let m = feed(&g, ok);
        assert!(m.is_finished());
        serde_json::from_str::<Value>(ok).expect("generated string parses");
    }
    for bad in [
        "\"a\nb\"",
        r#""\x""#,
        r#""\u12G4""#,
        r#""\uDE00""#,
        r#""\uD83Dx""#,
        r#""\uD83D\u0041""#,
        "x",
    ] {
        assert!(!complete(&g, bad), "{bad:?}");
    }
    assert!(!feed(&g, r#""ab"#).is_complete());
    assert!(!accepts(&g, r#""ab"""#), "nothing after the closing quote");
}

#[test]
fn split_utf8_across_tokens() {
    let g = grammar(json!({"type": "string"}));
    let text = "\"\u{1F600}\u{e9}\"".as_bytes();
    let mut m = g.matcher();
    assert!(m.advance(&text[..3]));
    // Mid-character: completion starts with continuation bytes.
    let c = m.shortest_completion_bytes();
    let mut done = m.clone();
    assert!(done.advance(&c) && done.is_complete());
    assert!(m.advance(&text[3..4]));
    assert!(
        !m.accepts(b"\""),
        "a partial character cannot end the string"
    );
    assert!(m.advance(&text[4..]));
    assert!(m.is_complete());
    // Invalid UTF-8: overlong, surrogate, stray continuation, out of range.
    for bad in [
        &b"\"\xc0\x80\""[..],
        b"\"\xed\xa0\x80\"",
        b"\"\x80\"",
        b"\"\xf4\x90\x80\x80\"",
    ] {
        assert!(!g.matcher().accepts(bad), "{bad:?}");
    }
}

#[test]
fn numbers_end_by_next_byte() {
    let g = grammar(json!({"type": "number"}));
    for ok in ["0", "-0", "12", "-3.25", "1e5", "2.5E-3", "7e+12"] {
        assert!(complete(&g, ok), "{ok}");
    }
    for bad in ["01", "-", "1.", ".5", "1e", "+1", "1.e3", "--1"] {
        assert!(!complete(&g, bad), "{bad}");
    }
    let m = feed(&g, "12");
    assert!(m.is_complete() && !m.is_finished());
    assert!(m.accepts(b"3") && m.accepts(b".") && !m.accepts(b"}"));
    // Inside an object the same number may end with `}` or `,`.
    let g = grammar(
        json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}),
    );
    let m = feed(&g, r#"{"a": 12"#);
    assert!(m.accepts(b"3") && m.accepts(b"}") && m.accepts(b", \"b\":1}"));
    assert!(complete(&g, r#"{"a":12,"b":-0.5e3}"#));
    // The digit cap stops a looping model.
    let long = "1".repeat(16);
    let m = feed(&grammar(json!({"type": "number"})), &long);
    assert!(!m.accepts(b"1") && m.accepts(b".5"));
}

#[test]
fn incomplete_numbers_complete() {
    let g = grammar(json!({"type": "number"}));
    for (prefix, want) in [
        ("-", "-0"),
        ("1.", "1.0"),
        ("1e", "1e0"),
        ("1e-", "1e-0"),
        ("", "0"),
        ("12", "12"),
    ] {
        let m = feed(&g, prefix);
        assert_eq!(format!("{prefix}{}", m.shortest_completion()), want);
    }
}

#[test]
fn integers() {
    let g = grammar(json!({"type": "integer"}));
    for ok in ["0", "-7", "1234567890123456"] {
        assert!(complete(&g, ok), "{ok}");
    }
    for bad in ["1.5", "1e3", "01", "12345678901234567"] {
        assert!(!complete(&g, bad), "{bad}");
    }
    assert!(feed(&g, "0").is_finished());
    assert!(!feed(&g, "5").is_finished());
}

#[test]
fn booleans() {
    let g = grammar(json!({"type": "boolean"}));
    assert!(complete(&g, "true") && complete(&g, "false"));
    assert!(!complete(&g, "tru") && !accepts(&g, "nul"));
    assert!(feed(&g, "true").is_finished());
}

#[test]
fn enums() {
    let g = grammar(json!({"enum": ["celsius", "fahrenheit", 1, 12, true, {"k": [1]}]}));
    for ok in [
        r#""celsius""#,
        r#""fahrenheit""#,
        "1",
        "12",
        "true",
        r#"{"k":[1]}"#,
    ] {
        assert!(complete(&g, ok), "{ok}");
    }
    for bad in [r#""kelvin""#, "2", "123", "false", r#""celsiu""#] {
        assert!(!complete(&g, bad), "{bad}");
    }
    let m = feed(&g, "1");
    assert!(m.is_complete() && !m.is_finished() && m.accepts(b"2"));
    assert!(feed(&g, "12").is_finished());
    let g = grammar(
        json!({"type": "object", "properties": {"u": {"enum": [1, 12]}}, "required": ["u"]}),
    );
    assert!(complete(&g, r#"{"u": 1}"#) && complete(&g, r#"{"u": 12}"#));
    let g = grammar(json!({"const": "only"}));
    assert!(complete(&g, r#""only""#) && !accepts(&g, r#""other"#));
}

fn weather() -> Value {
    // Declared in alphabetical order, so the texts below read the same either way.
    json!({
        "type": "object",
        "description": "ignored",
        "properties": {
            "days": {"type": "integer"},
            "detail": {
                "type": "object",
                "properties": {"fields": {"type": "array", "items": {"type": "string"}}, "hourly": {"type": "boolean"}},
                "required": ["hourly"],
                "additionalProperties": false
            },
            "location": {"type": "string", "description": "a city"},
            "unit": {"enum": ["c", "f"]}
        },
        "required": ["location", "detail"],
        "additionalProperties": false
    })
}

#[test]
fn nested_objects_required_and_optional() {
    let g = grammar(weather());
    // Declared order: days, detail, location, unit.
    let ok = [
        r#"{"detail": {"hourly": true}, "location": "Paris"}"#,
        r#"{"days":3,"detail":{"fields":["a", "b"],"hourly":false},"location":"x","unit":"c"}"#,
        r#"{"detail":{"fields":[],"hourly":true},"location":""}"#,
    ];
    for text in ok {
        assert!(complete(&g, text), "{text}");
        let v: Value = serde_json::from_str(text).expect("parses");
        Schema::compile(&weather())
            .expect("compiles")
            .validate(&v)
            .expect("valid");
    }
    let bad = [
        // Required `detail` missing.
        r#"{"location": "Paris"}"#,
        // Out of declared order.
        r#"{"location": "x", "detail": {"hourly": true}}"#,
        // Duplicate.
        r#"{"detail": {"hourly": true}, "detail": {"hourly": true}, "location": "x"}"#,
        // Additional property.
        r#"{"detail": {"hourly": true}, "location": "x", "zzz": 1}"#,
        // Nested required missing.
        r#"{"detail": {}, "location": "x"}"#,
        // Whitespace other than one space after `:` / `,`.
        r#"{ "detail": {"hourly": true}, "location": "x"}"#,
        r#"{"detail":  {"hourly": true}, "location": "x"}"#,
    ];
    for text in bad {
        assert!(!complete(&g, text), "{text}");
    }
    let m = feed(&g, r#"{"#);
    assert!(!m.accepts(b"}"));
    assert!(
        m.accepts(b"\"d") && !m.accepts(b"\"u"),
        "`unit` cannot come before required `detail`"
    );
    let m = feed(&g, r#"{"detail": {"hourly": true}, "location": "x""#);
    assert!(m.accepts(b"}") && m.accepts(b", \"unit\"") && !m.accepts(b", \"days\""));
    let mut m = feed(&g, r#"{"detail": {"hourly": true}, "location": "x"}"#);
    assert!(m.is_finished() && !m.advance(b" "));
}

#[test]
fn completion_fills_required() {
    let g = grammar(weather());
    for prefix in [
        "",
        "{",
        r#"{"d"#,
        r#"{"days": 4"#,
        r#"{"days": 4, "#,
        r#"{"detail": {"fields": ["a"#,
    ] {
        let mut m = feed(&g, prefix);
        let c = m.shortest_completion();
        assert!(m.advance(c.as_bytes()), "{prefix} + {c}");
        assert!(m.is_complete(), "{prefix} + {c}");
        let v: Value = serde_json::from_str(&format!("{prefix}{c}")).expect("parses");
        Schema::compile(&weather())
            .expect("compiles")
            .validate(&v)
            .expect("valid");
    }
    assert_eq!(
        feed(&g, "").shortest_completion(),
        r#"{"detail":{"hourly":true},"location":""}"#
    );
}

#[test]
fn empty_object_and_any() {
    let g = grammar(json!({"type": "object"}));
    assert!(complete(&g, "{}") && !accepts(&g, r#"{""#));
    let g = grammar(json!({"type": "object", "properties": {"x": {}}, "required": ["x"]}));
    for ok in [
        r#"{"x": null}"#,
        r#"{"x": {"a": [1, "b", {"c": false}]}}"#,
        r#"{"x":-1.5e3}"#,
    ] {
        assert!(complete(&g, ok), "{ok}");
    }
    let g = grammar(json!({"type": "array"}));
    assert!(complete(&g, r#"[1, "a", [], {}]"#));
}

#[test]
fn additional_properties_false_vs_absent() {
    let strict = Schema::compile(
        &json!({"properties": {"a": {"type": "string"}}, "additionalProperties": false}),
    )
    .expect("compiles");
    let loose =
        Schema::compile(&json!({"properties": {"a": {"type": "string"}}})).expect("compiles");
    let v = json!({"a": "x", "b": 1});
    assert!(strict.validate(&v).is_err());
    assert!(loose.validate(&v).is_ok());
    // Generation never emits undeclared properties either way.
    assert!(!Grammar::json(loose).matcher().accepts(br#"{"b"#));
}

#[test]
fn arrays() {
    let g = grammar(json!({"type": "array", "items": {"type": "integer"}}));
    for ok in ["[]", "[1]", "[1,2]", "[1, -2, 3]"] {
        assert!(complete(&g, ok), "{ok}");
    }
    for bad in ["[,]", "[1,]", "[ 1]", "[1 ]", "[1,  2]"] {
        assert!(!complete(&g, bad), "{bad}");
    }
    let g = grammar(
        json!({"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 3}),
    );
    assert!(!complete(&g, r#"["a"]"#) && complete(&g, r#"["a","b"]"#));
    assert!(!accepts(&g, r#"["a","b","c","#));
    assert_eq!(feed(&g, "").shortest_completion(), r#"["",""]"#);
}

fn tools() -> Grammar {
    let weather = Schema::compile(&json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}))
        .expect("compiles");
    let time =
        Schema::compile(&json!({"type": "object", "properties": {"tz": {"type": "string"}}}))
            .expect("compiles");
    Grammar::tool_call(
        vec![("get_weather".into(), weather), ("get_time".into(), time)],
        "<tool_call>\n",
        "\n</tool_call>",
    )
}

#[test]
fn tool_call_two_tools() {
    let g = tools();
    let a = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>";
    let b = "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>";
    for text in [a, b] {
        let m = feed(&g, text);
        assert!(m.is_complete() && m.is_finished(), "{text}");
    }
    assert!(!accepts(
        &g,
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}"
    ));
    assert!(!accepts(&g, "<tool_call>\n{\"name\": \"get_other"));
    assert!(!accepts(&g, "<tool_call>\n{\"name\":\"get_time"));
    assert!(!accepts(
        &g,
        "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"city\""
    ));
    // Completion inside the name picks the first tool matching the prefix.
    let m = feed(&g, "<tool_call>\n{\"name\": \"get_");
    assert_eq!(
        m.shortest_completion(),
        "weather\", \"arguments\": {\"city\":\"\"}}\n</tool_call>"
    );
    let m = feed(&g, "<tool_call>\n{\"name\": \"get_t");
    assert_eq!(
        m.shortest_completion(),
        "ime\", \"arguments\": {}}\n</tool_call>"
    );
    assert!(g
        .matcher()
        .shortest_completion()
        .starts_with("<tool_call>\n{\"name\": \"get_weather\""));
}

#[test]
fn tool_names_are_escaped() {
    let s = Schema::compile(&json!({"type": "object"})).expect("compiles");
    let g = Grammar::tool_call(vec![("a\"b".into(), s)], "", "");
    assert!(complete(&g, r#"{"name": "a\"b", "arguments": {}}"#));
}

#[test]
fn choice() {
    let g = Grammar::choice(&["Yes", "No", "Yes!"]);
    assert!(complete(&g, "Yes") && complete(&g, "No") && complete(&g, "Yes!"));
    assert!(!complete(&g, "Ye") && !accepts(&g, "Nope"));
    let m = feed(&g, "Yes");
    assert!(m.is_complete() && !m.is_finished());
    assert!(feed(&g, "No").is_finished());
    assert_eq!(feed(&g, "").shortest_completion(), "No");
}

#[test]
fn advance_is_all_or_nothing() {
    let g = grammar(json!({"type": "boolean"}));
    let mut m = g.matcher();
    assert!(!m.advance(b"trux"));
    assert!(m.advance(b"true"));
}

#[test]
fn unsupported_constructs() {
    let cases = [
        (
            json!({"type": "object", "properties": {"location": {"type": "string", "pattern": "^a"}}}),
            "pattern",
            "/properties/location",
        ),
        (json!({"oneOf": [{"type": "string"}]}), "oneOf", "/"),
        (json!({"anyOf": [{"type": "string"}]}), "anyOf", "/"),
        (json!({"allOf": [{"type": "string"}]}), "allOf", "/"),
        (json!({"not": {"type": "string"}}), "not", "/"),
        (json!({"$ref": "#/defs/x"}), "$ref", "/"),
        (json!({"type": "string", "format": "date"}), "format", "/"),
        (json!({"type": "string", "minLength": 1}), "minLength", "/"),
        (
            json!({"type": "object", "patternProperties": {}}),
            "patternProperties",
            "/",
        ),
        (json!({"type": "null"}), "type: null", "/"),
        (json!({"type": ["string", "null"]}), "type: [...]", "/"),
        (
            json!({"type": "array", "items": {"type": "integer", "minimum": 0}}),
            "minimum",
            "/items",
        ),
        (
            json!({"type": "object", "additionalProperties": {"type": "string"}}),
            "additionalProperties",
            "/additionalProperties",
        ),
        (
            json!({"properties": {"a/b": {"nullable": true}}}),
            "nullable",
            "/properties/a~1b",
        ),
    ];
    for (schema, construct, at) in cases {
        assert_eq!(
            Schema::compile(&schema).expect_err("unsupported"),
            SchemaError::Unsupported {
                construct: construct.into(),
                at: at.into()
            },
            "{schema}"
        );
    }
}

#[test]
fn invalid_schemas() {
    let err =
        Schema::compile(&json!({"type": "object", "properties": {"a": {}}, "required": ["b"]}))
            .expect_err("invalid");
    assert!(
        matches!(err, SchemaError::Invalid { ref at, .. } if at == "/required"),
        "{err:?}"
    );
    assert!(matches!(
        Schema::compile(&json!({"type": "strin"})),
        Err(SchemaError::Invalid { .. })
    ));
    assert!(matches!(
        Schema::compile(&json!({"enum": []})),
        Err(SchemaError::Invalid { .. })
    ));
    assert!(matches!(
        Schema::compile(&json!(3)),
        Err(SchemaError::Invalid { .. })
    ));
}

#[test]
fn validate_names_the_pointer() {
    let s = Schema::compile(&weather()).expect("compiles");
    let err = s
        .validate(&json!({"location": "x", "detail": {"hourly": 1}}))
        .expect_err("invalid");
    assert!(err.contains("/detail/hourly"), "{err}");
    let err = s.validate(&json!({"location": "x"})).expect_err("invalid");
    assert!(err.contains("detail"), "{err}");
}

#[test]
fn trie_allowed_matches_accepts() {
    let vocab: Vec<&str> = vec![
        "{", "{\"", "\"", "d", "detail", "\":", "\": ", " {", "}", "}}", "true", "tr", "ue", "x",
        "1", "12", ",", ", ", "",
    ];
    let trie = TokenTrie::new(
        vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (i as u32, t.as_bytes().to_vec())),
    );
    let g = grammar(weather());
    for prefix in [
        "",
        "{",
        "{\"",
        r#"{"detail": {"hourly": "#,
        r#"{"detail": {"hourly": true}, "location": "ab"#,
    ] {
        let m = feed(&g, prefix);
        let mut out = Vec::new();
        trie.allowed(&m, &mut out);
        out.sort_unstable();
        let want: Vec<u32> = vocab
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.is_empty() && m.accepts(t.as_bytes()))
            .map(|(i, _)| i as u32)
            .collect();
        assert_eq!(out, want, "{prefix}");
    }
}

#[test]
fn empty_alternatives_never_complete() {
    for g in [
        Grammar::choice(&[]),
        Grammar::tool_call(Vec::new(), "<a>", "</a>"),
    ] {
        let m = g.matcher();
        assert!(!m.is_complete() && !m.is_finished());
        let c = m.shortest_completion();
        let mut m2 = m.clone();
        assert!(m2.advance(c.as_bytes()) && !m2.is_complete());
    }
    let g = Grammar::choice(&[""]);
    assert!(g.matcher().is_finished());
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Grammar>();
    check::<Matcher>();
    check::<TokenTrie>();
    check::<Schema>();
}
