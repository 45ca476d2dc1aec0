//! Where the time went (issue 19): an instance's timings as one stacked bar (the instance
//! page, `partials/timings_bar.html`), and the day's sum per phase (the overview,
//! `partials/day_timings.html`), so a slow day says whether it was slots, upstreams or the
//! commands themselves. Labels in both languages, beside the bar they label.

use goflow_proto::{Instance, InstanceTimings};

use crate::i18n::Lang;

/// One phase of the bar.
pub struct Segment {
    /// The phase's name as the API spells it (the element's class and id).
    pub phase: &'static str,
    pub label: &'static str,
    pub color: &'static str,
    /// Its share of the whole, in percent (`37.25`): the segment's width.
    pub width: String,
    pub text: String,
    pub ms: i64,
}

/// The bar and its legend.
pub struct TimingsBar {
    pub title: &'static str,
    pub total_label: &'static str,
    pub total: String,
    /// Every phase, zero ones included (the legend lists them all); the bar draws the others.
    pub segments: Vec<Segment>,
    /// (label, running time) of each try of the current run: `try 2`, `1.5 s`.
    pub tries: Vec<(String, String)>,
    pub tries_label: &'static str,
    /// The instances summed (the day's bar); 0 for one instance's.
    pub instances: usize,
    pub instances_label: &'static str,
}

impl TimingsBar {
    /// The segments wide enough to draw.
    pub fn drawn(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter().filter(|s| s.ms > 0)
    }
}

/// (API name, colour, English label, Chinese label) of each phase, in the bar's order. The
/// colours follow the states' (DESIGN.md): waiting grey outline, queued grey, running green,
/// up_for_retry gold.
const PHASES: [(&str, &str, &str, &str); 6] = [
    (
        "waiting_upstreams",
        "#d9d9d9",
        "Waiting for upstreams",
        "等待上游",
    ),
    (
        "waiting_slots",
        "#8c6bb1",
        "Waiting for slots (pool or max_active)",
        "等待槽位（资源池或 max_active）",
    ),
    (
        "queued",
        "#9e9e9e",
        "Queued (until an agent claimed it)",
        "排队（直到执行器领取）",
    ),
    (
        "claimed_to_started",
        "#4fa3d1",
        "Claimed to started",
        "领取到启动",
    ),
    ("running", "#7bc47f", "Running", "运行"),
    ("retry_delays", "#e6b422", "Retry delays", "重试等待"),
];

fn phase_ms(t: &InstanceTimings, phase: &str) -> i64 {
    match phase {
        "waiting_upstreams" => t.waiting_upstreams,
        "waiting_slots" => t.waiting_slots,
        "queued" => t.queued,
        "claimed_to_started" => t.claimed_to_started,
        "running" => t.running,
        "retry_delays" => t.retry_delays,
        _ => 0,
    }
}

/// One instance's bar; None when it has no timings (created before they were kept).
pub fn instance_bar(timings: Option<&InstanceTimings>, lang: Lang) -> Option<TimingsBar> {
    let t = timings?;
    let mut bar = build(t, lang, 0);
    bar.tries = t
        .tries
        .iter()
        .map(|r| {
            let label = match lang {
                Lang::En => format!("try {}", r.try_number),
                Lang::Zh => format!("第 {} 次", r.try_number),
            };
            (label, format_ms(r.running, lang))
        })
        .collect();
    Some(bar)
}

/// The day's bar: every listed instance's timings summed per phase; None when none has any.
pub fn day_bar(instances: &[Instance], lang: Lang) -> Option<TimingsBar> {
    let with: Vec<&InstanceTimings> = instances.iter().filter_map(|i| i.timings.as_ref()).collect();
    if with.is_empty() {
        return None;
    }
    let mut sum = InstanceTimings::default();
    for t in &with {
        sum.waiting_upstreams += t.waiting_upstreams;
        sum.waiting_slots += t.waiting_slots;
        sum.queued += t.queued;
        sum.claimed_to_started += t.claimed_to_started;
        sum.running += t.running;
        sum.retry_delays += t.retry_delays;
    }
    Some(build(&sum, lang, with.len()))
}

fn build(t: &InstanceTimings, lang: Lang, instances: usize) -> TimingsBar {
    let total: i64 = PHASES.iter().map(|(p, ..)| phase_ms(t, p).max(0)).sum();
    let segments = PHASES
        .iter()
        .map(|&(phase, color, en, zh)| {
            let ms = phase_ms(t, phase).max(0);
            let share = if total > 0 {
                ms as f64 * 100.0 / total as f64
            } else {
                0.0
            };
            Segment {
                phase,
                label: if lang == Lang::En { en } else { zh },
                color,
                width: format!("{share:.2}"),
                text: format_ms(ms, lang),
                ms,
            }
        })
        .collect();
    let (title, total_label, tries_label, instances_label) = match (lang, instances > 0) {
        (Lang::En, false) => ("Where the time went", "Total", "Running per try", ""),
        (Lang::En, true) => ("Where the day's time went", "Total", "", "instances"),
        (Lang::Zh, false) => ("时间花在哪里", "合计", "每次尝试的运行时间", ""),
        (Lang::Zh, true) => ("当天的时间花在哪里", "合计", "", "个实例"),
    };
    TimingsBar {
        title,
        total_label,
        total: format_ms(total, lang),
        segments,
        tries: vec![],
        tries_label,
        instances,
        instances_label,
    }
}

