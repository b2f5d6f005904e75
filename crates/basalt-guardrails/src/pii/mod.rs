//! Offline PII detection for the sensitive-information policy.
//!
//! Strong formats (cards, IBANs, SSNs, keys, addresses on the wire) are found by
//! pattern plus checksum; weak formats (CVV, PIN, passport, ...) only next to a
//! context keyword; names and street addresses by gazetteer and shape.
//!
//! Decisions worth knowing:
//! - A span gets one label. Detection runs over all types, overlaps are resolved,
//!   and only then is the result filtered to `wanted`, so asking for PHONE alone
//!   never relabels a card number as a phone.
//! - Keyword-gated values exclude the keyword ("PIN: 1234" yields "1234").
//! - NAME excludes a leading title ("Dr. Jane Roe" yields "Jane Roe").
//! - A dotted quad right after "version"/"v"/"build"/"release" is a version, not an IP.

mod address;
mod checksum;
mod country;
mod names;
mod patterns;

#[cfg(test)]
mod eval_tests;
#[cfg(test)]
mod tests;

/// One PII entity type, named as Bedrock names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PiiType {
    Address,
    Age,
    AwsAccessKey,
    AwsSecretKey,
    CaHealthNumber,
    CaSocialInsuranceNumber,
    CreditDebitCardCvv,
    CreditDebitCardExpiry,
    CreditDebitCardNumber,
    DriverId,
    Email,
    InternationalBankAccountNumber,
    IpAddress,
    LicensePlate,
    MacAddress,
    Name,
    Password,
    Phone,
    Pin,
    SwiftCode,
    UkNationalHealthServiceNumber,
    UkNationalInsuranceNumber,
    UkUniqueTaxpayerReferenceNumber,
    Url,
    Username,
    UsBankAccountNumber,
    UsBankRoutingNumber,
    UsIndividualTaxIdentificationNumber,
    UsPassportNumber,
    UsSocialSecurityNumber,
    VehicleIdentificationNumber,
}

