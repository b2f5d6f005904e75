use super::*;

/// The reference's `messageStart` vector (bedrock-wire-protocol.md §4).
const MESSAGE_START_HEX: &str = concat!(
    "000000760000005296d5fade0b3a6576656e742d7479706507000c6d65737361676553746172740d3a636f6e74656e742d74797065",
    "0700106170706c69636174696f6e2f6a736f6e0d3a6d6573736167652d747970650700056576656e747b22726f6c65223a22617373",
    "697374616e74227d6fa8c599",
);

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Frames arbitrary header bytes with correct lengths and CRCs, so tests can
/// reach the header parser with sections the encoder would never write.
fn frame(headers: &[u8], payload: &[u8]) -> Vec<u8> {
    let total = (PRELUDE_LEN + headers.len() + payload.len() + MESSAGE_CRC_LEN) as u32;
    let mut out = Vec::new();
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(headers);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// A prelude with a valid CRC and the given (possibly absurd) lengths.
fn prelude(total: u32, headers_len: u32) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&headers_len.to_be_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

fn decode_one(buf: &[u8]) -> Message {
    let (msg, used) = decode_message(buf)
        .expect("decodes")
        .expect("complete message");
    assert_eq!(used, buf.len());
    msg
}

fn every_type() -> Message {
    Message::new(
        vec![
            ("t".into(), HeaderValue::Bool(true)),
            ("f".into(), HeaderValue::Bool(false)),
            ("byte".into(), HeaderValue::Byte(-7)),
            ("short".into(), HeaderValue::Int16(-12345)),
            ("int".into(), HeaderValue::Int32(0x1234_5678)),
            ("long".into(), HeaderValue::Int64(-0x0123_4567_89ab_cdef)),
            ("bytes".into(), HeaderValue::Bytes(vec![0, 1, 2, 255])),
            ("str".into(), HeaderValue::String("héllo".into())),
            ("ts".into(), HeaderValue::Timestamp(1_700_000_000_123)),
            (
                "uuid".into(),
                HeaderValue::Uuid([
                    0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x0f, 0xed, 0xcb, 0xa9, 0x87,
                    0x65, 0x43, 0x21,
                ]),
            ),
        ],
        &b"{\"ok\":true}"[..],
    )
}

/// `every_type()` encoded. Checked in Python: botocore 1.43.11's
/// `EventStreamBuffer` decodes it to
/// `{'t': True, 'f': False, 'byte': -7, 'short': -12345, 'int': 305419896,
/// 'long': -81985529216486895, 'bytes': b'\x00\x01\x02\xff', 'str': 'héllo',
/// 'ts': 1700000000123, 'uuid': b'\x124Vx\x9a\xbc\xde\xf0\x0f\xed\xcb\xa9\x87eC!'}`
/// with payload `b'{"ok":true}'`.
const EVERY_TYPE_HEX: &str = concat!(
    "0000008400000069152a10c7017400016601046279746502f90573686f727403cfc703696e740412345678046c6f6e67",
    "05fedcba9876543211056279746573060004000102ff0373747207000668c3a96c6c6f027473080000018bcfe5687b04",
    "7575696409123456789abcdef00fedcba9876543217b226f6b223a747275657df491855c",
);

/// `exception_message("throttlingException", ...)`, which botocore decodes to
/// a status-400 response dict with headers `{':exception-type': 'throttlingException', ':content-type':
/// 'application/json', ':message-type': 'exception'}`.
const THROTTLING_HEX: &str = concat!(
    "0000008800000061de0175f40f3a657863657074696f6e2d747970650700137468726f74746c696e6745786365707469",
    "6f6e0d3a636f6e74656e742d747970650700106170706c69636174696f6e2f6a736f6e0d3a6d6573736167652d747970",
    "65070009657863657074696f6e7b226d657373616765223a22736c6f7720646f776e227d832ee072",
);

#[test]
fn reference_vector_encodes_exactly() {
    let msg = event_message("messageStart", &b"{\"role\":\"assistant\"}"[..]);
    let bytes = msg.encode().expect("encodes");
    assert_eq!(hex(&bytes), MESSAGE_START_HEX);
    assert_eq!(bytes.len(), 118);
    assert_eq!(read_u32(&bytes, 8), 0x96d5_fade);
    assert_eq!(read_u32(&bytes, bytes.len() - 4), 0x6fa8_c599);
}

#[test]
fn reference_vector_decodes() {
    let msg = decode_one(&unhex(MESSAGE_START_HEX));
    assert_eq!(msg.header_str(":event-type"), Some("messageStart"));
    assert_eq!(msg.header_str(":content-type"), Some("application/json"));
    assert_eq!(msg.header_str(":message-type"), Some("event"));
    let names: Vec<&str> = msg.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, [":event-type", ":content-type", ":message-type"]);
    assert_eq!(&msg.payload[..], b"{\"role\":\"assistant\"}");
}

