//! `clientRequestToken` on create operations: a repeated request gets the first
//! answer again, and the token reused with a different request is refused. Tokens
//! are the caller's account's: the same token from another account is a new request.

use basalt_proto::{BedrockError, ErrorCode};
use basalt_store::Store;
use serde_json::Value;

/// What a token already seen means for this request: the same body replays the first
/// answer; another body under the token is refused with `reuse`. Shared by every
/// token store (this SQLite one, and the batch job store that several nodes share).
pub fn replayed(
    seen: Option<(String, Value)>,
    body: &[u8],
    operation: &str,
    reuse: ErrorCode,
) -> Result<Option<Value>, BedrockError> {
    match seen {
        Some((first, response)) if first.as_bytes() == body => Ok(Some(response)),
        Some(_) => Err(BedrockError::new(
            reuse,
            format!(
                "The clientRequestToken was already used with a different {operation} request."
            ),
        )),
        None => Ok(None),
    }
}

/// One create request's token, if it carries one.
pub struct Token<'a> {
    store: &'a Store,
    operation: &'a str,
    /// `<account>:<token>`: the key the answer is kept under.
    token: Option<String>,
    body: &'a [u8],
}

/// The key a token's answer is kept under: tokens are per account.
pub fn scoped(account: &str, token: &str) -> String {
    format!("{account}:{token}")
}

fn store_error(e: basalt_store::StoreError) -> BedrockError {
    BedrockError::internal(format!("The idempotency store failed: {e}"))
}

impl<'a> Token<'a> {
    pub fn new(
        store: &'a Store,
        account: &str,
        operation: &'a str,
        token: Option<&str>,
        body: &'a [u8],
    ) -> Self {
        Self {
            store,
            operation,
            token: token.map(|t| scoped(account, t)),
            body,
        }
    }

    /// The answer first given to this same request. A different request under the
    /// same token gets `reuse` (ConflictException where the operation models it).
    pub fn replay(&self, reuse: ErrorCode) -> Result<Option<Value>, BedrockError> {
        let Some(token) = &self.token else {
            return Ok(None);
        };
        let seen = self
            .store
            .idempotent_response(self.operation, token)
            .map_err(store_error)?;
        replayed(seen, self.body, self.operation, reuse)
    }

    /// Keeps `response` as the answer to this request's token.
    pub fn remember(&self, response: &Value) -> Result<(), BedrockError> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        self.store
            .remember_response(
                self.operation,
                token,
                &String::from_utf8_lossy(self.body),
                response,
            )
            .map_err(store_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_same_request_replays_and_a_different_one_is_refused() {
        let store = Store::in_memory().expect("store");
        let first = Token::new(
            &store,
            "111111111111",
            "CreateThing",
            Some("t1"),
            b"{\"a\":1}",
        );
        assert_eq!(first.replay(ErrorCode::Conflict).expect("fresh"), None);
        first.remember(&json!({"id": "x"})).expect("remember");
        assert_eq!(
            first.replay(ErrorCode::Conflict).expect("replay"),
            Some(json!({"id": "x"}))
        );
        let other = Token::new(
            &store,
            "111111111111",
            "CreateThing",
            Some("t1"),
            b"{\"a\":2}",
        );
        let e = other.replay(ErrorCode::Conflict).expect_err("reused");
        assert_eq!(e.code, ErrorCode::Conflict);
        assert!(e.message.contains("CreateThing"));
        // Another account's token of the same name is a new request, not a replay.
        let elsewhere = Token::new(
            &store,
            "222222222222",
            "CreateThing",
            Some("t1"),
            b"{\"a\":1}",
        );
        assert_eq!(elsewhere.replay(ErrorCode::Conflict).expect("fresh"), None);
        let untokened = Token::new(&store, "111111111111", "CreateThing", None, b"{}");
        assert_eq!(untokened.replay(ErrorCode::Conflict).expect("none"), None);
        untokened.remember(&json!({})).expect("no-op");
    }
}
