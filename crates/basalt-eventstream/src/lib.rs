//! basalt-eventstream: framing for `application/vnd.amazon.eventstream`.
//!
//! This crate owns the binary message format that Bedrock's streaming
//! operations (`InvokeModelWithResponseStream`, `ConverseStream`, ...) use on
//! the wire: the prelude, typed headers, payload and both CRC32 checksums. It
//! knows nothing about HTTP or about which events a stream carries; callers
//! build [`Message`]s (usually with [`event_message`] or
//! [`exception_message`]) and write the bytes from [`Message::encode`].
//!
//! Layout (big-endian): `[total_len u32][headers_len u32][prelude_crc u32]
//! [headers][payload][message_crc u32]`. The limits are botocore's
//! (`botocore/eventstream.py`), so anything this crate encodes is accepted by
//! boto3, and [`decode_message`] rejects what boto3 would reject.

use std::collections::HashSet;

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

/// Bytes before the headers: total length, headers length, prelude CRC.
const PRELUDE_LEN: usize = 12;
/// Trailing message CRC.
const MESSAGE_CRC_LEN: usize = 4;
/// botocore's `_MAX_HEADERS_LENGTH`.
pub const MAX_HEADERS_LEN: usize = 128 * 1024;
/// botocore's `_MAX_PAYLOAD_LENGTH`.
pub const MAX_PAYLOAD_LEN: usize = 24 * 1024 * 1024;
/// A header name's length is one byte on the wire.
pub const MAX_HEADER_NAME_LEN: usize = u8::MAX as usize;
/// String and byte-array values carry a u16 length.
pub const MAX_HEADER_VALUE_LEN: usize = u16::MAX as usize;

/// Content type of every JSON event and exception payload.
const JSON: &str = "application/json";

// Wire type tags (botocore `EventStreamHeaderParser._HEADER_TYPE_MAP`).
const TYPE_TRUE: u8 = 0;
const TYPE_FALSE: u8 = 1;
const TYPE_BYTE: u8 = 2;
const TYPE_INT16: u8 = 3;
const TYPE_INT32: u8 = 4;
const TYPE_INT64: u8 = 5;
const TYPE_BYTES: u8 = 6;
const TYPE_STRING: u8 = 7;
const TYPE_TIMESTAMP: u8 = 8;
const TYPE_UUID: u8 = 9;

/// A typed header value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HeaderValue {
    Bool(bool),
    Byte(i8),
    Int16(i16),
    Int32(i32),
    Int64(i64),
    Bytes(Vec<u8>),
    String(String),
    /// Milliseconds since the Unix epoch.
    Timestamp(i64),
    Uuid([u8; 16]),
}

impl HeaderValue {
    /// The string, if this is a string header.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            HeaderValue::String(s) => Some(s),
            _ => None,
        }
    }

    fn encoded_len(&self) -> usize {
        1 + match self {
            HeaderValue::Bool(_) => 0,
            HeaderValue::Byte(_) => 1,
            HeaderValue::Int16(_) => 2,
            HeaderValue::Int32(_) => 4,
            HeaderValue::Int64(_) | HeaderValue::Timestamp(_) => 8,
            HeaderValue::Bytes(b) => 2 + b.len(),
            HeaderValue::String(s) => 2 + s.len(),
            HeaderValue::Uuid(_) => 16,
        }
    }

    fn put(&self, out: &mut BytesMut) {
        match self {
            HeaderValue::Bool(true) => out.put_u8(TYPE_TRUE),
            HeaderValue::Bool(false) => out.put_u8(TYPE_FALSE),
            HeaderValue::Byte(v) => {
                out.put_u8(TYPE_BYTE);
                out.put_i8(*v);
            }
            HeaderValue::Int16(v) => {
                out.put_u8(TYPE_INT16);
                out.put_i16(*v);
            }
            HeaderValue::Int32(v) => {
                out.put_u8(TYPE_INT32);
                out.put_i32(*v);
            }
            HeaderValue::Int64(v) => {
                out.put_u8(TYPE_INT64);
                out.put_i64(*v);
            }
            HeaderValue::Bytes(b) => {
                out.put_u8(TYPE_BYTES);
                put_len16(out, b.len());
                out.put_slice(b);
            }
            HeaderValue::String(s) => {
                out.put_u8(TYPE_STRING);
                put_len16(out, s.len());
                out.put_slice(s.as_bytes());
            }
            HeaderValue::Timestamp(v) => {
                out.put_u8(TYPE_TIMESTAMP);
                out.put_i64(*v);
            }
            HeaderValue::Uuid(u) => {
                out.put_u8(TYPE_UUID);
                out.put_slice(u);
            }
        }
    }
}