#[test]
fn every_header_type_round_trips() {
    let msg = every_type();
    let bytes = msg.encode().expect("encodes");
    assert_eq!(decode_one(&bytes), msg);
}

#[test]
fn every_header_type_matches_botocore_checked_bytes() {
    let bytes = every_type().encode().expect("encodes");
    assert_eq!(hex(&bytes), EVERY_TYPE_HEX);
    assert_eq!(decode_one(&unhex(EVERY_TYPE_HEX)), every_type());
}

#[test]
fn bool_values_are_type_tags_only() {
    let msg = Message::new(
        vec![
            ("a".into(), HeaderValue::Bool(true)),
            ("b".into(), HeaderValue::Bool(false)),
        ],
        Bytes::new(),
    );
    let bytes = msg.encode().expect("encodes");
    // name_len, name, type tag; no value bytes.
    assert_eq!(&bytes[12..18], &[1, b'a', 0, 1, b'b', 1]);
    assert_eq!(decode_one(&bytes), msg);
}

#[test]
fn empty_message_round_trips() {
    let msg = Message::default();
    let bytes = msg.encode().expect("encodes");
    assert_eq!(bytes.len(), 16);
    assert_eq!(decode_one(&bytes), msg);
}

#[test]
fn exception_message_headers() {
    let msg = exception_message("throttlingException", &b"{\"message\":\"slow down\"}"[..]);
    assert_eq!(
        msg.header_str(":exception-type"),
        Some("throttlingException")
    );
    assert_eq!(msg.header_str(":content-type"), Some("application/json"));
    assert_eq!(msg.header_str(":message-type"), Some("exception"));
    assert_eq!(msg.header_str(":event-type"), None);
    let bytes = msg.encode().expect("encodes");
    assert_eq!(hex(&bytes), THROTTLING_HEX);
    assert_eq!(decode_one(&bytes), msg);
}

#[test]
fn error_message_headers() {
    let msg = error_message("InternalFailure", "boom");
    assert_eq!(msg.header_str(":message-type"), Some("error"));
    assert_eq!(msg.header_str(":error-code"), Some("InternalFailure"));
    assert_eq!(msg.header_str(":error-message"), Some("boom"));
    assert!(msg.payload.is_empty());
    assert_eq!(decode_one(&msg.encode().expect("encodes")), msg);
}

#[test]
fn header_str_ignores_non_strings_and_case() {
    let msg = every_type();
    assert_eq!(msg.header_str("str"), Some("héllo"));
    assert_eq!(msg.header_str("int"), None);
    assert_eq!(msg.header_str("STR"), None);
    assert_eq!(msg.header("int"), Some(&HeaderValue::Int32(0x1234_5678)));
}

#[test]
fn every_truncation_needs_more_bytes() {
    let bytes = unhex(MESSAGE_START_HEX);
    for n in 0..bytes.len() {
        assert_eq!(decode_message(&bytes[..n]), Ok(None), "prefix of {n} bytes");
    }
}

#[test]
fn consecutive_messages_decode_in_order() {
    let a = event_message("contentBlockDelta", &b"{\"a\":1}"[..]);
    let b = event_message("messageStop", &b"{\"stopReason\":\"end_turn\"}"[..]);
    let mut buf = a.encode().expect("encodes").to_vec();
    buf.extend_from_slice(&b.encode().expect("encodes"));

    let (first, used) = decode_message(&buf).expect("ok").expect("complete");
    assert_eq!(first, a);
    let (second, used2) = decode_message(&buf[used..]).expect("ok").expect("complete");
    assert_eq!(second, b);
    assert_eq!(used + used2, buf.len());

    assert_eq!(decode_all(&buf).expect("whole"), vec![a, b]);
    assert_eq!(
        decode_all(&buf[..buf.len() - 1]),
        Err(DecodeError::TrailingBytes(buf.len() - 1 - used))
    );
}

