use super::{detect, PiiMatch, PiiType};

/// (type name, matched text) for every entity, all types wanted.
fn found(text: &str) -> Vec<(&'static str, &str)> {
    detect(text, &PiiType::ALL)
        .into_iter()
        .map(|m| (m.kind.as_str(), &text[m.start..m.end]))
        .collect()
}

fn has(text: &str, kind: &str, value: &str) {
    let f = found(text);
    assert!(
        f.contains(&(kind, value)),
        "expected {kind} {value:?} in {text:?}, got {f:?}"
    );
}

fn lacks(text: &str, kind: &str) {
    let f = found(text);
    assert!(
        !f.iter().any(|(k, _)| *k == kind),
        "unexpected {kind} in {text:?}: {f:?}"
    );
}

#[test]
fn names_round_trip() {
    assert_eq!(PiiType::ALL.len(), 31);
    for t in PiiType::ALL {
        assert_eq!(PiiType::parse(t.as_str()), Some(t));
    }
    assert_eq!(PiiType::parse("email"), None);
    assert_eq!(
        PiiType::UsIndividualTaxIdentificationNumber.as_str(),
        "US_INDIVIDUAL_TAX_IDENTIFICATION_NUMBER"
    );
}

#[test]
fn output_sorted_non_overlapping_and_filtered() {
    let text = "Mail a@b.com, call 212-555-0147, card 4111 1111 1111 1111.";
    let all = detect(text, &PiiType::ALL);
    assert!(all.windows(2).all(|w| w[0].end <= w[1].start));
    let only = detect(text, &[PiiType::Phone]);
    assert_eq!(only.len(), 1);
    assert_eq!(&text[only[0].start..only[0].end], "212-555-0147");
    assert!(detect(text, &[]).is_empty());
    // A card number is never relabelled as a phone when only PHONE is wanted.
    assert!(detect("4111 1111 1111 1111", &[PiiType::Phone]).is_empty());
}

#[test]
fn offsets_on_char_boundaries() {
    let text = "Café résumé — écrivez à zoë@example.com ou appelez +33 1 42 68 53 00 ✓";
    for PiiMatch { start, end, .. } in detect(text, &PiiType::ALL) {
        assert!(text.is_char_boundary(start) && text.is_char_boundary(end));
    }
    has(text, "PHONE", "+33 1 42 68 53 00");
}

#[test]
fn email() {
    has(
        "write to a.b-c+tag@mail.example.co.uk now",
        "EMAIL",
        "a.b-c+tag@mail.example.co.uk",
    );
    lacks("user@localhost is local", "EMAIL");
    lacks("the @ sign", "EMAIL");
}

#[test]
fn url() {
    has(
        "see https://example.com/a_(b)?x=1.",
        "URL",
        "https://example.com/a_(b)?x=1",
    );
    has("(www.example.org/help)", "URL", "www.example.org/help");
    lacks("the file report.final.pdf", "URL");
}

#[test]
fn ip_address() {
    has("host 10.0.0.254 is up", "IP_ADDRESS", "10.0.0.254");
    has(
        "host ::1 and 2001:db8::8a2e:370:7334",
        "IP_ADDRESS",
        "2001:db8::8a2e:370:7334",
    );
    lacks("value 256.1.1.1", "IP_ADDRESS");
    lacks("oid 1.2.3.4.5", "IP_ADDRESS");
    // Decision: a dotted quad named as a version is a version.
    lacks("version 1.2.3.4", "IP_ADDRESS");
    lacks("at 10:30:45", "IP_ADDRESS");
}

#[test]
fn mac_address() {
    has(
        "mac 00:1A:2B:3C:4D:5E ok",
        "MAC_ADDRESS",
        "00:1A:2B:3C:4D:5E",
    );
    has(
        "mac 3c-22-fb-9a-01-7e ok",
        "MAC_ADDRESS",
        "3c-22-fb-9a-01-7e",
    );
    has("mac 0011.2233.4455 ok", "MAC_ADDRESS", "0011.2233.4455");
    lacks("mac 00:1A:2B:3C:4D", "MAC_ADDRESS");
}

