//! basalt-sigv4: server-side verification of AWS Signature Version 4.
//!
//! This crate owns the `AWS4-HMAC-SHA256` header scheme as boto3 and the AWS
//! CLI produce it for Bedrock: parsing the `Authorization` header, rebuilding
//! the canonical request from what the server received, checking the scope,
//! clock skew and payload hash, and comparing signatures in constant time.
//! It is framework-free: callers pass plain strings and bytes
//! ([`RequestParts`]) and look up the secret for the access key themselves.
//! [`SigV4Error::aws_error`] and [`SigV4Error::status`] give the AWS error
//! type, message and HTTP status to answer with.
//!
//! The canonicalisation follows botocore's `SigV4Auth` (not S3's variant):
//! the received, already percent-encoded path is dot-segment-normalised and
//! encoded *again*, so `%3A` in a model id is signed as `%253A`.
//!
//! Not covered: presigned URLs (query-string auth), chunked/streaming
//! payload signatures, SigV4a, and validating `X-Amz-Security-Token` (it is
//! verified as a signed header like any other; the caller decides whether
//! the session token is acceptable).

use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use time::{Date, Duration, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// The only algorithm accepted.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// `x-amz-content-sha256` value that opts the body out of the signature.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

const SCOPE_TERMINATOR: &str = "aws4_request";
const AMZ_DATE: &str = "x-amz-date";
const CONTENT_SHA256: &str = "x-amz-content-sha256";

/// RFC 3986 unreserved characters stay; everything else is `%XX`.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// botocore: `quote(path, safe='/~')`.
const PATH: &AsciiSet = &UNRESERVED.remove(b'/');

/// Headers botocore never signs (`SIGNED_HEADERS_BLACKLIST`), plus the ones
/// [`sign`] writes itself.
const UNSIGNABLE: &[&str] = &[
    "authorization",
    "connection",
    "expect",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "x-amzn-trace-id",
    AMZ_DATE,
];

/// A parsed `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    /// Credential scope date, `yyyymmdd`.
    pub date: String,
    pub region: String,
    pub service: String,
    /// Lower-cased, in the order the client listed them.
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// What the server received, before any decoding.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// Still percent-encoded, exactly as in the request line.
    pub raw_path: &'a str,
    /// Without the `?`; `""` if there is none.
    pub raw_query: &'a str,
    /// Names in any case, values as received. Must include `host` (for
    /// HTTP/2, the `:authority` value under the name `host`).
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// Policy for [`verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Signing name the credential scope must carry (`bedrock`).
    pub service: &'static str,
    /// Largest accepted distance between `x-amz-date` and now.
    pub max_skew: Duration,
}

impl Default for VerifyOptions {
    /// Bedrock's signing name and AWS's 15-minute window.
    fn default() -> Self {
        VerifyOptions {
            service: "bedrock",
            max_skew: Duration::minutes(15),
        }
    }
}

/// Why a request failed authentication. `Display` is the AWS error message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    /// No `Authorization` header (detected by the caller).
    Missing,
    /// The caller has no secret for the access key id.
    UnknownAccessKey,
    /// The header or the request is not well-formed SigV4; the message is
    /// meant for the client.
    Malformed(String),
    SignatureMismatch,
    /// `x-amz-date` is outside the allowed skew. `bound` is `now ∓ skew`;
    /// `future` says the request time is after `now + skew`.
    Expired {
        request_time: String,
        now: String,
        bound: String,
        future: bool,
        max_skew_minutes: i64,
    },
    /// `x-amz-content-sha256` is not the hash of the body received.
    PayloadHashMismatch,
    WrongService {
        expected: String,
        got: String,
    },
    /// Credential scope date differs from the date of `x-amz-date`.
    WrongScopeDate {
        scope_date: String,
        request_time: String,
    },
}

