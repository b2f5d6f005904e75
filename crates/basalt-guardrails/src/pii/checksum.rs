//! Check digits and number-range rules. Each takes the value with separators
//! already removed unless it says otherwise.

/// Luhn (mod 10) over ASCII digits.
pub fn luhn(digits: &[u8]) -> bool {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Card numbers: 13-19 digits, a known network's leading digit, Luhn.
pub fn card_number(digits: &[u8]) -> bool {
    (13..=19).contains(&digits.len()) && matches!(digits[0], b'2'..=b'6') && luhn(digits)
}

/// IBAN lengths for the countries most often seen; others get the generic 15..=34.
pub fn iban_expected_len(country: &[u8]) -> Option<usize> {
    Some(match country {
        b"AD" => 24,
        b"AE" => 23,
        b"AT" => 20,
        b"BE" => 16,
        b"BG" => 22,
        b"BH" => 22,
        b"BR" => 29,
        b"CH" => 21,
        b"CY" => 28,
        b"CZ" => 24,
        b"DE" => 22,
        b"DK" => 18,
        b"EE" => 20,
        b"ES" => 24,
        b"FI" => 18,
        b"FR" => 27,
        b"GB" => 22,
        b"GI" => 23,
        b"GR" => 27,
        b"HR" => 21,
        b"HU" => 28,
        b"IE" => 22,
        b"IL" => 23,
        b"IS" => 26,
        b"IT" => 27,
        b"LI" => 21,
        b"LT" => 20,
        b"LU" => 20,
        b"LV" => 21,
        b"MC" => 27,
        b"MT" => 31,
        b"NL" => 18,
        b"NO" => 15,
        b"PL" => 28,
        b"PT" => 25,
        b"QA" => 29,
        b"RO" => 24,
        b"SA" => 24,
        b"SE" => 24,
        b"SI" => 19,
        b"SK" => 24,
        b"SM" => 27,
        b"TR" => 26,
        b"UA" => 29,
        _ => return None,
    })
}

/// IBAN: upper-case alphanumerics without spaces; length per country, mod-97 == 1.
pub fn iban(s: &[u8]) -> bool {
    if s.len() < 15 || s.len() > 34 {
        return false;
    }
    if !s[..2].iter().all(u8::is_ascii_uppercase) || !s[2..4].iter().all(u8::is_ascii_digit) {
        return false;
    }
    if !s
        .iter()
        .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
    {
        return false;
    }
    if !crate::pii::country::is_iso_alpha2(&s[..2]) {
        return false;
    }
    if let Some(n) = iban_expected_len(&s[..2]) {
        if s.len() != n {
            return false;
        }
    }
    // Move the first four to the end, letters become 10..35, take the remainder piecewise.
    let mut rem = 0u32;
    for &c in s[4..].iter().chain(&s[..4]) {
        if c.is_ascii_digit() {
            rem = (rem * 10 + u32::from(c - b'0')) % 97;
        } else {
            let v = u32::from(c - b'A') + 10;
            rem = (rem * 100 + v) % 97;
        }
    }
    rem == 1
}

/// North American VIN: 17 chars without I, O, Q; position 9 is the check digit.
pub fn vin(s: &[u8]) -> bool {
    if s.len() != 17 {
        return false;
    }
    const WEIGHTS: [u32; 17] = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2];
    let mut sum = 0u32;
    for (i, &c) in s.iter().enumerate() {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A' | b'J' => 1,
            b'B' | b'K' | b'S' => 2,
            b'C' | b'L' | b'T' => 3,
            b'D' | b'M' | b'U' => 4,
            b'E' | b'N' | b'V' => 5,
            b'F' | b'W' => 6,
            b'G' | b'P' | b'X' => 7,
            b'H' | b'Y' => 8,
            b'R' | b'Z' => 9,
            _ => return false,
        };
        sum += v * WEIGHTS[i];
    }
    let check = match sum % 11 {
        10 => b'X',
        d => b'0' + d as u8,
    };
    s[8] == check
}

/// ABA routing number: 9 digits, weights 3-7-1, a Federal Reserve prefix.
pub fn aba_routing(d: &[u8]) -> bool {
    if d.len() != 9 || !d.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let prefix = u32::from(d[0] - b'0') * 10 + u32::from(d[1] - b'0');
    if !matches!(prefix, 0..=12 | 21..=32 | 61..=72 | 80) {
        return false;
    }
    let v = |i: usize| u32::from(d[i] - b'0');
    let sum = 3 * (v(0) + v(3) + v(6)) + 7 * (v(1) + v(4) + v(7)) + (v(2) + v(5) + v(8));
    sum % 10 == 0
}

