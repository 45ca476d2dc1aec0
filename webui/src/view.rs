//! How values look on a page: times, durations, sizes and state badges.

use chrono::DateTime;
use goflow_core::InstanceState;

use crate::i18n::{Lang, state_label, state_meaning};

/// Times on every page: UTC, `YYYY-MM-DD HH:MM:SS`; empty when unset (epoch ms 0).
pub fn time(epoch_ms: i64) -> String {
    if epoch_ms <= 0 {
        return String::new();
    }
    DateTime::from_timestamp_millis(epoch_ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// From start to finish, or to `now` while still running; empty when it never started.
/// `2m 05s`; `2 分 05 秒`.
pub fn duration(started_ms: i64, finished_ms: i64, now_ms: i64, lang: Lang) -> String {
    if started_ms <= 0 {
        return String::new();
    }
    let end = if finished_ms > 0 { finished_ms } else { now_ms };
    let secs = (end - started_ms).max(0) / 1000;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (lang, h, m) {
        (Lang::En, 0, 0) => format!("{s}s"),
        (Lang::En, 0, _) => format!("{m}m {s:02}s"),
        (Lang::En, _, _) => format!("{h}h {m:02}m {s:02}s"),
        (Lang::Zh, 0, 0) => format!("{s} 秒"),
        (Lang::Zh, 0, _) => format!("{m} 分 {s:02} 秒"),
        (Lang::Zh, _, _) => format!("{h} 小时 {m:02} 分 {s:02} 秒"),
    }
}

/// `1.5 MiB`, `312 B`.
pub fn bytes(n: i64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

pub fn exit_code(has_exit_code: bool, exit_code: i32) -> String {
    if has_exit_code {
        exit_code.to_string()
    } else {
        String::new()
    }
}

/// A state drawn as a coloured pill (`macros.html`), the same for instances and tries.
#[derive(Debug, Clone)]
pub struct Badge {
    /// The state's name as the API spells it.
    pub name: String,
    /// What the pill says: the name in English, its Chinese word in Chinese.
    pub label: String,
    /// The CSS class suffix: the name when it is a known state, else `unknown`.
    pub class: &'static str,
    /// Force-passed (mark-success): drawn hatched.
    pub forced: bool,
    pub title: String,
}

/// Instance states plus the extra ones a try can be in.
const KNOWN: [&str; 11] = [
    "waiting",
    "queued",
    "running",
    "up_for_retry",
    "success",
    "failed",
    "killed",
    "timed_out",
    "lost",
    "killing",
    // a task without an instance on the day shown (graph nodes, grid cells)
    "none",
];

impl Badge {
    pub fn new(state: &str, forced: bool, lang: Lang) -> Self {
        let class = state_class(state);
        let forced = forced && state == "success";
        // English shows the API's name (a forced success is `success`, hatched); Chinese says
        // 强制通过 for it.
        let shown = if forced && lang == Lang::Zh {
            "forced"
        } else {
            state
        };
        Self {
            label: state_label(lang, shown).to_string(),
            title: state_title(lang, state, forced),
            name: state.to_string(),
            class,
            forced,
        }
    }

    pub fn of(state: InstanceState, lang: Lang) -> Self {
        Self::new(state.as_str(), false, lang)
    }
}

/// A state's hover text: its meaning in English; in Chinese the API's name, so a reader can
/// search for it (and match it with goflowctl's output).
pub fn state_title(lang: Lang, state: &str, forced: bool) -> String {
    match lang {
        Lang::En => state_meaning(lang, if forced { "forced" } else { state }).to_string(),
        Lang::Zh if forced => format!("{state} (forced)"),
        Lang::Zh => state.to_string(),
    }
}

/// The CSS class suffix of a state name: itself when known, else `unknown` (never raw input).
pub fn state_class(state: &str) -> &'static str {
    KNOWN.iter().copied().find(|k| *k == state).unwrap_or("unknown")
}

/// How long ago, coarsely: `4s ago`, `3m ago`, `2h ago`, `5d ago`; `5 秒前`.
pub fn age(then_ms: i64, now_ms: i64, lang: Lang) -> String {
    if then_ms <= 0 {
        return String::new();
    }
    let secs = (now_ms - then_ms).max(0) / 1000;
    let (n, en, zh) = match secs {
        0..60 => (secs, "s", "秒"),
        60..3600 => (secs / 60, "m", "分钟"),
        3600..86_400 => (secs / 3600, "h", "小时"),
        _ => (secs / 86_400, "d", "天"),
    };
    match lang {
        Lang::En => format!("{n}{en} ago"),
        Lang::Zh => format!("{n} {zh}前"),
    }
}

/// The instance will change without an operator: worth refreshing the page for.
pub fn in_progress(state: &str, blocked: bool) -> bool {
    match InstanceState::parse(state) {
        Some(state) => !state.is_finished() && !blocked,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_and_empty_when_unset() {
        assert_eq!(time(0), "");
        assert_eq!(time(1_767_225_600_000 + 3_723_000), "2026-01-01 01:02:03");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(0, 0, 5_000, Lang::En), "");
        assert_eq!(duration(1_000, 43_000, 0, Lang::En), "42s");
        assert_eq!(duration(1, 125_001, 0, Lang::En), "2m 05s");
        assert_eq!(duration(1_000, 0, 3_601_000 + 61_000, Lang::En), "1h 01m 01s");
        assert_eq!(duration(1, 125_001, 0, Lang::Zh), "2 分 05 秒");
    }

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(bytes(312), "312 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(256 * 1024), "256 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn badges_only_carry_known_classes() {
        assert_eq!(Badge::new("up_for_retry", false, Lang::En).class, "up_for_retry");
        assert_eq!(Badge::new("\"><script>", false, Lang::En).class, "unknown");
        assert!(Badge::new("success", true, Lang::En).forced);
        assert!(!Badge::new("failed", true, Lang::En).forced);
        let forced = Badge::new("success", true, Lang::Zh);
        assert_eq!(
            (forced.label.as_str(), forced.title.as_str()),
            ("强制通过", "success (forced)")
        );
        let failed = Badge::new("failed", false, Lang::Zh);
        assert_eq!(
            (failed.label.as_str(), failed.title.as_str()),
            ("失败", "failed"),
            "searchable"
        );
        let forced = Badge::new("success", true, Lang::En);
        assert_eq!(forced.label, "success", "hatched, under the API's name");
        let failed = Badge::new("failed", false, Lang::En);
        assert_eq!(
            (failed.label.as_str(), failed.title.as_str()),
            ("failed", "failed")
        );
    }

    #[test]
    fn ages_are_coarse() {
        assert_eq!(age(0, 10, Lang::En), "");
        assert_eq!(age(1_000, 5_000, Lang::En), "4s ago");
        assert_eq!(age(1_000, 6_000, Lang::Zh), "5 秒前");
        assert_eq!(age(1, 7_200_001, Lang::Zh), "2 小时前");
    }
}
