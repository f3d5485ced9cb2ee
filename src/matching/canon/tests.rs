//! Table tests of every mode: phones of several regions, addresses of several providers,
//! invalid numbers and the fallback, and that every key is its own key.

use super::*;

fn phone(text: &str) -> Phone {
    Phone::parse(text).unwrap().unwrap()
}

fn email(text: &str) -> Email {
    Email::parse(text).unwrap().unwrap()
}

fn canon(phone: PhoneMatch, email: EmailMatch, region: Option<&str>) -> Canon {
    Canon::new(Modes::new(phone, email, region).unwrap())
}

/// Checks each `(given, key)` and that the key of a key is itself.
fn check_phones(canon: &Canon, table: &[(&str, &str)]) {
    for &(given, want) in table {
        let key = canon.phone(phone(given));
        assert_eq!(key.as_str(), want, "{} of {given:?}", canon.modes());
        assert_eq!(
            canon.phone(key.clone()),
            key,
            "{} of {want:?}",
            canon.modes()
        );
    }
}

fn check_emails(canon: &Canon, table: &[(&str, &str)]) {
    for &(given, want) in table {
        let key = canon.email(email(given));
        assert_eq!(key.as_str(), want, "{} of {given:?}", canon.modes());
        assert_eq!(
            canon.email(key.clone()),
            key,
            "{} of {want:?}",
            canon.modes()
        );
    }
}

#[test]
fn as_given_keeps_the_normalized_phone() {
    let c = Canon::default();
    check_phones(
        &c,
        &[
            ("555-123-4567", "555-123-4567"),
            ("+1 (555) 123", "+1 (555) 123"),
        ],
    );
}

#[test]
fn digits_keeps_a_leading_plus_and_the_digits() {
    let c = canon(PhoneMatch::Digits, EmailMatch::AsGiven, None);
    check_phones(
        &c,
        &[
            ("555-123-4567", "5551234567"),
            ("(555) 123-4567", "5551234567"),
            ("+1 555 123 4567", "+15551234567"),
            ("5551234567", "5551234567"),
            ("+44 (0)20 7946 0958", "+4402079460958"),
            ("0.1", "01"),
            ("1+2", "12"),
        ][..],
    );
}

#[test]
fn e164_sees_one_number_in_every_spelling_of_it() {
    let us = canon(PhoneMatch::E164, EmailMatch::AsGiven, Some("us"));
    check_phones(
        &us,
        &[
            ("(201) 555-0123", "+12015550123"),
            ("201-555-0123", "+12015550123"),
            ("+1 201 555 0123", "+12015550123"),
            ("2015550123", "+12015550123"),
            ("1 201 555 0123", "+12015550123"),
            ("+44 20 7946 0958", "+442079460958"),
            // The crate (unlike libphonenumber's Java code) keeps a written-out national
            // prefix after the country code, and takes the result as valid.
            ("+44 (0)20 7946 0958", "+4402079460958"),
            ("+91 98765 43210", "+919876543210"),
            ("+49 30 901820", "+4930901820"),
            ("+33 1 42 68 53 00", "+33142685300"),
        ],
    );
    let gb = canon(PhoneMatch::E164, EmailMatch::AsGiven, Some("GB"));
    check_phones(
        &gb,
        &[
            ("020 7946 0958", "+442079460958"),
            ("07911 123456", "+447911123456"),
            ("+1 (201) 555-0123", "+12015550123"),
        ],
    );
    let india = canon(PhoneMatch::E164, EmailMatch::AsGiven, Some("IN"));
    check_phones(&india, &[("098765 43210", "+919876543210")]);
}

#[test]
fn e164_falls_back_to_digits_and_counts_it() {
    let us = canon(PhoneMatch::E164, EmailMatch::AsGiven, Some("US"));
    check_phones(
        &us,
        &[
            ("123456", "123456"),
            ("(555) 123-4567", "5551234567"),
            ("+999 123", "+999123"),
            ("0", "0"),
            ("+1 (201) 555-01234567", "+120155501234567"),
        ],
    );
    // Five fallbacks, each counted twice (the value, then its key).
    assert_eq!(us.e164_fallbacks(), 10);
}

