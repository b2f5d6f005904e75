//! Postal addresses: a street line (number, capitalised name, street suffix,
//! optional unit) with an optional US "City, ST 12345" or UK postcode tail,
//! and PO boxes.

use std::sync::LazyLock;

use regex::Regex;

use super::{PiiMatch, PiiType};

const SUFFIX: &str = r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter|Circle|Cir|Highway|Hwy|Parkway|Pkwy|Square|Sq|Trail|Trl|Close|Crescent|Cres|Alley|Plaza|Row|Walk|Grove|Gardens|Mews|Hill|Loop|Pike|Point|Heights)";
const UNIT: &str = r"(?:,?\s*(?:Apt|Apartment|Suite|Ste|Unit|Fl|Floor|Rm|Room|Bldg|#)\.?\s*#?\s*[A-Za-z0-9-]{1,6})";
const US_TAIL: &str = r"(?:,\s*(?P<city>[A-Z][A-Za-z.'-]+(?:\s+[A-Z][A-Za-z.'-]+){0,2}),?\s+(?P<state>[A-Z]{2}|[A-Z][a-z]+(?:\s[A-Z][a-z]+)?)(?:\s+(?P<zip>\d{5}(?:-\d{4})?))?)";
const UK_TAIL: &str = r"(?:(?:,\s*[A-Z][A-Za-z'-]+(?:\s+[A-Z][A-Za-z'-]+){0,2})?,?\s+(?P<postcode>[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}))";

static STREET: LazyLock<Regex> = LazyLock::new(|| {
    let pat = format!(
        r"(?:\b(?:Flat|Apt|Apartment|Unit|Suite)\s+[A-Za-z0-9-]{{1,5}},?\s+)?\b(?P<street>\d{{1,6}}[A-Za-z]?(?:-\d{{1,5}})?\s+(?:[NSEW]\.?\s+|(?:North|South|East|West)\s+)?(?:(?:[A-Z][A-Za-z'.-]*|\d{{1,3}}(?:st|nd|rd|th))\s+){{1,4}}?{SUFFIX}\b\.?(?:\s+(?:NE|NW|SE|SW|N|S|E|W)\b\.?)?{UNIT}?)(?:{UK_TAIL}|{US_TAIL})?"
    );
    Regex::new(&pat).expect("static regex")
});

static PO_BOX: LazyLock<Regex> = LazyLock::new(|| {
    let pat = format!(
        r"(?i:\b(?:P\.?\s?O\.?\s*Box|Post\s+Office\s+Box))\s+(?P<street>\d{{1,6}}){US_TAIL}?"
    );
    Regex::new(&pat).expect("static regex")
});

const US_STATES: &str = "AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY DC PR";

const STATE_NAMES: &[&str] = &[
    "Alabama",
    "Alaska",
    "Arizona",
    "Arkansas",
    "California",
    "Colorado",
    "Connecticut",
    "Delaware",
    "Florida",
    "Georgia",
    "Hawaii",
    "Idaho",
    "Illinois",
    "Indiana",
    "Iowa",
    "Kansas",
    "Kentucky",
    "Louisiana",
    "Maine",
    "Maryland",
    "Massachusetts",
    "Michigan",
    "Minnesota",
    "Mississippi",
    "Missouri",
    "Montana",
    "Nebraska",
    "Nevada",
    "New Hampshire",
    "New Jersey",
    "New Mexico",
    "New York",
    "North Carolina",
    "North Dakota",
    "Ohio",
    "Oklahoma",
    "Oregon",
    "Pennsylvania",
    "Rhode Island",
    "South Carolina",
    "South Dakota",
    "Tennessee",
    "Texas",
    "Utah",
    "Vermont",
    "Virginia",
    "Washington",
    "West Virginia",
    "Wisconsin",
    "Wyoming",
];

fn state_ok(s: &str) -> bool {
    if s.len() == 2 {
        US_STATES.split(' ').any(|c| c == s)
    } else {
        STATE_NAMES.contains(&s)
    }
}

pub fn find(text: &str, out: &mut Vec<PiiMatch>) {
    for re in [&*STREET, &*PO_BOX] {
        for c in re.captures_iter(text) {
            let (Some(whole), Some(street)) = (c.get(0), c.name("street")) else {
                continue;
            };
            let tail_ok = match (c.name("state"), c.name("postcode")) {
                (Some(st), _) => state_ok(st.as_str()),
                (None, Some(_)) => true,
                (None, None) => false,
            };
            let mut end = if tail_ok { whole.end() } else { street.end() };
            // "St." keeps no dot either: a final dot is as likely the sentence's.
            if text.as_bytes()[..end].ends_with(b".") {
                end -= 1;
            }
            out.push(PiiMatch {
                kind: PiiType::Address,
                start: whole.start(),
                end,
            });
        }
    }
}
