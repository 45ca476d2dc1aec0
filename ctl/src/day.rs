//! Data dates on the command line: `yyyymmdd` or `yyyy-mm-dd`, checked before anything is sent.

/// Parses a data date and returns its normalized `yyyymmdd` form.
///
/// Used as clap's value parser for `-d/--day`, `--from` and `--to`, so a bad date is a usage
/// error with a clear message; the server validates again, with the same rules.
pub fn parse_day(input: &str) -> Result<String, String> {
    goflow_core::EtlDay::parse(input)
        .map(|day| day.compact())
        .map_err(|e| e.to_string())
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
        assert!(
            parse_day("2026-13-01")
                .unwrap_err()
                .starts_with(r#"invalid date "2026-13-01": expected yyyymmdd or yyyy-mm-dd"#)
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