#[test]
fn corrupted_prelude_crc_is_an_error() {
    let mut bytes = unhex(MESSAGE_START_HEX);
    bytes[11] ^= 0x01;
    assert_eq!(
        decode_message(&bytes),
        Err(DecodeError::PreludeChecksum {
            expected: 0x96d5_fadf,
            computed: 0x96d5_fade
        })
    );
    // Reported as soon as the prelude is in, before the rest arrives.
    assert!(decode_message(&bytes[..12]).is_err());
}

#[test]
fn corrupted_length_is_caught_by_prelude_crc() {
    let mut bytes = unhex(MESSAGE_START_HEX);
    bytes[3] = 0x77;
    assert!(matches!(
        decode_message(&bytes),
        Err(DecodeError::PreludeChecksum { .. })
    ));
}

#[test]
fn corrupted_message_crc_is_an_error() {
    let mut bytes = unhex(MESSAGE_START_HEX);
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    assert_eq!(
        decode_message(&bytes),
        Err(DecodeError::MessageChecksum {
            expected: 0x6fa8_c519,
            computed: 0x6fa8_c599
        })
    );
}

#[test]
fn corrupted_payload_is_an_error() {
    let mut bytes = unhex(MESSAGE_START_HEX);
    bytes[100] ^= 0x20;
    assert!(matches!(
        decode_message(&bytes),
        Err(DecodeError::MessageChecksum { .. })
    ));
}

#[test]
fn duplicate_header_is_rejected_both_ways() {
    let msg = Message::new(
        vec![
            (":event-type".into(), "a".into()),
            (":event-type".into(), "b".into()),
        ],
        Bytes::new(),
    );
    assert_eq!(
        msg.encode(),
        Err(EncodeError::DuplicateHeader(":event-type".into()))
    );

    // Same name twice with different types still counts as a duplicate.
    let headers = [&[1, b'x', 0][..], &[1, b'x', 2, 5][..]].concat();
    assert_eq!(
        decode_message(&frame(&headers, b"")),
        Err(DecodeError::DuplicateHeader("x".into()))
    );
}

#[test]
fn header_names_are_case_sensitive() {
    let msg = Message::new(
        vec![("a".into(), "1".into()), ("A".into(), "2".into())],
        Bytes::new(),
    );
    assert_eq!(decode_one(&msg.encode().expect("distinct names")), msg);
}

#[test]
fn encode_limits() {
    let long_name = "n".repeat(256);
    let msg = Message::new(vec![(long_name, HeaderValue::Bool(true))], Bytes::new());
    assert_eq!(
        msg.encode(),
        Err(EncodeError::HeaderNameTooLong { len: 256 })
    );

    let max_name = "n".repeat(255);
    let msg = Message::new(vec![(max_name, HeaderValue::Bool(true))], Bytes::new());
    assert_eq!(decode_one(&msg.encode().expect("255 fits")), msg);

    let msg = Message::new(
        vec![("s".into(), HeaderValue::String("x".repeat(65_536)))],
        Bytes::new(),
    );
    assert_eq!(
        msg.encode(),
        Err(EncodeError::HeaderValueTooLong {
            name: "s".into(),
            len: 65_536
        })
    );
    let msg = Message::new(
        vec![("b".into(), HeaderValue::Bytes(vec![0; 65_536]))],
        Bytes::new(),
    );
    assert!(matches!(
        msg.encode(),
        Err(EncodeError::HeaderValueTooLong { len: 65_536, .. })
    ));
    let msg = Message::new(
        vec![("b".into(), HeaderValue::Bytes(vec![7; 65_535]))],
        Bytes::new(),
    );
    assert_eq!(decode_one(&msg.encode().expect("u16::MAX fits")), msg);

    // Three values that each fit but together pass 128 KiB.
    let headers = (0..3)
        .map(|i| (format!("h{i}"), HeaderValue::Bytes(vec![0; 50_000])))
        .collect();
    let msg = Message::new(headers, Bytes::new());
    assert_eq!(
        msg.encode(),
        Err(EncodeError::HeadersTooLong {
            len: 3 * (1 + 2 + 1 + 2 + 50_000)
        })
    );

    let msg = Message::new(vec![], vec![0u8; MAX_PAYLOAD_LEN + 1]);
    assert_eq!(
        msg.encode(),
        Err(EncodeError::PayloadTooLong {
            len: MAX_PAYLOAD_LEN + 1
        })
    );
    let msg = Message::new(vec![], vec![1u8; MAX_PAYLOAD_LEN]);
    let bytes = msg.encode().expect("24 MiB fits");
    assert_eq!(decode_one(&bytes).payload.len(), MAX_PAYLOAD_LEN);
}

