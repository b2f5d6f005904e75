//! Property tests: parsing and verifying never panic, whatever a client sends.
//! Inputs are arbitrary strings and mutations of a well-formed header, so the
//! parser's deeper branches are reached as well as its first checks.

use basalt_sigv4::{parse_authorization, verify, RequestParts, VerifyOptions};
use proptest::prelude::*;

const VALID: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261202/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A well-formed header with a run of bytes replaced, inserted or cut.
fn mutated() -> impl Strategy<Value = String> {
    (0..VALID.len(), 0..24usize, ".{0,24}").prop_map(|(at, cut, insert)| {
        let mut s: String = VALID.chars().take(at).collect();
        s.push_str(&insert);
        s.extend(VALID.chars().skip(at + cut));
        s
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_never_panics_on_any_string(s in ".{0,400}") {
        let _ = parse_authorization(&s);
    }

    #[test]
    fn parse_never_panics_on_mutated_headers(s in mutated()) {
        let _ = parse_authorization(&s);
    }

    #[test]
    fn verify_never_panics(
        header in mutated(),
        method in "[A-Z]{0,8}",
        path in "[ -~]{0,64}",
        query in "[ -~]{0,64}",
        names in prop::collection::vec("[a-zA-Z0-9-]{0,16}", 0..6),
        values in prop::collection::vec(".{0,32}", 0..6),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        if let Ok(auth) = parse_authorization(&header) {
            let mut headers: Vec<(String, String)> = names.into_iter().zip(values).collect();
            headers.push(("host".into(), "127.0.0.1".into()));
            headers.push(("x-amz-date".into(), "20261202T000000Z".into()));
            let req = RequestParts {
                method: &method,
                raw_path: &path,
                raw_query: &query,
                headers: &headers,
                body: &body,
            };
            let _ = verify(&req, &auth, "secret", time::OffsetDateTime::now_utc(), &VerifyOptions::default());
        }
    }
}
