//! RFC 3339 in UTC with milliseconds, both ways, without a date library (the proleptic Gregorian
//! calendar via Howard Hinnant's days-from-civil algorithms).

use std::fmt;

const MS_PER_DAY: i64 = 86_400_000;

/// Writes `ms` (since the epoch) as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn write_rfc3339(f: &mut impl fmt::Write, ms: i64) -> fmt::Result {
    let days = ms.div_euclid(MS_PER_DAY);
    let in_day = ms.rem_euclid(MS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let (secs, millis) = (in_day / 1000, in_day % 1000);
    write!(
        f,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Parses `YYYY-MM-DD[T ]HH:MM:SS[.fraction](Z|±HH[:MM])`; fractions beyond milliseconds are cut.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.trim().as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let (month, day) = (digits(&b[5..7])?, digits(&b[8..10])?);
    let (hour, minute, second) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    let valid = (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && hour < 24
        && minute < 60
        && second < 61;
    if !valid {
        return None;
    }
    let mut rest = &b[19..];
    let mut millis = 0;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let len = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 {
            return None;
        }
        let first3: Vec<u8> = fraction[..len]
            .iter()
            .copied()
            .chain(*b"000")
            .take(3)
            .collect();
        millis = digits(&first3)?;
        rest = &fraction[len..];
    }
    let offset_minutes = offset(rest)?;
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(secs * 1000 + millis)
}

fn offset(rest: &[u8]) -> Option<i64> {
    match rest {
        b"Z" | b"z" => Some(0),
        [sign @ (b'+' | b'-'), h1, h2, tail @ ..] => {
            let minutes = match tail {
                [] => 0,
                [b':', m1, m2] | [m1, m2] => digits(&[*m1, *m2])?,
                _ => return None,
            };
            let total = digits(&[*h1, *h2])? * 60 + minutes;
            Some(if *sign == b'-' { -total } else { total })
        }
        _ => None,
    }
}

fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0i64, |acc, c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(ms: i64) -> String {
        let mut s = String::new();
        write_rfc3339(&mut s, ms).unwrap();
        s
    }

    #[test]
    fn formatting_and_parsing_round_trip() {
        for ms in [
            0,
            1,
            951_782_400_000,
            1_680_307_200_374,
            4_102_444_799_999,
            -1,
        ] {
            assert_eq!(parse_rfc3339(&format(ms)), Some(ms), "{}", format(ms));
        }
    }

    #[test]
    fn parsing_accepts_offsets_spaces_and_long_fractions() {
        let utc = parse_rfc3339("2023-04-01T00:00:00.374Z").unwrap();
        assert_eq!(parse_rfc3339("2023-04-01 02:00:00.374123+02:00"), Some(utc));
        assert_eq!(parse_rfc3339("2023-04-01T00:00:00.374+00"), Some(utc));
        assert_eq!(parse_rfc3339("2023-04-01T00:00:00Z"), Some(utc - 374));
    }

    #[test]
    fn parsing_refuses_impossible_dates() {
        for bad in [
            "2023-02-30T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-04-01",
            "2023-04-01T00:00:00",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
