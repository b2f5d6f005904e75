//! Pattern detectors: self-describing formats (with checksums where the format
//! has one) and keyword-gated weak formats.

use std::sync::LazyLock;

use regex::{Captures, Regex, RegexBuilder};

use super::checksum;
use super::country::is_iso_alpha2;
use super::{PiiMatch, PiiType};

/// ASCII-only classes and word boundaries: several times faster than the
/// Unicode defaults, and every format here is ASCII. `(?u:...)` opts back in.
fn build(pat: &str) -> Regex {
    RegexBuilder::new(pat)
        .unicode(false)
        .build()
        .expect("static regex")
}

macro_rules! re {
    ($name:ident, $pat:expr) => {
        static $name: LazyLock<Regex> = LazyLock::new(|| build($pat));
    };
}

re!(
    EMAIL,
    r"(?i)[a-z0-9_%+-](?:[a-z0-9._%+-]*[a-z0-9_%+-])?@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.[a-z]{2,24}\b"
);
re!(
    URL,
    r#"(?i)\b(?:https?://|www\.)(?u:[^\s<>"'`{}|\\^\[\]])+"#
);
re!(IPV4, r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b");
re!(
    IPV6,
    r"(?i)(?:[0-9a-f]{1,4}|::?)(?:[0-9a-f]{0,4}:){1,7}(?:[0-9a-f]{1,4}|\d{1,3}(?:\.\d{1,3}){3})?"
);
re!(
    VERSION_CUE,
    r"(?i)\b(?:version|ver\.?|v|build|release|firmware|rev)\s*$"
);
re!(
    MAC,
    r"(?i)\b[0-9a-f]{2}(?::[0-9a-f]{2}){5}\b|\b[0-9a-f]{2}(?:-[0-9a-f]{2}){5}\b|\b[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}\b"
);
// Real keys are base32 ([A-Z2-7]), but AWS's own documented examples use 8 and 9.
re!(AWS_ACCESS, r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b");
re!(AWS_SECRET_RUN, r"[A-Za-z0-9/+=]{40,}");
re!(
    AWS_SECRET_HINT,
    r"(?i)secret|aws_secret|secretaccesskey|secret_access_key"
);
re!(CARD, r"\b\d(?:[ -]?\d){12,22}\b");
re!(
    CARD_EXPIRY_AFTER,
    r"^(?u:\D){0,20}?\b(0[1-9]|1[0-2])\s?/\s?(?:20)?\d{2}\b"
);
re!(PHONE_INTL, r"\+\d{1,3}(?:[\s.-]?\(?\d{1,5}\)?){1,6}\b");
re!(
    PHONE_NANP,
    r"(?:\b1[\s.-]?)?(?:\(\d{3}\)[\s.-]?|\b\d{3}[\s.-])\d{3}[\s.-]\d{4}\b"
);
re!(
    PHONE_TRUNK,
    r"(?:\(0\d{1,4}\)|\b0\d{1,4})[\s.-]?\d{3,4}[\s.-]?\d{3,4}\b"
);
re!(SSN_FMT, r"\b\d{3}[- ]\d{2}[- ]\d{4}\b");
re!(SIN_FMT, r"\b\d{3}[- ]\d{3}[- ]\d{3}\b");
re!(UK_NINO, r"\b[A-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b");
re!(
    IBAN,
    r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"
);
re!(VIN, r"\b[A-HJ-NPR-Z0-9]{17}\b");
re!(SWIFT, r"\b[A-Z]{6}[A-Z0-9]{2}(?:[A-Z0-9]{3})?\b");
re!(SWIFT_HINT, r"(?i)\b(?:swift|bic|bank)\b");
re!(HANDLE, r"(?:^|[\s(,;])(@[A-Za-z0-9_]{2,30})\b");

/// Between a keyword and its value: punctuation and a few filler words
/// ("PIN number is 1234", "CVV: 123", "exp. on 09/27").
const TIGHT: &str =
    r"[\s:#=.\-]*(?:(?i:is|was|are|number|num|no|nr|code|of|for|on|at|ends? in)[\s:#=.\-]+){0,3}";
/// For checksummed values a keyword a few words away is enough.
const LOOSE: &str = r"(?u:[^\d\n]){0,32}?";
/// Password and username take an explicit separator, or plain space.
const SEP: &str = r"(?P<sep>\s*[:=]\s*|\s+(?i:is|was|to|of|set to)\s*[:=]?\s*|\s+)";

struct Gate {
    kind: PiiType,
    re: Regex,
    check: fn(&str, &Captures<'_>) -> bool,
}

fn gate(
    kind: PiiType,
    kw: &str,
    filler: &str,
    value: &str,
    check: fn(&str, &Captures<'_>) -> bool,
) -> Gate {
    let pat = format!("(?:{kw}){filler}(?P<v>{value})");
    Gate {
        kind,
        re: build(&pat),
        check,
    }
}

fn any(_: &str, _: &Captures<'_>) -> bool {
    true
}

fn digits_of(s: &str) -> Vec<u8> {
    s.bytes().filter(u8::is_ascii_digit).collect()
}

static GATES: LazyLock<Vec<Gate>> = LazyLock::new(|| {
    use PiiType::*;
    vec![
        gate(
            CreditDebitCardCvv,
            r"(?i:\b(?:cvv2?|cvc2?|cvn|cid|csc|card verification (?:value|code|number)|security code))\b",
            TIGHT,
            r"\d{3,4}\b",
            any,
        ),
        gate(
            CreditDebitCardExpiry,
            r"(?i:\b(?:exp(?:iry|iration|ires|ired)?\b\.?|(?:valid|good) (?:thru|through|until)\b)(?:\s+date\b)?)",
            TIGHT,
            r"(?:(?:0?[1-9]|1[0-2])\s?[/-]\s?(?:20)?\d{2}|(?i:jan|feb|mar|apr|may|jun|jul|aug|sept?|oct|nov|dec)[a-z]*\.?\s+(?:20)?\d{2})\b",
            any,
        ),
        gate(
            Pin,
            r"(?i:\bpin(?:\s*code|\s*number)?)\b",
            TIGHT,
            r"\d{4,8}\b",
            any,
        ),
        gate(
            Password,
            r"(?i:\b(?:password|passwd|passcode|passphrase|pass phrase|pwd|pw))\b",
            SEP,
            r#"(?u:[^\s"'“”]){3,64}"#,
            secretish,
        ),
        gate(
            Username,
            r"(?i:\b(?:user\s?name|user\s?id|login(?:\s+id)?|screen\s?name|handle|account\s+name))\b",
            SEP,
            r"@?[A-Za-z0-9][A-Za-z0-9._-]{1,31}\b",
            secretish,
        ),
        gate(
            Age,
            r"(?i:\b(?:age[ds]?|aged))\b",
            TIGHT,
            r"\d{1,3}\b",
            age_ok,
        ),
        gate(
            DriverId,
            r"(?:(?i:\b(?:driver'?s?'?\s+licen[sc]e|driving\s+licen[cs]e|licen[cs]e\s+(?:number|no\b|#)))|\bDL\b|\bD\.L\.)",
            TIGHT,
            r"[A-Z0-9](?:[A-Z0-9-]{3,18})[A-Z0-9]\b",
            has_digit,
        ),
        gate(
            LicensePlate,
            r"(?i:\b(?:licen[sc]e\s+plate|number\s+plate|registration\s+plate|plate|tag|registration|reg\.?))\b",
            TIGHT,
            r"[A-Z0-9]{1,4}(?:[ -]?[A-Z0-9]{1,4}){0,2}\b",
            plate_ok,
        ),
        gate(
            UsPassportNumber,
            r"(?i:\bpassport)\b",
            TIGHT,
            r"(?:[A-Z]\d{8}|\d{9})\b",
            any,
        ),
        gate(
            UsBankAccountNumber,
            r"(?i:\b(?:(?:bank|checking|savings|chequing|deposit)\s+)?(?:account|acct|a/c)\.?)",
            TIGHT,
            r"\d(?:-?\d){5,16}\b",
            any,
        ),
        gate(
            UsBankRoutingNumber,
            r"(?i:\b(?:routing|aba|rtn|transit))\b",
            LOOSE,
            r"\d{9}\b",
            |v, _| checksum::aba_routing(v.as_bytes()),
        ),
        gate(
            UsSocialSecurityNumber,
            r"(?i:\b(?:ssn|ss#|social security))",
            LOOSE,
            r"\d{9}\b",
            |v, _| checksum::ssn(v.as_bytes()),
        ),
        gate(
            UsIndividualTaxIdentificationNumber,
            r"(?i:\b(?:itin|individual taxpayer identification|taxpayer id))",
            LOOSE,
            r"\d{9}\b",
            |v, _| checksum::itin(v.as_bytes()),
        ),
        gate(
            CaSocialInsuranceNumber,
            r"(?:\bSIN\b|(?i:social insurance))",
            LOOSE,
            r"\d{9}\b",
            |v, _| checksum::ca_sin(v.as_bytes()),
        ),
        gate(
            UkNationalHealthServiceNumber,
            r"(?:\bNHS\b|(?i:national health service|health service))",
            LOOSE,
            r"\d{3}[ -]?\d{3}[ -]?\d{4}\b",
            |v, _| checksum::nhs(&digits_of(v)),
        ),
        gate(
            UkUniqueTaxpayerReferenceNumber,
            r"(?:\bUTR\b|(?i:unique taxpayer reference|tax reference|self assessment reference))",
            LOOSE,
            r"\d{5} ?\d{5}K?\b",
            any,
        ),
        gate(
            CaHealthNumber,
            r"(?:\b(?:OHIP|RAMQ|MSP|PHN)\b|(?i:health\s+card|health\s+(?:insurance\s+)?number|care\s*card|personal health number))",
            LOOSE,
            r"(?:\d{4}[- ]?\d{3}[- ]?\d{3}(?:[- ]?[A-Z]{2})?|[A-Z]{4} ?\d{4} ?\d{4})\b",
            any,
        ),
        gate(
            VehicleIdentificationNumber,
            r"\bVIN\b",
            TIGHT,
            r"[A-HJ-NPR-Z0-9]{17}\b",
            has_digit,
        ),
        gate(
            SwiftCode,
            r"(?i:\b(?:swift|bic))\b",
            TIGHT,
            r"[A-Z]{6}[A-Z0-9]{2}(?:[A-Z0-9]{3})?\b",
            |v, _| is_iso_alpha2(&v.as_bytes()[4..6]),
        ),
        gate(
            Phone,
            r"(?i:\b(?:phone|call|tel|telephone|mobile|cell|fax|text|whatsapp|contact))\b",
            TIGHT,
            r"\d{10}\b",
            |v, _| matches!(v.as_bytes()[0], b'2'..=b'9'),
        ),
    ]
});

/// Words that follow "password"/"username" but are not the secret itself.
const NOT_SECRET: &[&str] = &[
    "incorrect",
    "wrong",
    "required",
    "reset",
    "expired",
    "invalid",
    "correct",
    "manager",
    "policy",
    "protected",
    "change",
    "changed",
    "field",
    "hint",
    "strength",
    "strong",
    "weak",
    "must",
    "should",
    "will",
    "can",
    "and",
    "the",
    "for",
    "was",
    "is",
    "to",
    "of",
    "you",
    "your",
    "my",
    "has",
    "have",
    "been",
    "not",
    "please",
    "again",
    "here",
    "below",
    "above",
    "with",
    "that",
    "this",
    "it",
    "when",
    "if",
    "or",
    "but",
    "then",
    "them",
    "they",
    "we",
    "recovery",
    "forgot",
    "forgotten",
    "updated",
    "update",
    "login",
    "page",
    "form",
    "box",
    "entry",
    "prompt",
    "request",
    "requests",
    "requirements",
    "rules",
    "used",
    "length",
    "characters",
    "same",
    "unknown",
    "too",
    "needs",
    "never",
    "again.",
    "section",
    "settings",
    "screen",
    "also",
    "set",
];

/// Password/username values: not a plain word when only a space separates it
/// from the keyword; never a filler word.
fn secretish(v: &str, caps: &Captures<'_>) -> bool {
    let lower = v.to_ascii_lowercase();
    if NOT_SECRET.contains(&lower.as_str()) || super::names::is_common_word(&lower) {
        // A common word is still a password when it was given explicitly ("password: sunshine").
        let explicit = caps
            .name("sep")
            .is_some_and(|s| s.as_str().contains([':', '=']));
        if !explicit || NOT_SECRET.contains(&lower.as_str()) {
            return false;
        }
    }
    let plain_space = caps
        .name("sep")
        .is_some_and(|s| s.as_str().trim().is_empty());
    if plain_space {
        return v.bytes().any(|b| !b.is_ascii_alphabetic());
    }
    true
}

fn has_digit(v: &str, _: &Captures<'_>) -> bool {
    v.bytes().any(|b| b.is_ascii_digit())
}

fn age_ok(v: &str, _: &Captures<'_>) -> bool {
    v.parse::<u32>().is_ok_and(|a| a <= 125)
}

fn plate_ok(v: &str, _: &Captures<'_>) -> bool {
    let alnum = v.bytes().filter(u8::is_ascii_alphanumeric).count();
    (4..=8).contains(&alnum) && v.bytes().any(|b| b.is_ascii_digit())
}

re!(
    AGE_BEFORE,
    r"(?i)\b(\d{1,3})(?:\s*|-)(?:years?|yrs?)(?:\s*|-)old\b|\b(\d{1,3})\s?(?:y/o|yo)\b|\b(\d{1,3}) years of age\b"
);

fn push(out: &mut Vec<PiiMatch>, kind: PiiType, start: usize, end: usize) {
    out.push(PiiMatch { kind, start, end });
}

fn byte_before(text: &str, i: usize) -> Option<u8> {
    i.checked_sub(1).map(|j| text.as_bytes()[j])
}

/// Start of a window of about `n` bytes before `i`, on a char boundary.
fn window_start(text: &str, i: usize, n: usize) -> usize {
    let mut s = i.saturating_sub(n);
    while !text.is_char_boundary(s) {
        s -= 1;
    }
    s
}

fn window_end(text: &str, i: usize, n: usize) -> usize {
    let mut e = (i + n).min(text.len());
    while !text.is_char_boundary(e) {
        e += 1;
    }
    e
}

pub fn find(text: &str, out: &mut Vec<PiiMatch>) {
    emails(text, out);
    urls(text, out);
    ips(text, out);
    macs(text, out);
    aws(text, out);
    cards(text, out);
    phones(text, out);
    national_ids(text, out);
    bank(text, out);
    gated(text, out);
}

fn emails(text: &str, out: &mut Vec<PiiMatch>) {
    for m in EMAIL.find_iter(text) {
        push(out, PiiType::Email, m.start(), m.end());
    }
}

fn urls(text: &str, out: &mut Vec<PiiMatch>) {
    for m in URL.find_iter(text) {
        let s = m.as_str();
        let mut end = s.len();
        // Sentence punctuation and an unbalanced closing bracket are not part of the link.
        while let Some(&last) = s.as_bytes()[..end].last() {
            let opens = s[..end].matches('(').count();
            let closes = s[..end].matches(')').count();
            if b".,;:!?'\"".contains(&last) || (last == b')' && closes > opens) {
                end -= 1;
            } else {
                break;
            }
        }
        if end > 4 {
            push(out, PiiType::Url, m.start(), m.start() + end);
        }
    }
}

fn ips(text: &str, out: &mut Vec<PiiMatch>) {
    let b = text.as_bytes();
    for m in IPV4.find_iter(text) {
        let ok = m.as_str().split('.').all(|o| {
            o.parse::<u16>().is_ok_and(|v| v <= 255) && (o.len() == 1 || !o.starts_with('0'))
        });
        // Part of a longer dotted run (1.2.3.4.5) or an OID: not an address.
        let longer_after =
            b.get(m.end()) == Some(&b'.') && b.get(m.end() + 1).is_some_and(u8::is_ascii_digit);
        let longer_before =
            m.start() >= 2 && b[m.start() - 1] == b'.' && b[m.start() - 2].is_ascii_digit();
        let version = VERSION_CUE.is_match(&text[window_start(text, m.start(), 12)..m.start()]);
        if ok && !longer_after && !longer_before && !version {
            push(out, PiiType::IpAddress, m.start(), m.end());
        }
    }
    for m in IPV6.find_iter(text) {
        let before = byte_before(text, m.start());
        if before.is_some_and(|c| c.is_ascii_hexdigit() || c == b':') {
            continue;
        }
        let mut s = m.as_str();
        if s.ends_with(':') && !s.ends_with("::") {
            s = &s[..s.len() - 1];
        }
        if s.matches(':').count() < 2 {
            continue;
        }
        if s.parse::<std::net::Ipv6Addr>().is_ok() {
            push(out, PiiType::IpAddress, m.start(), m.start() + s.len());
        }
    }
}

fn macs(text: &str, out: &mut Vec<PiiMatch>) {
    let b = text.as_bytes();
    for m in MAC.find_iter(text) {
        if b.get(m.end()) == Some(&b':') || byte_before(text, m.start()) == Some(b':') {
            continue;
        }
        push(out, PiiType::MacAddress, m.start(), m.end());
    }
}

fn aws(text: &str, out: &mut Vec<PiiMatch>) {
    for m in AWS_ACCESS.find_iter(text) {
        push(out, PiiType::AwsAccessKey, m.start(), m.end());
    }
    for m in AWS_SECRET_RUN.find_iter(text) {
        let s = m.as_str().trim_end_matches('=');
        if s.len() != 40 || s.contains('=') {
            continue;
        }
        let b = s.as_bytes();
        let upper = b.iter().any(u8::is_ascii_uppercase);
        let lower = b.iter().any(u8::is_ascii_lowercase);
        let other = b
            .iter()
            .any(|c| c.is_ascii_digit() || *c == b'/' || *c == b'+');
        if !(upper && lower && other) {
            continue;
        }
        let before = &text[window_start(text, m.start(), 80)..m.start()];
        let around = &text[window_start(text, m.start(), 120)..window_end(text, m.end(), 120)];
        if AWS_SECRET_HINT.is_match(before) || AWS_ACCESS.is_match(around) {
            push(out, PiiType::AwsSecretKey, m.start(), m.start() + 40);
        }
    }
}

fn cards(text: &str, out: &mut Vec<PiiMatch>) {
    for m in CARD.find_iter(text) {
        let s = m.as_str();
        // Digit groups, as (start, end) byte offsets within s.
        let mut groups: Vec<(usize, usize)> = Vec::new();
        let mut seps = Vec::new();
        let mut i = 0;
        let b = s.as_bytes();
        while i < b.len() {
            let st = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            groups.push((st, i));
            if i < b.len() {
                seps.push(b[i]);
                i += 1;
            }
        }
        if seps.windows(2).any(|w| w[0] != w[1]) {
            continue;
        }
        // Try the longest run of whole groups that is a valid card.
        let mut best: Option<(usize, usize)> = None;
        'outer: for first in 0..groups.len() {
            for last in (first..groups.len()).rev() {
                let (gs, ge) = (groups[first].0, groups[last].1);
                let d = digits_of(&s[gs..ge]);
                if checksum::card_number(&d) {
                    best = Some((gs, ge));
                    break 'outer;
                }
            }
        }
        if let Some((gs, ge)) = best {
            let (start, end) = (m.start() + gs, m.start() + ge);
            push(out, PiiType::CreditDebitCardNumber, start, end);
            // "4111 1111 1111 1111 12/27": an expiry right after a card needs no keyword.
            if let Some(c) = CARD_EXPIRY_AFTER.captures(&text[end..window_end(text, end, 40)]) {
                if let Some(whole) = c.get(0) {
                    let vs = c.get(1).map_or(whole.start(), |g| g.start());
                    push(
                        out,
                        PiiType::CreditDebitCardExpiry,
                        end + vs,
                        end + whole.end(),
                    );
                }
            }
        }
    }
}

fn phones(text: &str, out: &mut Vec<PiiMatch>) {
    for m in PHONE_INTL.find_iter(text) {
        let n = m.as_str().bytes().filter(u8::is_ascii_digit).count();
        if (8..=15).contains(&n) {
            push(out, PiiType::Phone, m.start(), m.end());
        }
    }
    for m in PHONE_NANP.find_iter(text) {
        if byte_before(text, m.start()) == Some(b'+') {
            continue;
        }
        let d = digits_of(m.as_str());
        let area = if d.len() == 11 { d[1] } else { d[0] };
        if area >= b'2' {
            push(out, PiiType::Phone, m.start(), m.end());
        }
    }
    for m in PHONE_TRUNK.find_iter(text) {
        let n = m.as_str().bytes().filter(u8::is_ascii_digit).count();
        if (10..=11).contains(&n) && byte_before(text, m.start()) != Some(b'+') {
            push(out, PiiType::Phone, m.start(), m.end());
        }
    }
}

fn national_ids(text: &str, out: &mut Vec<PiiMatch>) {
    for m in SSN_FMT.find_iter(text) {
        if !same_separators(m.as_str()) {
            continue;
        }
        let d = digits_of(m.as_str());
        if checksum::ssn(&d) {
            push(out, PiiType::UsSocialSecurityNumber, m.start(), m.end());
        } else if checksum::itin(&d) {
            push(
                out,
                PiiType::UsIndividualTaxIdentificationNumber,
                m.start(),
                m.end(),
            );
        }
    }
    for m in SIN_FMT.find_iter(text) {
        if same_separators(m.as_str()) && checksum::ca_sin(&digits_of(m.as_str())) {
            push(out, PiiType::CaSocialInsuranceNumber, m.start(), m.end());
        }
    }
    for m in UK_NINO.find_iter(text) {
        let b = m.as_str().as_bytes();
        if checksum::uk_nino_prefix(b[0], b[1]) {
            push(out, PiiType::UkNationalInsuranceNumber, m.start(), m.end());
        }
    }
    for m in VIN.find_iter(text) {
        let b = m.as_str().as_bytes();
        let letters = b.iter().any(u8::is_ascii_uppercase);
        if letters && checksum::vin(b) {
            push(
                out,
                PiiType::VehicleIdentificationNumber,
                m.start(),
                m.end(),
            );
        }
    }
}

/// Separator consistency for "123-45-6789" style numbers.
fn same_separators(s: &str) -> bool {
    let mut seps = s.bytes().filter(|c| !c.is_ascii_digit());
    let first = seps.next();
    seps.all(|c| Some(c) == first)
}

fn bank(text: &str, out: &mut Vec<PiiMatch>) {
    for m in IBAN.find_iter(text) {
        let s = m.as_str();
        let compact: Vec<u8> = s.bytes().filter(|c| *c != b' ').collect();
        let want = checksum::iban_expected_len(&compact[..2]);
        // Take exactly the country's length when known: the regex may run into a following word.
        let take = want.unwrap_or(compact.len()).min(compact.len());
        if !checksum::iban(&compact[..take]) {
            continue;
        }
        let mut seen = 0;
        let mut end = s.len();
        for (i, c) in s.bytes().enumerate() {
            if c != b' ' {
                seen += 1;
                if seen == take {
                    end = i + 1;
                    break;
                }
            }
        }
        let after = s.as_bytes().get(end);
        if after.is_none() || after == Some(&b' ') {
            push(
                out,
                PiiType::InternationalBankAccountNumber,
                m.start(),
                m.start() + end,
            );
        }
    }
    for m in SWIFT.find_iter(text) {
        let b = m.as_str().as_bytes();
        if !is_iso_alpha2(&b[4..6]) {
            continue;
        }
        // All-caps words fit the shape too: want a digit in the location/branch,
        // a "XXX" branch, or a banking word nearby.
        let shaped = b[6..].iter().any(u8::is_ascii_digit) || m.as_str().ends_with("XXX");
        let hinted = SWIFT_HINT.is_match(&text[window_start(text, m.start(), 40)..m.start()]);
        if shaped || hinted {
            push(out, PiiType::SwiftCode, m.start(), m.end());
        }
    }
}

fn gated(text: &str, out: &mut Vec<PiiMatch>) {
    for g in GATES.iter() {
        for c in g.re.captures_iter(text) {
            let Some(v) = c.name("v") else { continue };
            let mut vs = v.as_str();
            if matches!(g.kind, PiiType::Password | PiiType::Username) {
                // "!" and "?" are common inside passwords; sentence dots and commas are not.
                let trail: &[char] = if g.kind == PiiType::Password {
                    &['.', ',', ';', ')', ']']
                } else {
                    &['.', ',', ';', ':', '!', '?', ')', ']']
                };
                vs = vs.trim_end_matches(trail);
                if vs.len() < 3 {
                    continue;
                }
            }
            if (g.check)(vs, &c) {
                push(out, g.kind, v.start(), v.start() + vs.len());
            }
        }
    }
    for c in AGE_BEFORE.captures_iter(text) {
        if let Some(v) = c.get(1).or(c.get(2)).or(c.get(3)) {
            if v.as_str().parse::<u32>().is_ok_and(|a| a <= 125) {
                push(out, PiiType::Age, v.start(), v.end());
            }
        }
    }
    for c in HANDLE.captures_iter(text) {
        if let Some(v) = c.get(1) {
            let next = text.as_bytes().get(v.end());
            // "@example.com" is a domain, not a handle.
            if next != Some(&b'.')
                || !text
                    .as_bytes()
                    .get(v.end() + 1)
                    .is_some_and(u8::is_ascii_alphanumeric)
            {
                push(out, PiiType::Username, v.start(), v.end());
            }
        }
    }
}