#[test]
fn e164_without_a_region_takes_only_numbers_with_a_plus() {
    let c = canon(PhoneMatch::E164, EmailMatch::AsGiven, None);
    check_phones(
        &c,
        &[
            ("+1 201 555 0123", "+12015550123"),
            ("(201) 555-0123", "2015550123"),
        ],
    );
}

#[test]
fn an_unknown_region_is_refused() {
    let err = Modes::new(PhoneMatch::E164, EmailMatch::AsGiven, Some("XX")).unwrap_err();
    assert!(err.contains("--default-region XX"), "{err}");
    let modes = Modes::new(PhoneMatch::Digits, EmailMatch::AsGiven, Some("us")).unwrap();
    assert_eq!(modes.region, None, "only e164 keeps a region");
    let modes = Modes::new(PhoneMatch::E164, EmailMatch::AsGiven, Some("us")).unwrap();
    assert_eq!(modes.region.as_deref(), Some("US"));
}

#[test]
fn provider_applies_each_providers_own_rules() {
    let c = canon(PhoneMatch::AsGiven, EmailMatch::Provider, None);
    check_emails(
        &c,
        &[
            ("John.Doe+shop@gmail.com", "johndoe@gmail.com"),
            ("johndoe@gmail.com", "johndoe@gmail.com"),
            ("j.o.h.n.d.o.e@GoogleMail.com", "johndoe@gmail.com"),
            ("john.doe+a+b@googlemail.com", "johndoe@gmail.com"),
            ("john.doe+news@outlook.com", "john.doe@outlook.com"),
            ("john.doe+x@hotmail.com", "john.doe@hotmail.com"),
            ("john.doe@live.com", "john.doe@live.com"),
            ("jd+work@fastmail.com", "jd@fastmail.com"),
            // Other domains: lowercased only; their rules are their own.
            ("John.Doe+shop@example.com", "john.doe+shop@example.com"),
            ("john.doe+x@yahoo.com", "john.doe+x@yahoo.com"),
            ("a.b@gmail.com.evil.io", "a.b@gmail.com.evil.io"),
            // A rule that would leave nothing leaves the local part whole.
            ("+tag@gmail.com", "+tag@gmail.com"),
            ("...@gmail.com", "...@gmail.com"),
            ("+only@outlook.com", "+only@outlook.com"),
        ],
    );
}

#[test]
fn as_given_email_is_the_lowercased_address() {
    check_emails(
        &Canon::default(),
        &[("John.Doe+shop@Gmail.com", "john.doe+shop@gmail.com")],
    );
}

#[test]
fn modes_spell_their_options() {
    let modes = Modes::new(PhoneMatch::E164, EmailMatch::Provider, Some("de")).unwrap();
    assert_eq!(
        modes.options(),
        "--phone-match e164 --email-match provider --default-region DE"
    );
    assert_eq!(modes.to_string(), "phone=e164 region=DE email=provider");
    assert!(Modes::default().is_as_given());
}

proptest::proptest! {
    #[test]
    fn every_key_is_its_own_key(
        phone in "[+]?[0-9 ()+.-]{0,8}[0-9][0-9 ()+.-]{0,14}",
        region in proptest::sample::select(vec!["US", "GB", "IN", "DE"]),
    ) {
        let phone = Phone::parse(&phone).unwrap().unwrap();
        for mode in [PhoneMatch::Digits, PhoneMatch::E164] {
            let c = canon(mode, EmailMatch::AsGiven, Some(region));
            let key = c.phone(phone.clone());
            proptest::prop_assert_eq!(c.phone(key.clone()), key, "{} of {:?}", c.modes(), phone);
        }
    }

    #[test]
    fn every_email_key_is_its_own_key(
        local in "[a-z.+]{1,12}",
        domain in proptest::sample::select(vec!["gmail.com", "googlemail.com", "outlook.com", "x.io"]),
    ) {
        let c = canon(PhoneMatch::AsGiven, EmailMatch::Provider, None);
        let key = c.email(email(&format!("{local}@{domain}")));
        proptest::prop_assert_eq!(c.email(key.clone()), key);
    }
}