/// `850 ms`, `1.5 s`, `2 min 05 s`, `3 h 04 min` (`850 毫秒`, `1.5 秒`, `2 分 05 秒`, `3 小时 04 分`).
pub fn format_ms(ms: i64, lang: Lang) -> String {
    let ms = ms.max(0);
    let (ms_u, s_u, min_u, h_u) = match lang {
        Lang::En => ("ms", "s", "min", "h"),
        Lang::Zh => ("毫秒", "秒", "分", "小时"),
    };
    if ms < 1_000 {
        format!("{ms} {ms_u}")
    } else if ms < 60_000 {
        format!("{:.1} {s_u}", ms as f64 / 1_000.0)
    } else if ms < 3_600_000 {
        format!("{} {min_u} {:02} {s_u}", ms / 60_000, ms % 60_000 / 1_000)
    } else {
        format!("{} {h_u} {:02} {min_u}", ms / 3_600_000, ms % 3_600_000 / 60_000)
    }
}

#[cfg(test)]
mod tests {
    use askama::Template;
    use goflow_proto::TryTiming;

    use super::*;

    fn timings() -> InstanceTimings {
        InstanceTimings {
            waiting_upstreams: 3_000,
            waiting_slots: 1_000,
            queued: 0,
            claimed_to_started: 0,
            running: 2_000,
            retry_delays: 4_000,
            tries: vec![
                TryTiming {
                    try_number: 1,
                    running: 500,
                },
                TryTiming {
                    try_number: 2,
                    running: 1_500,
                },
            ],
            phase: "done".into(),
            run_started_at: 1,
        }
    }

    #[test]
    fn milliseconds_read_as_ms_s_min_h() {
        assert_eq!(format_ms(850, Lang::En), "850 ms");
        assert_eq!(format_ms(1_500, Lang::En), "1.5 s");
        assert_eq!(format_ms(125_000, Lang::En), "2 min 05 s");
        assert_eq!(format_ms(3 * 3_600_000 + 4 * 60_000, Lang::En), "3 h 04 min");
        assert_eq!(format_ms(1_500, Lang::Zh), "1.5 秒");
        assert_eq!(format_ms(-5, Lang::En), "0 ms");
    }

    #[test]
    fn segments_are_shares_of_the_whole() {
        let bar = instance_bar(Some(&timings()), Lang::En).unwrap();
        let widths: Vec<(&str, &str)> = bar.segments.iter().map(|s| (s.phase, s.width.as_str())).collect();
        assert_eq!(
            widths,
            [
                ("waiting_upstreams", "30.00"),
                ("waiting_slots", "10.00"),
                ("queued", "0.00"),
                ("claimed_to_started", "0.00"),
                ("running", "20.00"),
                ("retry_delays", "40.00"),
            ]
        );
        assert_eq!(bar.total, "10.0 s");
        assert_eq!(bar.drawn().count(), 4);
        assert_eq!(
            bar.tries,
            [
                ("try 1".into(), "500 ms".into()),
                ("try 2".into(), "1.5 s".into())
            ]
        );
        assert!(instance_bar(None, Lang::En).is_none());
    }

    #[test]
    fn the_day_sums_each_phase() {
        let one = Instance {
            timings: Some(timings()),
            ..Default::default()
        };
        let none = Instance::default();
        let bar = day_bar(&[one.clone(), one, none], Lang::Zh).unwrap();
        assert_eq!(bar.instances, 2);
        assert_eq!(bar.segments[0].ms, 6_000);
        assert_eq!(bar.segments[5].ms, 8_000);
        assert_eq!(bar.total, "20.0 秒");
        assert_eq!(bar.title, "当天的时间花在哪里");
        assert!(day_bar(&[Instance::default()], Lang::En).is_none());
    }

    #[derive(Template)]
    #[template(
        source = r#"{% include "partials/timings_bar.html" %}|{% include "partials/day_timings.html" %}"#,
        ext = "html"
    )]
    struct Both {
        timings: Option<TimingsBar>,
        day_timings: Option<TimingsBar>,
    }

    #[test]
    fn the_bars_render_with_a_legend_in_both_languages() {
        let one = Instance {
            timings: Some(timings()),
            ..Default::default()
        };
        let html = Both {
            timings: instance_bar(Some(&timings()), Lang::En),
            day_timings: day_bar(std::slice::from_ref(&one), Lang::En),
        }
        .render()
        .unwrap();
        assert!(html.contains(r#"id="timings""#), "{html}");
        assert!(
            html.contains(r#"class="seg timings-retry_delays" style="width:40.00%;background:#e6b422""#),
            "{html}"
        );
        assert!(html.contains("Waiting for upstreams"), "{html}");
        assert!(html.contains("3.0 s"), "{html}");
        assert!(html.contains("try 2"), "{html}");
        assert!(html.contains(r#"id="day-timings""#), "{html}");
        assert!(
            html.contains("1 instances") || html.contains("1 instance"),
            "{html}"
        );
        // Zero phases are in the legend, not drawn.
        assert!(!html.contains(r#"class="seg timings-queued""#), "{html}");

        let zh = Both {
            timings: instance_bar(Some(&timings()), Lang::Zh),
            day_timings: None,
        }
        .render()
        .unwrap();
        assert!(
            zh.contains("时间花在哪里") && zh.contains("等待上游") && zh.contains("第 2 次"),
            "{zh}"
        );
        assert!(!zh.contains("day-timings"), "{zh}");

        let nothing = Both {
            timings: None,
            day_timings: None,
        }
        .render()
        .unwrap();
        assert_eq!(nothing.trim(), "|");
    }
}