impl PiiType {
    pub const ALL: [PiiType; 31] = [
        PiiType::Address,
        PiiType::Age,
        PiiType::AwsAccessKey,
        PiiType::AwsSecretKey,
        PiiType::CaHealthNumber,
        PiiType::CaSocialInsuranceNumber,
        PiiType::CreditDebitCardCvv,
        PiiType::CreditDebitCardExpiry,
        PiiType::CreditDebitCardNumber,
        PiiType::DriverId,
        PiiType::Email,
        PiiType::InternationalBankAccountNumber,
        PiiType::IpAddress,
        PiiType::LicensePlate,
        PiiType::MacAddress,
        PiiType::Name,
        PiiType::Password,
        PiiType::Phone,
        PiiType::Pin,
        PiiType::SwiftCode,
        PiiType::UkNationalHealthServiceNumber,
        PiiType::UkNationalInsuranceNumber,
        PiiType::UkUniqueTaxpayerReferenceNumber,
        PiiType::Url,
        PiiType::Username,
        PiiType::UsBankAccountNumber,
        PiiType::UsBankRoutingNumber,
        PiiType::UsIndividualTaxIdentificationNumber,
        PiiType::UsPassportNumber,
        PiiType::UsSocialSecurityNumber,
        PiiType::VehicleIdentificationNumber,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PiiType::Address => "ADDRESS",
            PiiType::Age => "AGE",
            PiiType::AwsAccessKey => "AWS_ACCESS_KEY",
            PiiType::AwsSecretKey => "AWS_SECRET_KEY",
            PiiType::CaHealthNumber => "CA_HEALTH_NUMBER",
            PiiType::CaSocialInsuranceNumber => "CA_SOCIAL_INSURANCE_NUMBER",
            PiiType::CreditDebitCardCvv => "CREDIT_DEBIT_CARD_CVV",
            PiiType::CreditDebitCardExpiry => "CREDIT_DEBIT_CARD_EXPIRY",
            PiiType::CreditDebitCardNumber => "CREDIT_DEBIT_CARD_NUMBER",
            PiiType::DriverId => "DRIVER_ID",
            PiiType::Email => "EMAIL",
            PiiType::InternationalBankAccountNumber => "INTERNATIONAL_BANK_ACCOUNT_NUMBER",
            PiiType::IpAddress => "IP_ADDRESS",
            PiiType::LicensePlate => "LICENSE_PLATE",
            PiiType::MacAddress => "MAC_ADDRESS",
            PiiType::Name => "NAME",
            PiiType::Password => "PASSWORD",
            PiiType::Phone => "PHONE",
            PiiType::Pin => "PIN",
            PiiType::SwiftCode => "SWIFT_CODE",
            PiiType::UkNationalHealthServiceNumber => "UK_NATIONAL_HEALTH_SERVICE_NUMBER",
            PiiType::UkNationalInsuranceNumber => "UK_NATIONAL_INSURANCE_NUMBER",
            PiiType::UkUniqueTaxpayerReferenceNumber => "UK_UNIQUE_TAXPAYER_REFERENCE_NUMBER",
            PiiType::Url => "URL",
            PiiType::Username => "USERNAME",
            PiiType::UsBankAccountNumber => "US_BANK_ACCOUNT_NUMBER",
            PiiType::UsBankRoutingNumber => "US_BANK_ROUTING_NUMBER",
            PiiType::UsIndividualTaxIdentificationNumber => {
                "US_INDIVIDUAL_TAX_IDENTIFICATION_NUMBER"
            }
            PiiType::UsPassportNumber => "US_PASSPORT_NUMBER",
            PiiType::UsSocialSecurityNumber => "US_SOCIAL_SECURITY_NUMBER",
            PiiType::VehicleIdentificationNumber => "VEHICLE_IDENTIFICATION_NUMBER",
        }
    }

    pub fn parse(name: &str) -> Option<PiiType> {
        PiiType::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Tie-break among equally long overlapping spans: higher wins. Checksummed
    /// and narrowly shaped types outrank loose ones.
    fn specificity(self) -> u8 {
        match self {
            PiiType::CreditDebitCardNumber
            | PiiType::InternationalBankAccountNumber
            | PiiType::VehicleIdentificationNumber
            | PiiType::UkNationalHealthServiceNumber
            | PiiType::UsBankRoutingNumber
            | PiiType::CaSocialInsuranceNumber
            | PiiType::AwsAccessKey
            | PiiType::AwsSecretKey => 9,
            PiiType::UsSocialSecurityNumber
            | PiiType::UsIndividualTaxIdentificationNumber
            | PiiType::UkNationalInsuranceNumber
            | PiiType::Email
            | PiiType::MacAddress
            | PiiType::IpAddress
            | PiiType::SwiftCode => 8,
            PiiType::Url => 7,
            PiiType::CaHealthNumber
            | PiiType::UkUniqueTaxpayerReferenceNumber
            | PiiType::UsPassportNumber
            | PiiType::DriverId
            | PiiType::LicensePlate
            | PiiType::CreditDebitCardCvv
            | PiiType::CreditDebitCardExpiry
            | PiiType::Pin
            | PiiType::Age => 6,
            PiiType::UsBankAccountNumber => 5,
            PiiType::Address => 4,
            PiiType::Phone => 3,
            PiiType::Name | PiiType::Username => 2,
            PiiType::Password => 1,
        }
    }
}

impl std::fmt::Display for PiiType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A detected entity: byte offsets into the input, `start..end` on char boundaries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PiiMatch {
    pub kind: PiiType,
    pub start: usize,
    pub end: usize,
}

/// Every entity of the wanted types, sorted by start, non-overlapping (when two
/// overlap, keep the longer; on a tie, the more specific type).
pub fn detect(text: &str, wanted: &[PiiType]) -> Vec<PiiMatch> {
    if wanted.is_empty() || text.is_empty() {
        return Vec::new();
    }
    let mut found = Vec::new();
    patterns::find(text, &mut found);
    names::find(text, &mut found);
    address::find(text, &mut found);
    let mut kept = resolve(found);
    kept.retain(|m| wanted.contains(&m.kind));
    kept
}

/// Greedy: longest first, then most specific, then leftmost; drop anything that
/// overlaps a span already kept.
fn resolve(mut found: Vec<PiiMatch>) -> Vec<PiiMatch> {
    found.retain(|m| m.start < m.end);
    found.sort_by(|a, b| {
        (b.end - b.start)
            .cmp(&(a.end - a.start))
            .then(b.kind.specificity().cmp(&a.kind.specificity()))
            .then(a.start.cmp(&b.start))
    });
    let mut kept: Vec<PiiMatch> = Vec::with_capacity(found.len());
    for m in found {
        if kept.iter().all(|k| m.end <= k.start || k.end <= m.start) {
            kept.push(m);
        }
    }
    kept.sort_by_key(|m| m.start);
    kept
}
