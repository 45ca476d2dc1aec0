//! Data dates and periods on the command line: `yyyymmdd` or `yyyy-mm-dd`, `yyyymmddHH` for an
//! hourly task, `yyyymm` for a monthly one; checked before anything is sent.

/// Parses a period key and returns its normalized form (`yyyymmdd` for a day).
///
/// Used as clap's value parser for `-d/--day`, `--from` and `--to`, so a bad date is a usage
/// error with a clear message; the server validates again, with the same rules, and checks the
/// key's length against the task's period.
pub fn parse_day(input: &str) -> Result<String, String> {
    goflow_core::Period::parse(input)
        .map(|period| period.key())
        .map_err(|e| e.to_string())
}

/// An instance's key as the API gives it: its period, or its day from a coordinator that
/// predates periods.
pub fn key_of<'a>(period: &'a str, etl_day: &'a str) -> &'a str {
    if period.is_empty() { etl_day } else { period }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_both_forms_and_normalizes() {
        assert_eq!(parse_day("20260131").unwrap(), "20260131");
        assert_eq!(parse_day("2026-01-31").unwrap(), "20260131");
        assert_eq!(parse_day("2024-02-29").unwrap(), "20240229");
        assert_eq!(parse_day("2026112013").unwrap(), "2026112013");
        assert_eq!(parse_day("202611").unwrap(), "202611");
    }

    #[test]
    fn rejects_bad_dates_with_a_clear_message() {
        assert!(
            parse_day("2026-13-01")
                .unwrap_err()
                .starts_with(r#"invalid period "2026-13-01": expected a day (yyyymmdd or yyyy-mm-dd)"#)
        );
        for bad in [
            "",
            "2026131",
            "202601311",
            "2026013124",
            "202613",
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
