//! Matching keys: the opt-in rules that turn a normalized email or phone (trimmed, and for an
//! email lowercased) into the key contacts are matched by. The default modes keep the
//! normalized value as its key (the contract's rule); the others see through formatting.
//!
//! Canonicalization sits at the edge (requests, imports, blocklists, re-keying): the engine
//! only ever sees keys, so its rows, answers and log are unchanged. Every rule is idempotent:
//! the key of a key is itself, which is what lets `rekey` be run again after a crash.

use clap::ValueEnum;
use phonenumber::country;
use prometheus_client::metrics::counter::Counter;
use std::fmt;

use crate::engine::{Email, Phone, Query};

/// How phones are matched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, ValueEnum)]
pub enum PhoneMatch {
    /// The trimmed string (the contract's rule).
    #[default]
    AsGiven,
    /// A leading `+` (if any) and the digits.
    Digits,
    /// E.164 by libphonenumber's rules (the `phonenumber` crate); numbers it does not take as
    /// valid fall back to `digits`.
    E164,
}

/// How emails are matched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, ValueEnum)]
pub enum EmailMatch {
    /// Trimmed and lowercased (the contract's rule).
    #[default]
    AsGiven,
    /// Also the rules major providers document for their own domains (see [`PROVIDERS`]).
    Provider,
}

impl PhoneMatch {
    pub fn as_str(self) -> &'static str {
        match self {
            PhoneMatch::AsGiven => "as-given",
            PhoneMatch::Digits => "digits",
            PhoneMatch::E164 => "e164",
        }
    }
}

impl EmailMatch {
    pub fn as_str(self) -> &'static str {
        match self {
            EmailMatch::AsGiven => "as-given",
            EmailMatch::Provider => "provider",
        }
    }
}

/// The matching rules of a server or a data directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Modes {
    pub phone: PhoneMatch,
    pub email: EmailMatch,
    /// ISO 3166 code (upper case) for `e164` numbers written without `+`; only `e164` uses it.
    pub region: Option<String>,
}

impl Modes {
    /// Checks the region (a code libphonenumber knows) and upper-cases it; it is kept only
    /// where it changes keys (with `e164`), so that a directory's record ignores it otherwise.
    pub fn new(
        phone: PhoneMatch,
        email: EmailMatch,
        region: Option<&str>,
    ) -> Result<Modes, String> {
        let region = match region.map(str::trim).filter(|r| !r.is_empty()) {
            None => None,
            Some(code) => {
                let code = code.to_ascii_uppercase();
                code.parse::<country::Id>()
                    .map_err(|_| format!("--default-region {code}: not a region libphonenumber knows (an ISO 3166 code such as US, GB, IN)"))?;
                Some(code)
            }
        };
        Ok(Modes {
            phone,
            email,
            region: region.filter(|_| phone == PhoneMatch::E164),
        })
    }

    /// Whether these are the contract's rules (every key is the normalized value).
    pub(crate) fn is_as_given(&self) -> bool {
        self.phone == PhoneMatch::AsGiven && self.email == EmailMatch::AsGiven
    }

    /// The options that select these modes, as a command line spells them.
    pub fn options(&self) -> String {
        let mut text = format!(
            "--phone-match {} --email-match {}",
            self.phone.as_str(),
            self.email.as_str()
        );
        if let Some(region) = &self.region {
            text.push_str(&format!(" --default-region {region}"));
        }
        text
    }
}

impl fmt::Display for Modes {
    /// `phone=e164 region=US email=provider`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "phone={}", self.phone.as_str())?;
        if let Some(region) = &self.region {
            write!(f, " region={region}")?;
        }
        write!(f, " email={}", self.email.as_str())
    }
}

/// Turns normalized identifiers into keys; cheap to clone. Counts `e164` fallbacks.
#[derive(Clone, Debug, Default)]
pub struct Canon {
    modes: Modes,
    region: Option<country::Id>,
    fallbacks: Counter,
}