impl From<&str> for HeaderValue {
    fn from(s: &str) -> Self {
        HeaderValue::String(s.to_owned())
    }
}

impl From<String> for HeaderValue {
    fn from(s: String) -> Self {
        HeaderValue::String(s)
    }
}

/// Only called after `validate` has checked the length fits.
fn put_len16(out: &mut BytesMut, len: usize) {
    out.put_u16(u16::try_from(len).unwrap_or(u16::MAX));
}

/// One event-stream message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// Headers in wire order. Names are case-sensitive and must be unique.
    pub headers: Vec<(String, HeaderValue)>,
    pub payload: Bytes,
}

/// Why a [`Message`] could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    #[error("header name of {len} bytes exceeds the maximum of {MAX_HEADER_NAME_LEN}")]
    HeaderNameTooLong { len: usize },
    #[error("value of header {name:?} is {len} bytes, over the maximum of {MAX_HEADER_VALUE_LEN}")]
    HeaderValueTooLong { name: String, len: usize },
    #[error("headers of {len} bytes exceed the maximum of {MAX_HEADERS_LEN}")]
    HeadersTooLong { len: usize },
    #[error("payload of {len} bytes exceeds the maximum of {MAX_PAYLOAD_LEN}")]
    PayloadTooLong { len: usize },
    /// botocore refuses messages with a repeated header name.
    #[error("duplicate header {0:?}")]
    DuplicateHeader(String),
}

/// Why bytes could not be decoded as a message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("prelude checksum mismatch: expected 0x{expected:08x}, calculated 0x{computed:08x}")]
    PreludeChecksum { expected: u32, computed: u32 },
    #[error("message checksum mismatch: expected 0x{expected:08x}, calculated 0x{computed:08x}")]
    MessageChecksum { expected: u32, computed: u32 },
    #[error("header length of {len} exceeds the maximum of {MAX_HEADERS_LEN}")]
    HeadersTooLong { len: usize },
    #[error("payload length of {len} exceeds the maximum of {MAX_PAYLOAD_LEN}")]
    PayloadTooLong { len: usize },
    /// The total length cannot hold the prelude, the headers and the CRC.
    #[error("total length {total_len} is too small for headers length {headers_len}")]
    InvalidLength { total_len: u32, headers_len: u32 },
    #[error("header section is truncated")]
    TruncatedHeader,
    #[error("unknown header value type {0}")]
    UnknownHeaderType(u8),
    #[error("header name or string value is not valid UTF-8")]
    InvalidUtf8,
    #[error("duplicate header {0:?}")]
    DuplicateHeader(String),
    /// Only from [`decode_all`]: bytes left that do not form a whole message.
    #[error("{0} trailing bytes do not form a complete message")]
    TrailingBytes(usize),
}

impl Message {
    pub fn new(headers: Vec<(String, HeaderValue)>, payload: impl Into<Bytes>) -> Self {
        Message {
            headers,
            payload: payload.into(),
        }
    }

