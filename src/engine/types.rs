//! Domain values: identifiers that are valid by construction, ids, timestamps and the Contact row.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A contact's id: 1 for the first contact, then +1; never reused.
pub type ContactId = u32;

/// Milliseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The wall clock now.
    pub fn now() -> Timestamp {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(since.as_millis() as i64)
    }

    /// Parses RFC 3339 (`2023-04-01T00:00:00.374Z`, an offset, or a space for the `T`).
    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        crate::engine::time::parse_rfc3339(text).map(Timestamp)
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with milliseconds, as docs/API.md spells `createdAt`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::engine::time::write_rfc3339(f, self.0)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    /// RFC 3339 text in human-readable formats (JSON), milliseconds in binary ones (the log).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            Timestamp::parse_rfc3339(&text).ok_or_else(|| {
                serde::de::Error::custom(format!("not an RFC 3339 timestamp: {text}"))
            })
        } else {
            i64::deserialize(d).map(Timestamp)
        }
    }
}

/// Why an identifier was refused; the HTTP layer turns it into a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifierError {
    #[error("email must have one @ with text on both sides, no spaces or control characters, and at most 254 bytes")]
    Email,
    #[error(
        "phoneNumber must hold a digit, only digits, spaces and + - ( ) ., and at most 32 bytes"
    )]
    Phone,
}

/// A normalized email: trimmed, lowercased, plausibly an address. Exists only if valid.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Email(Box<str>);

/// A normalized phone number: trimmed, digits and `+-(). ` only. Exists only if valid.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Phone(Box<str>);

impl Email {
    pub(crate) const MAX_BYTES: usize = 254;

