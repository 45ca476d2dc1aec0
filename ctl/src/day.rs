//! Data dates on the command line: `yyyymmdd` or `yyyy-mm-dd`, checked before anything is sent.

use chrono::NaiveDate;

/// Parses a data date and returns its normalized `yyyymmdd` form.
///
/// Used as clap's value parser for `-d/--day`, `--from` and `--to`, so a bad date is a usage
/// error with a clear message; the server validates again.
pub fn parse_day(input: &str) -> Result<String, String> {
    let fail = || format!("invalid date {input:?}: expected yyyymmdd or yyyy-mm-dd");
    let digits = match input.len() {
        8 => input.to_string(),
        10 if input.as_bytes()[4] == b'-' && input.as_bytes()[7] == b'-' => {
            format!("{}{}{}", &input[..4], &input[5..7], &input[8..])
        }
        _ => return Err(fail()),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(fail());
    }
    let date = NaiveDate::parse_from_str(&digits, "%Y%m%d").map_err(|_| fail())?;
    if date.format("%Y%m%d").to_string() != digits {
        return Err(fail());
    }
    Ok(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_both_forms_and_normalizes() {
        assert_eq!(parse_day("20260131").unwrap(), "20260131");
        assert_eq!(parse_day("2026-01-31").unwrap(), "20260131");
        assert_eq!(parse_day("2024-02-29").unwrap(), "20240229");
    }

    #[test]
    fn rejects_bad_dates_with_a_clear_message() {
        assert_eq!(
            parse_day("2026-13-01").unwrap_err(),
            r#"invalid date "2026-13-01": expected yyyymmdd or yyyy-mm-dd"#
        );
        for bad in [
            "",
            "2026131",
            "202601311",
            "2026/01/31",
            "2026-1-31",
            "2026-01-3x",
            "20260230",
            "2025-02-29",
            "+2026011",
            "2026-0131",
            " 20260131",
            "２０２６０１３１",
        ] {
            assert!(parse_day(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