impl std::fmt::Display for SigV4Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SigV4Error::Missing => f.write_str("Missing Authentication Token"),
            SigV4Error::UnknownAccessKey => {
                f.write_str("The security token included in the request is invalid.")
            }
            SigV4Error::Malformed(msg) => f.write_str(msg),
            SigV4Error::SignatureMismatch => f.write_str(
                "The request signature we calculated does not match the signature you provided. \
                 Check your AWS Secret Access Key and signing method. \
                 Consult the service documentation for details.",
            ),
            SigV4Error::Expired {
                request_time,
                now,
                bound,
                future,
                max_skew_minutes,
            } => {
                let (word, sign) = if *future {
                    ("later", '+')
                } else {
                    ("earlier", '-')
                };
                write!(
                    f,
                    "Signature expired: {request_time} is now {word} than {bound} \
                     ({now} {sign} {max_skew_minutes} min.)"
                )
            }
            SigV4Error::PayloadHashMismatch => f.write_str(
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            ),
            SigV4Error::WrongService { expected, .. } => {
                write!(
                    f,
                    "Credential should be scoped to correct service: '{expected}'."
                )
            }
            SigV4Error::WrongScopeDate {
                scope_date,
                request_time,
            } => {
                let http_date = request_time.get(..8).unwrap_or(request_time);
                write!(
                    f,
                    "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of \
                     date from HTTP: '{scope_date}' != '{http_date}', from '{request_time}'."
                )
            }
        }
    }
}

impl SigV4Error {
    /// The AWS error type (for `x-amzn-ErrorType`) and message.
    pub fn aws_error(&self) -> (&'static str, String) {
        let kind = match self {
            SigV4Error::Missing => "MissingAuthenticationTokenException",
            SigV4Error::UnknownAccessKey => "UnrecognizedClientException",
            SigV4Error::Malformed(_) => "IncompleteSignatureException",
            SigV4Error::SignatureMismatch
            | SigV4Error::Expired { .. }
            | SigV4Error::PayloadHashMismatch
            | SigV4Error::WrongService { .. }
            | SigV4Error::WrongScopeDate { .. } => "InvalidSignatureException",
        };
        (kind, self.to_string())
    }

    /// HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            SigV4Error::Malformed(_) => 400,
            _ => 403,
        }
    }
}

fn malformed(msg: impl Into<String>) -> SigV4Error {
    SigV4Error::Malformed(msg.into())
}

/// Parses an `Authorization` header value. Only the header scheme
/// `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...` is
/// accepted; parameters may come in any order.
pub fn parse_authorization(value: &str) -> Result<Authorization, SigV4Error> {
    let value = value.trim();
    let rest = match value.split_once(|c: char| c.is_ascii_whitespace()) {
        Some((ALGORITHM, rest)) => rest,
        _ => {
            return Err(malformed(format!(
                "Authorization header must use the {ALGORITHM} algorithm."
            )))
        }
    };

    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for param in rest.split(',') {
        let param = param.trim();
        if param.is_empty() {
            continue;
        }
        let Some((key, val)) = param.split_once('=') else {
            return Err(malformed(format!(
                "Authorization header parameter '{param}' is not a key=value pair."
            )));
        };
        let slot = match key {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => {
                return Err(malformed(format!(
                    "Authorization header has an unknown parameter '{key}'."
                )))
            }
        };
        if slot.replace(val).is_some() {
            return Err(malformed(format!(
                "Authorization header repeats the '{key}' parameter."
            )));
        }
    }

    let missing: Vec<String> = [
        ("Credential", credential),
        ("Signature", signature),
        ("SignedHeaders", signed_headers),
    ]
    .into_iter()
    .filter(|(_, v)| v.is_none_or(str::is_empty))
    .map(|(name, _)| format!("Authorization header requires '{name}' parameter."))
    .collect();
    let (Some(credential), Some(signed_headers), Some(signature), true) =
        (credential, signed_headers, signature, missing.is_empty())
    else {
        return Err(malformed(missing.join(" ")));
    };

    let parts: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, terminator] = parts[..] else {
        return Err(malformed(format!(
            "Credential '{credential}' must have the form \
             <access key>/<yyyymmdd>/<region>/<service>/{SCOPE_TERMINATOR}."
        )));
    };
    if access_key_id.is_empty() {
        return Err(malformed("Credential is missing the access key id."));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(format!(
            "Credential date '{date}' is not in the form yyyyMMdd."
        )));
    }
    if region.is_empty() {
        return Err(malformed("Credential should be scoped to a valid region."));
    }
    if service.is_empty() {
        return Err(malformed("Credential should be scoped to a valid service."));
    }
    if terminator != SCOPE_TERMINATOR {
        return Err(malformed(format!(
            "Credential should be scoped with a valid terminator: '{SCOPE_TERMINATOR}', \
             not '{terminator}'."
        )));
    }

    let signed_headers: Vec<String> = signed_headers
        .split(';')
        .map(str::to_ascii_lowercase)
        .collect();
    if signed_headers.iter().any(String::is_empty) {
        return Err(malformed("SignedHeaders contains an empty header name."));
    }

    Ok(Authorization {
        access_key_id: access_key_id.to_owned(),
        date: date.to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
        signed_headers,
        signature: signature.to_owned(),
    })
}