impl Canon {
    pub fn new(modes: Modes) -> Canon {
        let region = modes.region.as_deref().and_then(|r| r.parse().ok());
        Canon {
            modes,
            region,
            fallbacks: Counter::default(),
        }
    }

    /// Counts fallbacks in `counter` (the metrics' own) from now on.
    pub(crate) fn with_fallback_counter(mut self, counter: Counter) -> Canon {
        self.fallbacks = counter;
        self
    }

    pub fn modes(&self) -> &Modes {
        &self.modes
    }

    /// Phones that `e164` did not take as valid and matched by `digits` instead, since start.
    #[cfg(test)]
    pub(crate) fn e164_fallbacks(&self) -> u64 {
        self.fallbacks.get()
    }

    /// The key of a normalized phone.
    pub fn phone(&self, phone: Phone) -> Phone {
        match self.modes.phone {
            PhoneMatch::AsGiven => phone,
            PhoneMatch::Digits => rebuild_phone(digits(phone.as_str()), phone),
            PhoneMatch::E164 => {
                let (key, fell_back) = memo::e164_key(phone.as_str(), self.region);
                if fell_back {
                    self.fallbacks.inc();
                }
                rebuild_phone(key, phone)
            }
        }
    }

    /// The key of a normalized email.
    pub fn email(&self, email: Email) -> Email {
        match self.modes.email {
            EmailMatch::AsGiven => email,
            EmailMatch::Provider => match provider_key(email.as_str()) {
                Some(key) => Email::parse(&key).ok().flatten().unwrap_or(email),
                None => email,
            },
        }
    }

    /// A request's identifiers as keys; the contract's modes change nothing (and copy nothing).
    pub fn query(&self, query: Query) -> Query {
        if self.modes.is_as_given() {
            return query;
        }
        let email = self.email_opt(query.email().cloned());
        let phone = self.phone_opt(query.phone().cloned());
        Query::new(email, phone).expect("a key exists for every identifier")
    }

    pub(crate) fn phone_opt(&self, phone: Option<Phone>) -> Option<Phone> {
        phone.map(|p| self.phone(p))
    }

    pub(crate) fn email_opt(&self, email: Option<Email>) -> Option<Email> {
        email.map(|e| self.email(e))
    }
}

/// A key is a valid phone by construction (a digit, and only `+` and digits); should that ever
/// fail, the value stays as it was rather than being refused.
fn rebuild_phone(key: String, was: Phone) -> Phone {
    Phone::parse(&key).ok().flatten().unwrap_or(was)
}

/// `digits`: a leading `+` if the number starts with one, then its digits.
pub fn digits(phone: &str) -> String {
    let mut key = String::with_capacity(phone.len());
    if phone.starts_with('+') {
        key.push('+');
    }
    key.extend(phone.chars().filter(char::is_ascii_digit));
    key
}

/// The `e164` key of `phone` and whether it fell back to `digits`. The digits are tried too
/// (when they differ), so that a key's key is itself: whatever the parser makes of the
/// punctuation, a fallback's digits never parse later.
fn e164_or_digits(phone: &str, region: Option<country::Id>) -> (String, bool) {
    let digits = digits(phone);
    let parsed =
        e164(phone, region).or_else(|| (digits != phone).then(|| e164(&digits, region))?);
    match parsed {
        Some(key) => (key, false),
        None => (digits, true),
    }
}

/// A small memo of recent `e164` keys, one per thread. The `phonenumber` crate takes a global
/// lock and hashes long regex patterns for every rule it tries (about 18 us a number here, most
/// of it in that cache), so a customer who comes back costs a lookup instead.
mod memo {
    use std::cell::RefCell;

    use hashbrown::HashMap;

    use super::{country, e164_or_digits};

    /// Numbers remembered per thread; when full, the memo starts again empty (a customer who
    /// comes back often is soon in it again).
    const CAPACITY: usize = 8192;

