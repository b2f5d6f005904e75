//! Constrained decoding. A JSON Schema (the subset tools and structured output
//! use) compiles to a [`Grammar`]; a [`Matcher`] walks it byte by byte, so the
//! engine can ask whether a token's bytes may come next, and a [`TokenTrie`]
//! over the vocabulary finds every token that may.
//!
//! Pure: no model, no I/O.

use std::sync::Arc;

use serde_json::Value;

mod machine;
mod schema;
mod trie;

use machine::{Compiled, Frame};

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
pub struct Schema {
    root: schema::SNode,
}

impl Schema {
    /// Supported: object, properties, required, additionalProperties (false / absent),
    /// string, number, integer, boolean, array (items), enum, nested objects;
    /// annotations (description, title, default, examples, $schema) are ignored.
    ///
    /// Also: `const` (a one-value enum), `minItems`/`maxItems`, and schemas that
    /// constrain nothing (`{}`, `true`, an array without `items`), which accept
    /// any JSON value. Generation emits declared properties only, in the order
    /// the schema map iterates them; `additionalProperties` true or absent only
    /// relaxes [`Schema::validate`]. Pointers in errors are `/` for the root.
    pub fn compile(schema: &Value) -> Result<Schema, SchemaError> {
        Ok(Schema {
            root: schema::compile(schema, schema::ROOT)?,
        })
    }

    /// Checks a value against the schema; the error names the first mismatch.
    pub fn validate(&self, value: &Value) -> Result<(), String> {
        schema::validate(&self.root, value, schema::ROOT)
    }
}

/// What the output must be. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Grammar {
    compiled: Arc<Compiled>,
    /// The matcher's starting stack, bottom first.
    start: Vec<Frame>,
}

impl Grammar {
    /// Exactly one JSON value matching `schema`.
    pub fn json(schema: Schema) -> Grammar {
        let mut c = Compiled::new();
        let root = c.add_node(&schema.root);
        let start = vec![Frame::End, machine::value_frame(&c, root)];
        Grammar {
            compiled: Arc::new(c),
            start,
        }
    }

    /// `open` + `{"name": "<name>", "arguments": <value matching that tool's schema>}` + `close`,
    /// for one of `tools` (name, schema).
    pub fn tool_call(tools: Vec<(String, Schema)>, open: &str, close: &str) -> Grammar {
        let mut c = Compiled::new();
        let head = c.add_lit(format!("{open}{{\"name\": ").as_bytes());
        let sep = c.add_lit(b", \"arguments\": ");
        let tail = c.add_lit(format!("}}{close}").as_bytes());
        let mut names = Vec::with_capacity(tools.len());
        let mut then = Vec::with_capacity(tools.len());
        for (name, schema) in &tools {
            names.push(Value::String(name.clone()).to_string().into_bytes());
            then.push((c.add_node(&schema.root), sep));
        }
        let set = c.add_alt(names, Some(then));
        let start = vec![
            Frame::End,
            Frame::Lit { lit: tail, pos: 0 },
            machine::alt_frame(&c, set),
            Frame::Lit { lit: head, pos: 0 },
        ];
        Grammar {
            compiled: Arc::new(c),
            start,
        }
    }

    /// Exactly one of the given literal strings.
    pub fn choice(options: &[&str]) -> Grammar {
        let mut c = Compiled::new();
        let set = c.add_alt(
            options.iter().map(|o| o.as_bytes().to_vec()).collect(),
            None,
        );
        let start = vec![Frame::End, machine::alt_frame(&c, set)];
        Grammar {
            compiled: Arc::new(c),
            start,
        }
    }

    pub fn matcher(&self) -> Matcher {
        Matcher {
            compiled: self.compiled.clone(),
            frames: self.start.clone(),
        }
    }
}

/// A position inside a grammar. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Matcher {
    compiled: Arc<Compiled>,
    /// Pending work, innermost last; `Frame::End` at the bottom.
    frames: Vec<Frame>,
}

impl Matcher {
    /// Consumes `bytes` if all of them may come next; otherwise returns false and changes nothing.
    pub fn advance(&mut self, bytes: &[u8]) -> bool {
        let mut frames = self.frames.clone();
        if bytes
            .iter()
            .all(|&b| machine::step(&self.compiled, &mut frames, b))
        {
            self.frames = frames;
            true
        } else {
            false
        }
    }

    /// Whether `bytes` may come next.
    pub fn accepts(&self, bytes: &[u8]) -> bool {
        let mut frames = self.frames.clone();
        bytes
            .iter()
            .all(|&b| machine::step(&self.compiled, &mut frames, b))
    }

    /// The output so far is a complete sentence of the grammar.
    pub fn is_complete(&self) -> bool {
        machine::is_complete(&self.compiled, &self.frames)
    }

    /// Complete, and nothing more may follow.
    pub fn is_finished(&self) -> bool {
        match self.frames.last() {
            Some(Frame::End) => true,
            // A number or literal that could still grow: ask byte by byte (rare).
            _ => self.is_complete() && !(0..=255u8).any(|b| self.accepts(&[b])),
        }
    }

    /// The shortest bytes that make the output complete (empty when already complete).
    ///
    /// When the output so far ends inside a multi-byte UTF-8 character the
    /// completion starts with continuation bytes, which a `String` cannot hold:
    /// this returns them replaced (lossy); use
    /// [`Matcher::shortest_completion_bytes`] there.
    pub fn shortest_completion(&self) -> String {
        String::from_utf8_lossy(&self.shortest_completion_bytes()).into_owned()
    }

    /// [`Matcher::shortest_completion`] as bytes, exact in every state.
    pub fn shortest_completion_bytes(&self) -> Vec<u8> {
        machine::completion(&self.compiled, &self.frames)
    }
}

/// The vocabulary as a byte trie, to find every token a matcher accepts in one walk.
pub struct TokenTrie {
    trie: trie::Trie,
}

impl TokenTrie {
    /// `tokens`: (token id, the token's bytes). Tokens with empty bytes are never allowed.
    pub fn new(tokens: impl IntoIterator<Item = (u32, Vec<u8>)>) -> TokenTrie {
        TokenTrie {
            trie: trie::Trie::new(tokens),
        }
    }

    /// Fills `out` with every token whose bytes `matcher` accepts.
    ///
    /// `out` is cleared first; ids come in byte order of the tokens, not sorted.
    pub fn allowed(&self, matcher: &Matcher, out: &mut Vec<u32>) {
        self.trie.allowed(&matcher.compiled, &matcher.frames, out);
    }
}