#[test]
fn card_number_and_companions() {
    has(
        "pay with 4111-1111-1111-1111 now",
        "CREDIT_DEBIT_CARD_NUMBER",
        "4111-1111-1111-1111",
    );
    has(
        "amex 378282246310005",
        "CREDIT_DEBIT_CARD_NUMBER",
        "378282246310005",
    );
    lacks(
        "pay with 4111 1111 1111 1112 now",
        "CREDIT_DEBIT_CARD_NUMBER",
    );
    lacks("mixed 4111-1111 1111-1111", "CREDIT_DEBIT_CARD_NUMBER");
    has(
        "card 4111 1111 1111 1111 123",
        "CREDIT_DEBIT_CARD_NUMBER",
        "4111 1111 1111 1111",
    );
    has("CVV: 123", "CREDIT_DEBIT_CARD_CVV", "123");
    has("the security code is 4412", "CREDIT_DEBIT_CARD_CVV", "4412");
    lacks("took 123 minutes", "CREDIT_DEBIT_CARD_CVV");
    has("expires 11/26", "CREDIT_DEBIT_CARD_EXPIRY", "11/26");
    has("exp. date: 03/2028", "CREDIT_DEBIT_CARD_EXPIRY", "03/2028");
    has(
        "card 4111111111111111 12/27",
        "CREDIT_DEBIT_CARD_EXPIRY",
        "12/27",
    );
    lacks("score 11/26 overall", "CREDIT_DEBIT_CARD_EXPIRY");
    lacks("expires 13/26", "CREDIT_DEBIT_CARD_EXPIRY");
}

#[test]
fn phone() {
    has("call (555) 234-5678", "PHONE", "(555) 234-5678");
    has("call 1-800-555-0199", "PHONE", "1-800-555-0199");
    has("call +44 20 7946 0958", "PHONE", "+44 20 7946 0958");
    has("ring 07700 900123", "PHONE", "07700 900123");
    has("Mobile: 4155550132", "PHONE", "4155550132");
    lacks("code 1234 opens", "PHONE");
    lacks("sold 5551234567 units", "PHONE");
    lacks("on 2024-05-17", "PHONE");
    lacks("ssn 123-45-6789", "PHONE");
}

#[test]
fn ssn_itin() {
    has(
        "SSN 123-45-6789",
        "US_SOCIAL_SECURITY_NUMBER",
        "123-45-6789",
    );
    has(
        "social security number: 219099999",
        "US_SOCIAL_SECURITY_NUMBER",
        "219099999",
    );
    lacks("ref 000-12-3456", "US_SOCIAL_SECURITY_NUMBER");
    lacks("ref 666-12-3456", "US_SOCIAL_SECURITY_NUMBER");
    lacks("ref 123-00-3456", "US_SOCIAL_SECURITY_NUMBER");
    lacks("ref 123-45-0000", "US_SOCIAL_SECURITY_NUMBER");
    lacks("employee 219099999", "US_SOCIAL_SECURITY_NUMBER");
    has(
        "ITIN 912-70-1234",
        "US_INDIVIDUAL_TAX_IDENTIFICATION_NUMBER",
        "912-70-1234",
    );
    has(
        "ITIN 900701234",
        "US_INDIVIDUAL_TAX_IDENTIFICATION_NUMBER",
        "900701234",
    );
    lacks(
        "ticket 943-93-1234",
        "US_INDIVIDUAL_TAX_IDENTIFICATION_NUMBER",
    );
    lacks("ticket 943-93-1234", "US_SOCIAL_SECURITY_NUMBER");
}

#[test]
fn canada() {
    has(
        "SIN 046 454 286",
        "CA_SOCIAL_INSURANCE_NUMBER",
        "046 454 286",
    );
    has(
        "social insurance number 046454286",
        "CA_SOCIAL_INSURANCE_NUMBER",
        "046454286",
    );
    lacks("SIN 046 454 287", "CA_SOCIAL_INSURANCE_NUMBER");
    lacks("sin 046454286 is bad", "CA_SOCIAL_INSURANCE_NUMBER");
    has(
        "OHIP 1234-567-890-AB",
        "CA_HEALTH_NUMBER",
        "1234-567-890-AB",
    );
    has(
        "health card number 9876 543 210",
        "CA_HEALTH_NUMBER",
        "9876 543 210",
    );
    lacks("ID 1234-567-890 here", "CA_HEALTH_NUMBER");
}