/// UK NHS number: 10 digits, mod-11 check digit (10 is never issued).
pub fn nhs(d: &[u8]) -> bool {
    if d.len() != 10 || !d.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = d[..9]
        .iter()
        .enumerate()
        .map(|(i, c)| u32::from(c - b'0') * (10 - i as u32))
        .sum();
    let check = match 11 - sum % 11 {
        11 => 0,
        10 => return false,
        c => c,
    };
    u32::from(d[9] - b'0') == check
}

fn num(d: &[u8]) -> u32 {
    d.iter().fold(0, |a, c| a * 10 + u32::from(c - b'0'))
}

/// US SSN: 9 digits; area not 000, 666 or 9xx, group not 00, serial not 0000.
pub fn ssn(d: &[u8]) -> bool {
    if d.len() != 9 || !d.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let (area, group, serial) = (num(&d[..3]), num(&d[3..5]), num(&d[5..]));
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// US ITIN: 9xx, group 50-65, 70-88, 90-92 or 94-99.
pub fn itin(d: &[u8]) -> bool {
    if d.len() != 9 || !d.iter().all(u8::is_ascii_digit) || d[0] != b'9' {
        return false;
    }
    matches!(num(&d[3..5]), 50..=65 | 70..=88 | 90..=92 | 94..=99)
}

/// Canadian SIN: 9 digits, Luhn; 8 is a business number, not a person's.
pub fn ca_sin(d: &[u8]) -> bool {
    d.len() == 9 && d[0] != b'8' && luhn(d)
}

/// UK National Insurance number prefix rules: letters D, F, I, Q, U, V never
/// used; O not second; BG, GB, KN, NK, NT, TN, ZZ not allocated.
pub fn uk_nino_prefix(a: u8, b: u8) -> bool {
    let bad_any = |c: u8| matches!(c, b'D' | b'F' | b'I' | b'Q' | b'U' | b'V');
    if !a.is_ascii_uppercase() || !b.is_ascii_uppercase() || bad_any(a) || bad_any(b) || b == b'O' {
        return false;
    }
    !matches!(
        &[a, b],
        b"BG" | b"GB" | b"KN" | b"NK" | b"NT" | b"TN" | b"ZZ"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_cards() {
        assert!(card_number(b"4111111111111111"));
        assert!(card_number(b"5500005555555559"));
        assert!(card_number(b"378282246310005"));
        assert!(!card_number(b"4111111111111112"));
        assert!(!card_number(b"1234567812345670")); // Luhn-valid but no network starts with 1
    }

    #[test]
    fn iban_checks() {
        assert!(iban(b"GB82WEST12345698765432"));
        assert!(iban(b"DE89370400440532013000"));
        assert!(iban(b"FR1420041010050500013M02606"));
        assert!(!iban(b"GB83WEST12345698765432"));
        assert!(!iban(b"GB82WEST1234569876543")); // wrong length for GB
    }

    #[test]
    fn vin_checks() {
        assert!(vin(b"1HGCM82633A004352"));
        assert!(vin(b"11111111111111111"));
        assert!(!vin(b"1HGCM82643A004352"));
    }

    #[test]
    fn aba_checks() {
        assert!(aba_routing(b"021000021"));
        assert!(aba_routing(b"011000015"));
        assert!(!aba_routing(b"021000022"));
        assert!(!aba_routing(b"991000021"));
    }

    #[test]
    fn nhs_checks() {
        assert!(nhs(b"9434765919"));
        assert!(!nhs(b"9434765918"));
    }

    #[test]
    fn ssn_itin_sin_nino() {
        assert!(ssn(b"123456789"));
        assert!(!ssn(b"000123456"));
        assert!(!ssn(b"666123456"));
        assert!(!ssn(b"900123456"));
        assert!(!ssn(b"123006789"));
        assert!(!ssn(b"123450000"));
        assert!(itin(b"912701234"));
        assert!(!itin(b"912931234"));
        assert!(!itin(b"912401234"));
        assert!(ca_sin(b"046454286"));
        assert!(!ca_sin(b"046454287"));
        assert!(uk_nino_prefix(b'A', b'B'));
        assert!(!uk_nino_prefix(b'G', b'B'));
        assert!(!uk_nino_prefix(b'A', b'O'));
        assert!(!uk_nino_prefix(b'D', b'A'));
    }
}