/// Verifies `req` against `auth`, given the secret for
/// `auth.access_key_id`. `now` is injected so tests can pin the clock.
///
/// A body hash in `x-amz-content-sha256` must match the body; the value
/// `UNSIGNED-PAYLOAD` is accepted as botocore can send it, which leaves the
/// body unauthenticated (serve TLS).
pub fn verify(
    req: &RequestParts,
    auth: &Authorization,
    secret_access_key: &str,
    now: OffsetDateTime,
    opts: &VerifyOptions,
) -> Result<(), SigV4Error> {
    if auth.service != opts.service {
        return Err(SigV4Error::WrongService {
            expected: opts.service.to_owned(),
            got: auth.service.clone(),
        });
    }
    let is_signed = |name: &str| auth.signed_headers.iter().any(|h| h == name);
    if !is_signed("host") {
        return Err(malformed(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }
    if !is_signed(AMZ_DATE) {
        return Err(malformed(
            "'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }
    for name in &auth.signed_headers {
        if header_values(req.headers, name).next().is_none() {
            return Err(malformed(format!(
                "Header '{name}' is listed in SignedHeaders but is not in the request."
            )));
        }
    }

    let mut dates = header_values(req.headers, AMZ_DATE);
    let (Some(amz_date), None) = (dates.next(), dates.next()) else {
        return Err(malformed(
            "The request must carry exactly one 'X-Amz-Date' header.",
        ));
    };
    let amz_date = amz_date.trim();
    let request_time = parse_amz_date(amz_date).ok_or_else(|| {
        malformed(format!(
            "X-Amz-Date '{amz_date}' must be in the ISO8601 basic format yyyyMMdd'T'HHmmss'Z'."
        ))
    })?;
    if amz_date.get(..8) != Some(auth.date.as_str()) {
        return Err(SigV4Error::WrongScopeDate {
            scope_date: auth.date.clone(),
            request_time: amz_date.to_owned(),
        });
    }
    check_skew(amz_date, request_time, now, opts.max_skew)?;

    let payload_hash = payload_hash(req)?;
    let canonical = canonical_request(req, &auth.signed_headers, &payload_hash);
    let scope = format!(
        "{}/{}/{}/{SCOPE_TERMINATOR}",
        auth.date, auth.region, auth.service
    );
    let expected = signature(
        secret_access_key,
        amz_date,
        &auth.date,
        &auth.region,
        &auth.service,
        &scope,
        &canonical,
    );
    if constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        Ok(())
    } else {
        Err(SigV4Error::SignatureMismatch)
    }
}

/// Signs `req` as botocore would and returns the headers to add:
/// `authorization`, `x-amz-date` and, only if `req.headers` already has an
/// `x-amz-content-sha256` header (the way to ask for it), that header with the
/// body's hash (or `UNSIGNED-PAYLOAD` if that was its value).
///
/// Every header in `req.headers` is signed except botocore's unsignable ones
/// (`user-agent`, `expect`, ...) and any existing `authorization` or
/// `x-amz-date`, which the returned values replace. `req.headers` must
/// include `host`.
pub fn sign(
    req: &RequestParts,
    access_key_id: &str,
    secret: &str,
    region: &str,
    service: &str,
    now: OffsetDateTime,
) -> Vec<(String, String)> {
    let amz_date = format_amz_date(now);
    let date = amz_date.get(..8).unwrap_or_default().to_owned();

    let content_sha256 = header_values(req.headers, CONTENT_SHA256).next().map(|v| {
        if v.trim() == UNSIGNED_PAYLOAD {
            UNSIGNED_PAYLOAD.to_owned()
        } else {
            hex::encode(Sha256::digest(req.body))
        }
    });
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .filter(|(name, _)| {
            let name = name.to_ascii_lowercase();
            !UNSIGNABLE.contains(&name.as_str()) && name != CONTENT_SHA256
        })
        .cloned()
        .collect();
    headers.push((AMZ_DATE.to_owned(), amz_date.clone()));
    if let Some(v) = &content_sha256 {
        headers.push((CONTENT_SHA256.to_owned(), v.clone()));
    }

    let mut signed: Vec<String> = headers
        .iter()
        .map(|(name, _)| name.to_ascii_lowercase())
        .collect();
    signed.sort();
    signed.dedup();

    let payload_hash = content_sha256
        .clone()
        .unwrap_or_else(|| hex::encode(Sha256::digest(req.body)));
    let signing_req = RequestParts {
        headers: &headers,
        ..*req
    };
    let canonical = canonical_request(&signing_req, &signed, &payload_hash);
    let scope = format!("{date}/{region}/{service}/{SCOPE_TERMINATOR}");
    let sig = signature(
        secret, &amz_date, &date, region, service, &scope, &canonical,
    );

    let mut out = vec![
        (
            "authorization".to_owned(),
            format!(
                "{ALGORITHM} Credential={access_key_id}/{scope}, SignedHeaders={}, Signature={sig}",
                signed.join(";")
            ),
        ),
        (AMZ_DATE.to_owned(), amz_date),
    ];
    if let Some(v) = content_sha256 {
        out.push((CONTENT_SHA256.to_owned(), v));
    }
    out
}

/// Values of header `name` (lower-case) in request order.
fn header_values<'a, 'n>(
    headers: &'a [(String, String)],
    name: &'n str,
) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn payload_hash(req: &RequestParts) -> Result<String, SigV4Error> {
    let body_hash = hex::encode(Sha256::digest(req.body));
    let mut claimed = header_values(req.headers, CONTENT_SHA256);
    match (claimed.next(), claimed.next()) {
        (None, _) => Ok(body_hash),
        (Some(v), None) if v.trim() == UNSIGNED_PAYLOAD => Ok(UNSIGNED_PAYLOAD.to_owned()),
        // Signed verbatim (botocore copies the header), compared as hex.
        (Some(v), None) if v.trim().eq_ignore_ascii_case(&body_hash) => Ok(v.trim().to_owned()),
        (Some(_), None) => Err(SigV4Error::PayloadHashMismatch),
        (Some(_), Some(_)) => Err(malformed(
            "The request must carry at most one 'X-Amz-Content-SHA256' header.",
        )),
    }
}

/// The canonical request; `signed` lists lower-case header names in the
/// order they are signed.
fn canonical_request(req: &RequestParts, signed: &[String], payload_hash: &str) -> String {
    let mut out = String::with_capacity(512);
    out.push_str(&req.method.to_ascii_uppercase());
    out.push('\n');
    out.push_str(&canonical_uri(req.raw_path));
    out.push('\n');
    out.push_str(&canonical_query(req.raw_query));
    out.push('\n');
    for name in signed {
        out.push_str(name);
        out.push(':');
        let values: Vec<String> = header_values(req.headers, name).map(trim_all).collect();
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed.join(";"));
    out.push('\n');
    out.push_str(payload_hash);
    out
}

/// botocore: `quote(remove_dot_segments(path), safe='/~')` on the path as
/// sent, so existing escapes are escaped again.
fn canonical_uri(raw_path: &str) -> String {
    utf8_percent_encode(&remove_dot_segments(raw_path), PATH).to_string()
}

/// botocore's `remove_dot_segments`: RFC 3986 dot removal, and empty
/// segments (`//`) dropped as AWS services require.
fn remove_dot_segments(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    let mut segments: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(seg),
        }
    }
    let mut out = String::with_capacity(path.len());
    if path.starts_with('/') {
        out.push('/');
    }
    out.push_str(&segments.join("/"));
    if path.ends_with('/') && !segments.is_empty() {
        out.push('/');
    }
    out
}

/// Pairs decoded, re-encoded with the unreserved set, then sorted by name
/// and value. A bare `key` counts as `key=`; empty pairs (`a=1&&b=2`) are
/// skipped. `+` is a literal plus, not a space.
fn canonical_query(raw_query: &str) -> String {
    let encode = |s: &str| {
        let decoded: Vec<u8> = percent_decode_str(s).collect();
        percent_encoding::percent_encode(&decoded, UNRESERVED).to_string()
    };
    let mut pairs: Vec<(String, String)> = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (encode(k), encode(v))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Python's `' '.join(value.split())`: trim and collapse whitespace runs.
fn trim_all(value: &str) -> String {
    value
        .split(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

fn signature(
    secret: &str,
    amz_date: &str,
    date: &str,
    region: &str,
    service: &str,
    scope: &str,
    canonical_request: &str,
) -> String {
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    let k_signing = hmac_sha256(&k_service, SCOPE_TERMINATOR.as_bytes());
    hex::encode(hmac_sha256(&k_signing, string_to_sign.as_bytes()))
}

/// Compares without an early exit so timing does not reveal how many
/// leading characters of a guessed signature were right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn check_skew(
    amz_date: &str,
    request_time: OffsetDateTime,
    now: OffsetDateTime,
    max_skew: Duration,
) -> Result<(), SigV4Error> {
    let age = now - request_time;
    let future = age < -max_skew;
    if age <= max_skew && !future {
        return Ok(());
    }
    let bound = if future {
        now.checked_add(max_skew)
    } else {
        now.checked_sub(max_skew)
    };
    Err(SigV4Error::Expired {
        request_time: amz_date.to_owned(),
        now: format_amz_date(now),
        bound: bound.map(format_amz_date).unwrap_or_default(),
        future,
        max_skew_minutes: max_skew.whole_minutes(),
    })
}

/// `yyyyMMdd'T'HHmmss'Z'`, strictly.
fn parse_amz_date(s: &str) -> Option<OffsetDateTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let digits = s.get(range)?;
        if !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    };
    let month = Month::try_from(u8::try_from(num(4..6)?).ok()?).ok()?;
    let date = Date::from_calendar_date(
        i32::try_from(num(0..4)?).ok()?,
        month,
        u8::try_from(num(6..8)?).ok()?,
    )
    .ok()?;
    let time = Time::from_hms(
        u8::try_from(num(9..11)?).ok()?,
        u8::try_from(num(11..13)?).ok()?,
        u8::try_from(num(13..15)?).ok()?,
    )
    .ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_utc())
}

fn format_amz_date(t: OffsetDateTime) -> String {
    // Out-of-range offsets only occur at the far ends of the calendar.
    let t = t.checked_to_offset(UtcOffset::UTC).unwrap_or(t);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests;
