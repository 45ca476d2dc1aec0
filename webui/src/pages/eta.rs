//! The day's expected finish and critical path (issue 19): the overview's `partials/eta.html`
//! and the critical path highlighted on the graph (class `critical` on its nodes and edges).
//! Labels in both languages are here, beside their only use.

use goflow_core::EtlDay;
use goflow_proto::{PredictDayRequest, PredictDayResponse};

use crate::AppState;
use crate::i18n::Lang;
use crate::view;

/// What the overview shows.
pub struct EtaView {
    pub title: &'static str,
    /// `expected to finish at 2026-12-07 03:10:00 (in 12m 05s)`, or why it cannot be said.
    pub finish: String,
    pub path_label: &'static str,
    /// The critical path's instances: (label, link), first first.
    pub path: Vec<(String, String)>,
    pub graph_link: String,
    pub graph_label: &'static str,
    /// Instances that cannot be predicted, with why (at most 5).
    pub notes: Vec<String>,
}

/// The prediction of `day`; None when the coordinator cannot make one (an older one answers
/// UNIMPLEMENTED, or the call failed): the pages then show nothing of it.
pub async fn fetch(app: &AppState, day: EtlDay) -> Option<PredictDayResponse> {
    let mut client = app.client();
    match client
        .predict_day(PredictDayRequest {
            etl_day: day.compact(),
        })
        .await
    {
        Ok(answer) => Some(answer.into_inner()),
        Err(status) => {
            tracing::debug!("no eta for {day}: {status}");
            None
        }
    }
}

impl EtaView {
    /// None when nothing is left to run that day.
    pub fn new(eta: &PredictDayResponse, lang: Lang) -> Option<Self> {
        if eta.instances.is_empty() {
            return None;
        }
        let finish = if eta.finish_at > 0 {
            let within = view::duration(eta.now, eta.finish_at, eta.now, lang);
            match lang {
                Lang::En => format!(
                    "expected to finish at {} UTC (in {within})",
                    view::time(eta.finish_at)
                ),
                Lang::Zh => format!("预计完成于 {} UTC（还需 {within}）", view::time(eta.finish_at)),
            }
        } else {
            let unknown = eta.instances.iter().filter(|i| i.finish_at == 0).count();
            match lang {
                Lang::En => format!("the finish cannot be predicted: {unknown} instance(s) cannot be"),
                Lang::Zh => format!("无法预计完成时间：{unknown} 个实例无法预计"),
            }
        };
        let path = eta
            .critical_path
            .iter()
            .zip(&eta.critical_path_periods)
            .map(|(task, period)| {
                let finish = eta
                    .instances
                    .iter()
                    .find(|i| &i.task == task && &i.period == period)
                    .map(|i| view::time(i.finish_at))
                    .unwrap_or_default();
                let label = if finish.is_empty() {
                    format!("{task}@{period}")
                } else {
                    format!("{task}@{period} ({})", &finish[11..])
                };
                (label, format!("/instances/{task}/{period}"))
            })
            .collect();
        let notes = eta
            .instances
            .iter()
            .filter(|i| !i.note.is_empty())
            .take(5)
            .map(|i| {
                format!(
                    "{}@{}: {}",
                    i.task,
                    i.period,
                    crate::translate::say(lang, &i.note)
                )
            })
            .collect();
        let (title, path_label, graph_label) = match lang {
            Lang::En => ("When will it be done", "Critical path", "show on the graph"),
            Lang::Zh => ("预计完成", "关键路径", "在依赖图中查看"),
        };
        Some(Self {
            title,
            finish,
            path_label,
            path,
            graph_link: format!("/graph?day={}", eta.etl_day),
            graph_label,
            notes,
        })
    }
}