#[test]
fn uk() {
    has(
        "NHS number 943 476 5919",
        "UK_NATIONAL_HEALTH_SERVICE_NUMBER",
        "943 476 5919",
    );
    lacks(
        "NHS number 943 476 5918",
        "UK_NATIONAL_HEALTH_SERVICE_NUMBER",
    );
    lacks("call 943 476 5919", "UK_NATIONAL_HEALTH_SERVICE_NUMBER");
    has(
        "NI AB 12 34 56 C",
        "UK_NATIONAL_INSURANCE_NUMBER",
        "AB 12 34 56 C",
    );
    has(
        "NINO CE123456A",
        "UK_NATIONAL_INSURANCE_NUMBER",
        "CE123456A",
    );
    lacks("NI BG 12 34 56 A", "UK_NATIONAL_INSURANCE_NUMBER");
    lacks("NI QQ 12 34 56 C", "UK_NATIONAL_INSURANCE_NUMBER");
    lacks("NI AB 12 34 56 E", "UK_NATIONAL_INSURANCE_NUMBER");
    has(
        "UTR 12345 67890",
        "UK_UNIQUE_TAXPAYER_REFERENCE_NUMBER",
        "12345 67890",
    );
    lacks("order 12345 67890", "UK_UNIQUE_TAXPAYER_REFERENCE_NUMBER");
}

#[test]
fn iban_swift() {
    has(
        "to GB82 WEST 1234 5698 7654 32 today",
        "INTERNATIONAL_BANK_ACCOUNT_NUMBER",
        "GB82 WEST 1234 5698 7654 32",
    );
    has(
        "IBAN DE89370400440532013000",
        "INTERNATIONAL_BANK_ACCOUNT_NUMBER",
        "DE89370400440532013000",
    );
    has(
        "CH9300762011623852957 ok",
        "INTERNATIONAL_BANK_ACCOUNT_NUMBER",
        "CH9300762011623852957",
    );
    lacks(
        "IBAN GB83WEST12345698765432",
        "INTERNATIONAL_BANK_ACCOUNT_NUMBER",
    );
    has("SWIFT code DEUTDEFF", "SWIFT_CODE", "DEUTDEFF");
    has("wire via BOFAUS3N", "SWIFT_CODE", "BOFAUS3N");
    has("wire via CHASUS33XXX", "SWIFT_CODE", "CHASUS33XXX");
    lacks("PLEASE RESPOND IMMEDIATELY", "SWIFT_CODE");
    lacks("bic ABCDXX33", "SWIFT_CODE"); // XX is no country
}

#[test]
fn us_bank() {
    has(
        "routing number 021000021",
        "US_BANK_ROUTING_NUMBER",
        "021000021",
    );
    lacks("routing number 021000022", "US_BANK_ROUTING_NUMBER");
    lacks("number 021000021", "US_BANK_ROUTING_NUMBER");
    has(
        "account number 000123456789",
        "US_BANK_ACCOUNT_NUMBER",
        "000123456789",
    );
    has("acct #88120034", "US_BANK_ACCOUNT_NUMBER", "88120034");
    lacks("my account has 3 items", "US_BANK_ACCOUNT_NUMBER");
}

#[test]
fn vin() {
    has(
        "VIN 1HGCM82633A004352",
        "VEHICLE_IDENTIFICATION_NUMBER",
        "1HGCM82633A004352",
    );
    has(
        "truck 1M8GDM9AXKP042788 here",
        "VEHICLE_IDENTIFICATION_NUMBER",
        "1M8GDM9AXKP042788",
    );
    lacks("part 1HGCM82643A004352", "VEHICLE_IDENTIFICATION_NUMBER");
}

