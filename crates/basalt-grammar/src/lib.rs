//! Constrained decoding. A JSON Schema (the subset tools and structured output
//! use) compiles to a [`Grammar`]; a [`Matcher`] walks it byte by byte, so the
//! engine can ask whether a token's bytes may come next, and a [`TokenTrie`]
//! over the vocabulary finds every token that may.
//!
//! Pure: no model, no I/O.

use serde_json::Value;

/// A JSON Schema construct this crate cannot enforce, or a malformed schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// `construct` is the keyword (e.g. `oneOf`, `pattern`, `type: null`); `at` a JSON pointer.
    #[error("unsupported JSON Schema construct `{construct}` at {at}")]
    Unsupported { construct: String, at: String },
    #[error("invalid JSON Schema at {at}: {reason}")]
    Invalid { reason: String, at: String },
}

/// A compiled schema.
#[derive(Debug, Clone)]
pub struct Schema {/* private */}

impl Schema {
    /// Supported: object, properties, required, additionalProperties (false / absent),
    /// string, number, integer, boolean, array (items), enum, nested objects;
    /// annotations (description, title, default, examples, $schema) are ignored.
    pub fn compile(schema: &Value) -> Result<Schema, SchemaError> {
        let _ = schema;
        unimplemented!()
    }

    /// Checks a value against the schema; the error names the first mismatch.
    pub fn validate(&self, value: &Value) -> Result<(), String> {
        let _ = value;
        unimplemented!()
    }
}

/// What the output must be. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Grammar {/* private */}

impl Grammar {
    /// Exactly one JSON value matching `schema`.
    pub fn json(schema: Schema) -> Grammar {
        let _ = schema;
        unimplemented!()
    }

    /// `open` + `{"name": "<name>", "arguments": <value matching that tool's schema>}` + `close`,
    /// for one of `tools` (name, schema).
    pub fn tool_call(tools: Vec<(String, Schema)>, open: &str, close: &str) -> Grammar {
        let _ = (tools, open, close);
        unimplemented!()
    }

    /// Exactly one of the given literal strings.
    pub fn choice(options: &[&str]) -> Grammar {
        let _ = options;
        unimplemented!()
    }

    pub fn matcher(&self) -> Matcher {
        unimplemented!()
    }
}

/// A position inside a grammar. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Matcher {/* private */}

impl Matcher {
    /// Consumes `bytes` if all of them may come next; otherwise returns false and changes nothing.
    pub fn advance(&mut self, bytes: &[u8]) -> bool {
        let _ = bytes;
        unimplemented!()
    }

    /// Whether `bytes` may come next.
    pub fn accepts(&self, bytes: &[u8]) -> bool {
        let _ = bytes;
        unimplemented!()
    }

    /// The output so far is a complete sentence of the grammar.
    pub fn is_complete(&self) -> bool {
        unimplemented!()
    }

    /// Complete, and nothing more may follow.
    pub fn is_finished(&self) -> bool {
        unimplemented!()
    }

    /// The shortest bytes that make the output complete (empty when already complete).
    pub fn shortest_completion(&self) -> String {
        unimplemented!()
    }
}

/// The vocabulary as a byte trie, to find every token a matcher accepts in one walk.
pub struct TokenTrie {/* private */}

impl TokenTrie {
    /// `tokens`: (token id, the token's bytes). Tokens with empty bytes are never allowed.
    pub fn new(tokens: impl IntoIterator<Item = (u32, Vec<u8>)>) -> TokenTrie {
        let _ = tokens;
        unimplemented!()
    }

    /// Fills `out` with every token whose bytes `matcher` accepts.
    pub fn allowed(&self, matcher: &Matcher, out: &mut Vec<u32>) {
        let _ = (matcher, out);
        unimplemented!()
    }
}