    struct Entry {
        region: Option<country::Id>,
        key: Box<str>,
        fell_back: bool,
    }

    thread_local! {
        static MEMO: RefCell<HashMap<Box<str>, Entry>> = RefCell::new(HashMap::new());
    }

    pub(crate) fn e164_key(phone: &str, region: Option<country::Id>) -> (String, bool) {
        let hit = MEMO.with_borrow(|memo| {
            memo.get(phone)
                .filter(|e| e.region == region)
                .map(|e| (e.key.to_string(), e.fell_back))
        });
        hit.unwrap_or_else(|| {
            let (key, fell_back) = e164_or_digits(phone, region);
            MEMO.with_borrow_mut(|memo| {
                if memo.len() >= CAPACITY {
                    memo.clear();
                }
                let entry = Entry {
                    region,
                    key: key.as_str().into(),
                    fell_back,
                };
                memo.insert(phone.into(), entry);
            });
            (key, fell_back)
        })
    }
}

/// `e164`: the E.164 form of a number libphonenumber parses (with `region` for numbers written
/// without `+`) and takes as a valid number; None otherwise.
pub fn e164(phone: &str, region: Option<country::Id>) -> Option<String> {
    let number = phonenumber::parse(region, phone).ok()?;
    // An extension is never part of a key (our phones cannot spell one, but the parser may
    // read one into a long run of digits).
    if number.extension().is_some() || !phonenumber::is_valid(&number) {
        return None;
    }
    Some(number.format().mode(phonenumber::Mode::E164).to_string())
}

/// One domain's documented rules for the local part of its addresses.
pub struct Provider {
    pub domain: &'static str,
    /// The domain keys use: another name of the same mailboxes, or `domain` itself.
    pub key_domain: &'static str,
    /// Dots in the local part are ignored.
    pub dots: bool,
}

const fn rule(domain: &'static str, key_domain: &'static str, dots: bool) -> Provider {
    Provider {
        domain,
        key_domain,
        dots,
    }
}

/// What providers document about their own domains (each ignores everything from the first
/// `+` of the local part on: plus addressing); kept small on purpose (a rule applied to a
/// domain that does not follow it would merge different people).
/// - Gmail: "Dots don't matter in Gmail addresses", and a `+` with any word before the `@`
///   still reaches the mailbox (Gmail Help); `googlemail.com` addresses are the same
///   mailboxes as `gmail.com` ones (Gmail Help, "Gmail and Googlemail").
/// - Outlook.com: plus addressing for outlook.com, hotmail.com and live.com addresses
///   (Microsoft support, "Plus addressing in Outlook.com"); dots do matter there, and the
///   three domains are different mailboxes.
/// - Fastmail: plus addressing (Fastmail help, "Plus addressing and subdomain addressing").
pub(crate) const PROVIDERS: &[Provider] = &[
    rule("gmail.com", "gmail.com", true),
    rule("googlemail.com", "gmail.com", true),
    rule("outlook.com", "outlook.com", false),
    rule("hotmail.com", "hotmail.com", false),
    rule("live.com", "live.com", false),
    rule("fastmail.com", "fastmail.com", false),
];

/// `provider`: the key of a lowercased address at a domain of [`PROVIDERS`], or None when no
/// rule applies. A local part that a rule would empty (`+tag@gmail.com`) is left whole.
pub(crate) fn provider_key(email: &str) -> Option<String> {
    let (local, domain) = email.rsplit_once('@')?;
    let provider = PROVIDERS.iter().find(|p| p.domain == domain)?;
    let key_local = local.split_once('+').map_or(local, |(before, _)| before);
    let mut key_local = if provider.dots {
        key_local.replace('.', "")
    } else {
        key_local.to_owned()
    };
    if key_local.is_empty() {
        key_local = local.to_owned();
    }
    Some(format!("{key_local}@{}", provider.key_domain))
}

#[cfg(test)]
mod tests;