#[test]
fn aws_keys() {
    has(
        "key AKIAIOSFODNN7EXAMPLE",
        "AWS_ACCESS_KEY",
        "AKIAIOSFODNN7EXAMPLE",
    );
    has(
        "key ASIAY34FZKBOKMUTVV7A",
        "AWS_ACCESS_KEY",
        "ASIAY34FZKBOKMUTVV7A",
    );
    lacks("build AKIA1234", "AWS_ACCESS_KEY");
    has(
        "secret: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "AWS_SECRET_KEY",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    );
    // No hint nearby, or a hex digest: not a secret key.
    lacks(
        "blob wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "AWS_SECRET_KEY",
    );
    lacks(
        "secret sha 3f786850e387550fdab836ed7e6dc881de23001b",
        "AWS_SECRET_KEY",
    );
}

#[test]
fn password_username() {
    has("password: sunshine", "PASSWORD", "sunshine");
    has("pwd=Xk9#mQ2!vL", "PASSWORD", "Xk9#mQ2!vL");
    has("my password is Tr0ub4dor&3.", "PASSWORD", "Tr0ub4dor&3");
    lacks("your password is incorrect", "PASSWORD");
    lacks("password reset links", "PASSWORD");
    has("username: jsmith42", "USERNAME", "jsmith42");
    has("user ID is jane_doe_88 here", "USERNAME", "jane_doe_88");
    has("follow @acme_support", "USERNAME", "@acme_support");
    lacks("please login to continue", "USERNAME");
    lacks("mail a@b.com", "USERNAME");
}

#[test]
fn age() {
    has("he is 34 years old", "AGE", "34");
    has("a 29-year-old man", "AGE", "29");
    has("aged 72", "AGE", "72");
    has("Age: 45", "AGE", "45");
    lacks("in the 1990s", "AGE");
    lacks("page 12", "AGE");
    lacks("5 years ago", "AGE");
}

#[test]
fn pin_driver_plate_passport() {
    has("PIN 4821", "PIN", "4821");
    has("the pin code is 0713", "PIN", "0713");
    lacks("pin the post", "PIN");
    lacks("PIN 12", "PIN");
    has(
        "driver's license number is D1234567",
        "DRIVER_ID",
        "D1234567",
    );
    has("DL# S53012345678", "DRIVER_ID", "S53012345678");
    lacks("got my driver's license in 2005", "DRIVER_ID");
    has("license plate 7ABC123", "LICENSE_PLATE", "7ABC123");
    lacks("put the plate away", "LICENSE_PLATE");
    has(
        "passport number X12345678",
        "US_PASSPORT_NUMBER",
        "X12345678",
    );
    lacks("passport photo 12", "US_PASSPORT_NUMBER");
}

#[test]
fn name() {
    has("Contact Sarah Connor today", "NAME", "Sarah Connor");
    has("Dr. Emily Watson will see you", "NAME", "Emily Watson");
    has("my name is Priya Raghunathan", "NAME", "Priya Raghunathan");
    has("John F. Kennedy spoke", "NAME", "John F. Kennedy");
    has("Hi Michael, thanks", "NAME", "Michael");
    has("Dear Kowalczyk,", "NAME", "Kowalczyk");
    lacks("Apple released a phone.", "NAME");
    lacks("Will you come on Friday?", "NAME");
    lacks("April showers bring May flowers.", "NAME");
    lacks("Monday is a holiday in June.", "NAME");
    lacks("Good morning, team.", "NAME");
}

#[test]
fn address() {
    has(
        "I live at 742 Evergreen Terrace, Springfield, IL 62704.",
        "ADDRESS",
        "742 Evergreen Terrace, Springfield, IL 62704",
    );
    has("at 12 Oak Lane.", "ADDRESS", "12 Oak Lane");
    has(
        "Deliver to 221B Baker Street, London NW1 6XE.",
        "ADDRESS",
        "221B Baker Street, London NW1 6XE",
    );
    has(
        "PO Box 4521, Austin, TX 78701",
        "ADDRESS",
        "PO Box 4521, Austin, TX 78701",
    );
    // An unknown state drops the tail, the street line stays.
    has("5 Main St, Foo, ZZ 12345", "ADDRESS", "5 Main St");
    lacks("we walked 5 miles down the road", "ADDRESS");
}