#[test]
fn decode_limits() {
    let over_headers = (MAX_HEADERS_LEN + 1) as u32;
    assert_eq!(
        decode_message(&prelude(over_headers + 16, over_headers)),
        Err(DecodeError::HeadersTooLong {
            len: MAX_HEADERS_LEN + 1
        })
    );
    let over_payload = (MAX_PAYLOAD_LEN + 1) as u32;
    assert_eq!(
        decode_message(&prelude(over_payload + 16, 0)),
        Err(DecodeError::PayloadTooLong {
            len: MAX_PAYLOAD_LEN + 1
        })
    );
    assert_eq!(
        decode_message(&prelude(u32::MAX, 0)),
        Err(DecodeError::PayloadTooLong {
            len: u32::MAX as usize - 16
        })
    );
    // Too short to hold the prelude, its headers and the message CRC.
    for (total, headers_len) in [(0, 0), (15, 0), (20, 8)] {
        assert_eq!(
            decode_message(&prelude(total, headers_len)),
            Err(DecodeError::InvalidLength {
                total_len: total,
                headers_len
            })
        );
    }
}

#[test]
fn malformed_header_sections_are_errors() {
    let cases: [(&[u8], DecodeError); 7] = [
        // Name length runs past the section.
        (&[5, b'a'], DecodeError::TruncatedHeader),
        // Name with no type byte.
        (&[1, b'a'], DecodeError::TruncatedHeader),
        // int32 with two of its four bytes.
        (&[1, b'a', 4, 0, 0], DecodeError::TruncatedHeader),
        // String length past the section.
        (&[1, b'a', 7, 0, 9, b'x'], DecodeError::TruncatedHeader),
        // UUID short by one.
        (
            &[1, b'a', 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            DecodeError::TruncatedHeader,
        ),
        (&[1, b'a', 10], DecodeError::UnknownHeaderType(10)),
        (&[1, 0xff, 0], DecodeError::InvalidUtf8),
    ];
    for (headers, want) in cases {
        assert_eq!(
            decode_message(&frame(headers, b"payload")),
            Err(want),
            "headers {headers:?}"
        );
    }
    let bad_value = [1, b'a', 7, 0, 2, 0xc3, 0x28];
    assert_eq!(
        decode_message(&frame(&bad_value, b"")),
        Err(DecodeError::InvalidUtf8)
    );
}

#[test]
fn payload_need_not_be_utf8() {
    let msg = Message::new(vec![], vec![0xff, 0x00, 0xfe]);
    assert_eq!(decode_one(&msg.encode().expect("encodes")), msg);
}

/// Cheap deterministic fuzzing: mutated and random buffers must give a
/// result, never a panic.
#[test]
fn garbage_never_panics() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let valid = every_type().encode().expect("encodes").to_vec();
    for _ in 0..20_000 {
        let mut buf = valid.clone();
        let flips = 1 + next() % 4;
        for _ in 0..flips {
            let i = (next() as usize) % buf.len();
            buf[i] = next() as u8;
        }
        let cut = (next() as usize) % (buf.len() + 1);
        let _ = decode_message(&buf[..cut]);
        let _ = decode_all(&buf);
    }
    // Random header sections behind valid CRCs reach the header parser.
    for _ in 0..20_000 {
        let len = (next() % 40) as usize;
        let headers: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let _ = decode_message(&frame(&headers, b"p"));
    }
}