    /// Normalizes `raw`; `Ok(None)` when it is empty or blank (docs/API.md: counts as absent).
    ///
    /// ```
    /// use identity_engine::engine::Email;
    /// let email = Email::parse("  Lorraine@HillValley.edu ").unwrap().unwrap();
    /// assert_eq!(email.as_str(), "lorraine@hillvalley.edu");
    /// assert_eq!(Email::parse("   "), Ok(None));
    /// assert!(Email::parse("no-at-sign").is_err());
    /// ```
    pub fn parse(raw: &str) -> Result<Option<Email>, IdentifierError> {
        parse_trimmed(raw, IdentifierError::Email, |trimmed| {
            let lower = if trimmed.is_ascii() {
                trimmed.to_ascii_lowercase()
            } else {
                trimmed.to_lowercase()
            };
            let plausible = lower.len() <= Self::MAX_BYTES
                && !lower.chars().any(|c| c.is_whitespace() || c.is_control())
                && matches!(lower.split_once('@'), Some((local, domain))
                    if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
            plausible.then(|| Email(lower.into_boxed_str()))
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Phone {
    pub(crate) const MAX_BYTES: usize = 32;

    /// Normalizes `raw`; `Ok(None)` when it is empty or blank (docs/API.md: counts as absent).
    pub fn parse(raw: &str) -> Result<Option<Phone>, IdentifierError> {
        parse_trimmed(raw, IdentifierError::Phone, |trimmed| {
            let allowed = |c: char| c.is_ascii_digit() || " +-().".contains(c);
            let plausible = trimmed.len() <= Self::MAX_BYTES
                && trimmed.chars().all(allowed)
                && trimmed.chars().any(|c| c.is_ascii_digit());
            plausible.then(|| Phone(trimmed.into()))
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What both identifiers share (docs/API.md, rule 1): `raw` is trimmed, and blank counts as absent;
/// otherwise `normalize` gives the value, or `None` when it is not one (`refused`).
fn parse_trimmed<T>(
    raw: &str,
    refused: IdentifierError,
    normalize: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, IdentifierError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    normalize(trimmed).map(Some).ok_or(refused)
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a client asks `/identify` about: at least one identifier, both already normalized.
/// Serializable so that a cluster's log can carry it (already checked: peers are trusted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    email: Option<Email>,
    phone: Option<Phone>,
}

impl Query {
    /// `None` when neither identifier is present (docs/API.md, rule 1).
    pub fn new(email: Option<Email>, phone: Option<Phone>) -> Option<Query> {
        (email.is_some() || phone.is_some()).then_some(Query { email, phone })
    }

    pub fn email(&self) -> Option<&Email> {
        self.email.as_ref()
    }

    pub fn phone(&self) -> Option<&Phone> {
        self.phone.as_ref()
    }
}

/// `linkPrecedence`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precedence {
    Primary,
    Secondary,
}

/// A row of the Contact table.
///
/// Every field of docs/API.md with its JSON spelling; its one declaration, from which the answers'
/// JSON and the OpenAPI schema (`ContactRow`) both come. The log records a new row as a
/// [`NewContact`](super::NewContact), which [`From`] turns into this.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ContactRow)]
pub struct Contact {
    pub id: ContactId,
    pub phone_number: Option<String>,
    pub email: Option<String>,
    pub linked_id: Option<ContactId>,
    /// `primary` or `secondary`.
    #[schema(value_type = String)]
    pub link_precedence: Precedence,
    /// RFC 3339 UTC with milliseconds.
    #[schema(value_type = String)]
    pub created_at: Timestamp,
    #[schema(value_type = String)]
    pub updated_at: Timestamp,
    #[schema(value_type = Option<String>)]
    pub deleted_at: Option<Timestamp>,
    /// When the contact was erased (its identifiers gone for good), or null.
    #[schema(value_type = Option<String>)]
    pub erased_at: Option<Timestamp>,
}

impl From<super::NewContact> for Contact {
    /// The row as read: one that links to none is a primary.
    fn from(row: super::NewContact) -> Contact {
        Contact {
            id: row.id,
            phone_number: row.phone,
            email: row.email,
            linked_id: row.linked_id,
            link_precedence: match row.linked_id {
                None => Precedence::Primary,
                Some(_) => Precedence::Secondary,
            },
            created_at: row.created_at,
            updated_at: row.updated_at,
            deleted_at: row.deleted_at,
            erased_at: None,
        }
    }
}

/// The answer of `/identify` for one cluster, in docs/API.md's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub primary_contact_id: ContactId,
    pub emails: Vec<String>,
    pub phone_numbers: Vec<String>,
    pub secondary_contact_ids: Vec<ContactId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lowercased() {
        let email = Email::parse("  Doc@HillValley.EDU \n").unwrap().unwrap();
        assert_eq!(email.as_str(), "doc@hillvalley.edu");
    }

    #[test]
    fn blank_identifiers_count_as_absent() {
        assert_eq!(Email::parse("   "), Ok(None));
        assert_eq!(Phone::parse(""), Ok(None));
    }

    #[test]
    fn implausible_emails_are_refused() {
        for bad in ["a", "@b", "a@", "a@@b", "a@b@c", "a b@c", "a@b\u{7}c"] {
            assert_eq!(Email::parse(bad), Err(IdentifierError::Email), "{bad:?}");
        }
        let long = format!("{}@x.io", "a".repeat(250));
        assert_eq!(Email::parse(&long), Err(IdentifierError::Email));
    }

    #[test]
    fn phones_keep_their_punctuation_and_need_a_digit() {
        assert_eq!(
            Phone::parse(" +1 (555) 010-0.1 ")
                .unwrap()
                .unwrap()
                .as_str(),
            "+1 (555) 010-0.1"
        );
        for bad in ["---", "12a3", "12_3", &"1".repeat(33)] {
            assert_eq!(Phone::parse(bad), Err(IdentifierError::Phone), "{bad:?}");
        }
    }

    #[test]
    fn timestamps_print_as_rfc3339_with_milliseconds() {
        assert_eq!(
            Timestamp(1_680_307_200_374).to_string(),
            "2023-04-01T00:00:00.374Z"
        );
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
    }
}
