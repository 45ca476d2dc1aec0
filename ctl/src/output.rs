//! Rendering: aligned borderless tables, JSON arrays, times and durations.

use std::io::{self, Write};

use chrono::{DateTime, Local, SecondsFormat, TimeZone, Utc};
use clap::ValueEnum;
use comfy_table::{Table, presets::NOTHING};
use serde_json::Value;

/// `-o/--output` of the listing commands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An aligned table for people.
    #[default]
    Table,
    /// One JSON array of objects, for scripts.
    Json,
}

/// A kubectl-like table: no borders, columns separated by three spaces, no trailing blanks.
pub fn table<I, S>(header: I, rows: Vec<Vec<String>>) -> String
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let header: Vec<String> = header.into_iter().map(Into::into).collect();
    let mut table = Table::new();
    table.load_preset(NOTHING).force_no_tty().set_header(header);
    for row in rows {
        table.add_row(row);
    }
    let count = table.column_count();
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if i + 1 == count { 0 } else { 3 }));
    }
    let mut out = table.trim_fmt();
    out.push('\n');
    out
}

/// Writes `items` as one pretty JSON array followed by a newline.
pub fn write_json_array(out: &mut impl Write, items: Vec<Value>) -> io::Result<()> {
    write_json(out, &Value::Array(items))
}

/// Writes any JSON value, pretty, followed by a newline.
pub fn write_json(out: &mut impl Write, value: &Value) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)
}

/// Epoch milliseconds as local `YYYY-MM-DD HH:MM:SS`; 0 (unset) is empty.
pub fn local_time(ms: i64) -> String {
    time_in(ms, &Local)
}

/// Epoch milliseconds as local `YYYY-MM-DD HH:MM:SS +08:00`, with the zone's offset (for
/// times that matter beyond this machine, such as a next fire); 0 (unset) is empty.
pub fn local_time_zoned(ms: i64) -> String {
    zoned_in(ms, &Local)
}

fn zoned_in<Tz: TimeZone>(ms: i64, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    if ms == 0 {
        return String::new();
    }
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) => t.with_timezone(tz).format("%Y-%m-%d %H:%M:%S %:z").to_string(),
        None => ms.to_string(),
    }
}

/// Epoch milliseconds as `YYYY-MM-DD HH:MM:SS` in `tz`; 0 (unset) is empty.
pub fn time_in<Tz: TimeZone>(ms: i64, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    if ms == 0 {
        return String::new();
    }
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) => t.with_timezone(tz).format("%Y-%m-%d %H:%M:%S").to_string(),
        None => ms.to_string(),
    }
}

/// Epoch milliseconds as an RFC 3339 UTC string for JSON, or null when 0 (unset).
pub fn json_time(ms: i64) -> Value {
    if ms == 0 {
        return Value::Null;
    }
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) => Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, true)),
        None => Value::Null,
    }
}

/// A short human duration: `850ms`, `12s`, `1m05s`, `2h03m`, `3d04h`. Negative counts as 0.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// `1 instance`, `2 instances`: a count and its noun (an `s` for the plural).
pub fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// A day offset for people: `-1 day`, `+2 days`.
pub fn day_offset(offset: i32) -> String {
    let unit = if offset.abs() == 1 { "day" } else { "days" };
    format!("{offset:+} {unit}")
}

/// `yes` or empty, for boolean columns.
pub fn yes(flag: bool) -> String {
    if flag { "yes".into() } else { String::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_aligned_borderless_and_trimmed() {
        let out = table(
            ["ID", "STATE", "INFO"],
            vec![
                vec!["a".into(), "success".into(), String::new()],
                vec!["longer_id".into(), "failed".into(), "exit 3".into()],
            ],
        );
        assert_eq!(
            out,
            "ID          STATE     INFO\n\
             a           success\n\
             longer_id   failed    exit 3\n"
        );
    }

    #[test]
    fn times() {
        assert_eq!(time_in(0, &Utc), "");
        assert_eq!(time_in(1_767_225_600_000, &Utc), "2026-01-01 00:00:00");
        let plus2 = chrono::FixedOffset::east_opt(2 * 3600).unwrap();
        assert_eq!(time_in(1_767_225_600_500, &plus2), "2026-01-01 02:00:00");
        assert_eq!(zoned_in(0, &Utc), "");
        assert_eq!(zoned_in(1_767_225_600_500, &plus2), "2026-01-01 02:00:00 +02:00");
        assert_eq!(json_time(0), Value::Null);
        assert_eq!(
            json_time(1_767_225_600_123),
            Value::from("2026-01-01T00:00:00.123Z")
        );
    }

    #[test]
    fn durations() {
        assert_eq!(duration(-5), "0ms");
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(12_400), "12s");
        assert_eq!(duration(65_000), "1m05s");
        assert_eq!(duration(2 * 3_600_000 + 3 * 60_000), "2h03m");
        assert_eq!(duration(3 * 86_400_000 + 4 * 3_600_000), "3d04h");
    }

    #[test]
    fn offsets() {
        assert_eq!(day_offset(-1), "-1 day");
        assert_eq!(day_offset(-2), "-2 days");
        assert_eq!(day_offset(1), "+1 day");
    }

    #[test]
    fn json_array_is_one_array() {
        let mut out = Vec::new();
        write_json_array(&mut out, vec![serde_json::json!({"a": 1})]).unwrap();
        let parsed: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed, serde_json::json!([{"a": 1}]));
    }
}