    /// The value of header `name` (exact, case-sensitive match).
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The value of header `name` if it is a string header.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(HeaderValue::as_str)
    }

    /// Checks the limits and returns the encoded header section length.
    fn validate(&self) -> Result<usize, EncodeError> {
        let mut headers_len = 0usize;
        let mut seen = HashSet::with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            if name.len() > MAX_HEADER_NAME_LEN {
                return Err(EncodeError::HeaderNameTooLong { len: name.len() });
            }
            let value_len = match value {
                HeaderValue::Bytes(b) => b.len(),
                HeaderValue::String(s) => s.len(),
                _ => 0,
            };
            if value_len > MAX_HEADER_VALUE_LEN {
                return Err(EncodeError::HeaderValueTooLong {
                    name: name.clone(),
                    len: value_len,
                });
            }
            if !seen.insert(name.as_str()) {
                return Err(EncodeError::DuplicateHeader(name.clone()));
            }
            headers_len += 1 + name.len() + value.encoded_len();
        }
        if headers_len > MAX_HEADERS_LEN {
            return Err(EncodeError::HeadersTooLong { len: headers_len });
        }
        if self.payload.len() > MAX_PAYLOAD_LEN {
            return Err(EncodeError::PayloadTooLong {
                len: self.payload.len(),
            });
        }
        Ok(headers_len)
    }

    /// Encodes the message, CRCs included.
    pub fn encode(&self) -> Result<Bytes, EncodeError> {
        let headers_len = self.validate()?;
        let total_len = PRELUDE_LEN + headers_len + self.payload.len() + MESSAGE_CRC_LEN;
        let mut out = BytesMut::with_capacity(total_len);
        // The limits above keep both lengths far below u32::MAX.
        out.put_u32(total_len as u32);
        out.put_u32(headers_len as u32);
        let prelude_crc = crc32fast::hash(&out[..8]);
        out.put_u32(prelude_crc);
        for (name, value) in &self.headers {
            out.put_u8(name.len() as u8);
            out.put_slice(name.as_bytes());
            value.put(&mut out);
        }
        out.put_slice(&self.payload);
        let message_crc = crc32fast::hash(&out);
        out.put_u32(message_crc);
        debug_assert_eq!(out.len(), total_len);
        Ok(out.freeze())
    }
}

fn string_header(name: &str, value: &str) -> (String, HeaderValue) {
    (name.to_owned(), HeaderValue::String(value.to_owned()))
}

/// A modelled event: `:event-type` is the union member name (e.g.
/// `messageStart`), the payload is the event's JSON members.
///
/// Header order matches what Bedrock sends and the reference test vector.
pub fn event_message(event_type: &str, json_payload: impl Into<Bytes>) -> Message {
    Message::new(
        vec![
            string_header(":event-type", event_type),
            string_header(":content-type", JSON),
            string_header(":message-type", "event"),
        ],
        json_payload,
    )
}

/// A modelled in-stream exception. `exception_type` must be the union
/// *member* name (`throttlingException`, not `ThrottlingException`):
/// botocore only reports the code when it names a stream member.
pub fn exception_message(exception_type: &str, json_payload: impl Into<Bytes>) -> Message {
    Message::new(
        vec![
            string_header(":exception-type", exception_type),
            string_header(":content-type", JSON),
            string_header(":message-type", "exception"),
        ],
        json_payload,
    )
}

/// An unmodelled error (`:message-type` = `error`): botocore reports
/// `:error-code` and `:error-message` as the error's code and message.
pub fn error_message(error_code: &str, error_message: &str) -> Message {
    Message::new(
        vec![
            string_header(":error-code", error_code),
            string_header(":error-message", error_message),
            string_header(":message-type", "error"),
        ],
        Bytes::new(),
    )
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_be_bytes(b)
}