/// Adds the class `critical` to the graph's nodes of the critical path's tasks and to the
/// edges between consecutive ones. Nodes are drawn in order, so the n-th `data-task` is the
/// layout's node n, which is what an edge's `data-up`/`data-down` count.
pub fn mark_critical(svg: String, path: &[String]) -> String {
    if path.is_empty() {
        return svg;
    }
    let order: Vec<String> = svg
        .split(" data-task=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect();
    let escaped: Vec<String> = path.iter().map(|t| crate::graph::svg::escape(t)).collect();
    let mut svg = svg;
    for pair in escaped.windows(2) {
        let (Some(up), Some(down)) = (
            order.iter().position(|t| *t == pair[0]),
            order.iter().position(|t| *t == pair[1]),
        ) else {
            continue;
        };
        let tail = format!(" data-up=\"{up}\" data-down=\"{down}\"/>");
        if let Some(at) = svg.find(&tail)
            && let Some(start) = svg[..at].rfind("<path class=\"edge")
        {
            let insert = start + "<path class=\"edge".len();
            svg.insert_str(insert, " critical");
        }
    }
    for task in &escaped {
        let needle = format!("\" data-task=\"{task}\" id=\"node-{task}\"");
        svg = svg.replacen(&needle, &format!(" critical{needle}"), 1);
    }
    svg
}

#[cfg(test)]
mod tests {
    use goflow_proto::PredictedInstance;

    use super::*;
    use crate::graph::{EdgeIn, GraphNode, draw};

    fn node(id: &str) -> GraphNode {
        GraphNode {
            id: id.into(),
            href: format!("/instances/{id}/20260110"),
            title: id.into(),
            state_class: "waiting",
            forced: false,
            highlighted: false,
            hours: vec![],
        }
    }

    #[test]
    fn the_critical_path_is_marked_on_the_graph() {
        let nodes = vec![node("a"), node("b"), node("c")];
        let edges = vec![
            EdgeIn {
                upstream: 0,
                downstream: 1,
                day_offset: 0,
            },
            EdgeIn {
                upstream: 0,
                downstream: 2,
                day_offset: 0,
            },
        ];
        let svg = mark_critical(draw(&nodes, &edges), &["a".into(), "c".into()]);
        assert!(
            svg.contains(r#"class="node state-waiting critical" data-task="a""#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"class="node state-waiting critical" data-task="c""#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"class="node state-waiting" data-task="b""#),
            "{svg}"
        );
        assert_eq!(svg.matches("class=\"edge critical\"").count(), 1, "{svg}");
        assert!(svg.contains(r#"data-up="0" data-down="2""#));
        let critical_edge = svg.split("class=\"edge critical\"").nth(1).unwrap();
        assert!(
            critical_edge
                .split("/>")
                .next()
                .unwrap()
                .contains(r#"data-up="0" data-down="2""#)
        );
    }

    #[test]
    fn the_overview_says_when_and_which_chain_in_both_languages() {
        let eta = PredictDayResponse {
            etl_day: "20260110".into(),
            now: 1_700_000_000_000,
            finish_at: 1_700_000_125_000,
            critical_path: vec!["a".into(), "c".into()],
            critical_path_periods: vec!["20260110".into(), "20260110".into()],
            instances: vec![PredictedInstance {
                task: "c".into(),
                period: "20260110".into(),
                finish_at: 1_700_000_125_000,
                ..Default::default()
            }],
            ..Default::default()
        };
        let en = EtaView::new(&eta, Lang::En).unwrap();
        assert_eq!(
            en.finish,
            "expected to finish at 2023-11-14 22:15:25 UTC (in 2m 05s)"
        );
        assert_eq!(
            en.path[1],
            (
                "c@20260110 (22:15:25)".to_string(),
                "/instances/c/20260110".to_string()
            )
        );
        let zh = EtaView::new(&eta, Lang::Zh).unwrap();
        assert!(zh.finish.starts_with("预计完成于"), "{}", zh.finish);
        assert_eq!(zh.path_label, "关键路径");
        let done = PredictDayResponse::default();
        assert!(EtaView::new(&done, Lang::En).is_none());
    }
}