/// Decodes one message from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a message (append more
/// bytes and call again), or the message and the number of bytes it used.
/// The prelude is validated as soon as its 12 bytes are present, so a corrupt
/// length is reported at once rather than waiting for bytes that never come.
pub fn decode_message(buf: &[u8]) -> Result<Option<(Message, usize)>, DecodeError> {
    if buf.len() < PRELUDE_LEN {
        return Ok(None);
    }
    let total_len = read_u32(buf, 0);
    let headers_len = read_u32(buf, 4);
    let expected = read_u32(buf, 8);
    let computed = crc32fast::hash(&buf[..8]);
    if expected != computed {
        return Err(DecodeError::PreludeChecksum { expected, computed });
    }
    let (total, hlen) = (total_len as usize, headers_len as usize);
    if hlen > MAX_HEADERS_LEN {
        return Err(DecodeError::HeadersTooLong { len: hlen });
    }
    let payload_len = total
        .checked_sub(PRELUDE_LEN + hlen + MESSAGE_CRC_LEN)
        .ok_or(DecodeError::InvalidLength {
            total_len,
            headers_len,
        })?;
    if payload_len > MAX_PAYLOAD_LEN {
        return Err(DecodeError::PayloadTooLong { len: payload_len });
    }
    if buf.len() < total {
        return Ok(None);
    }

    let crc_at = total - MESSAGE_CRC_LEN;
    let expected = read_u32(buf, crc_at);
    let computed = crc32fast::hash(&buf[..crc_at]);
    if expected != computed {
        return Err(DecodeError::MessageChecksum { expected, computed });
    }

    let headers_end = PRELUDE_LEN + hlen;
    let headers = decode_headers(&buf[PRELUDE_LEN..headers_end])?;
    let payload = Bytes::copy_from_slice(&buf[headers_end..crc_at]);
    Ok(Some((Message { headers, payload }, total)))
}

/// Decodes a buffer that must hold whole messages and nothing else, e.g. a
/// complete streamed response body in a test.
pub fn decode_all(mut buf: &[u8]) -> Result<Vec<Message>, DecodeError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        match decode_message(buf)? {
            Some((message, used)) => {
                out.push(message);
                buf = &buf[used..];
            }
            None => return Err(DecodeError::TrailingBytes(buf.len())),
        }
    }
    Ok(out)
}

/// A bounds-checked reader over the header section.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::TruncatedHeader);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn len16(&mut self) -> Result<usize, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?) as usize)
    }

    fn utf8(&mut self, n: usize) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.take(n)?).map_err(|_| DecodeError::InvalidUtf8)
    }
}

fn decode_headers(buf: &[u8]) -> Result<Vec<(String, HeaderValue)>, DecodeError> {
    let mut r = Reader { buf };
    let mut headers = Vec::new();
    // A set, not a scan: 128 KiB of tiny headers would make a scan quadratic.
    let mut seen = HashSet::new();
    while !r.buf.is_empty() {
        let name_len = r.u8()? as usize;
        let name = r.utf8(name_len)?;
        if !seen.insert(name) {
            return Err(DecodeError::DuplicateHeader(name.to_owned()));
        }
        let value = match r.u8()? {
            TYPE_TRUE => HeaderValue::Bool(true),
            TYPE_FALSE => HeaderValue::Bool(false),
            TYPE_BYTE => HeaderValue::Byte(i8::from_be_bytes(r.array()?)),
            TYPE_INT16 => HeaderValue::Int16(i16::from_be_bytes(r.array()?)),
            TYPE_INT32 => HeaderValue::Int32(i32::from_be_bytes(r.array()?)),
            TYPE_INT64 => HeaderValue::Int64(i64::from_be_bytes(r.array()?)),
            TYPE_BYTES => {
                let n = r.len16()?;
                HeaderValue::Bytes(r.take(n)?.to_vec())
            }
            TYPE_STRING => {
                let n = r.len16()?;
                HeaderValue::String(r.utf8(n)?.to_owned())
            }
            TYPE_TIMESTAMP => HeaderValue::Timestamp(i64::from_be_bytes(r.array()?)),
            TYPE_UUID => HeaderValue::Uuid(r.array()?),
            other => return Err(DecodeError::UnknownHeaderType(other)),
        };
        headers.push((name.to_owned(), value));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests;
