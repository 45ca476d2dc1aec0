//! Explain (issue 19) on the instance page: the root causes of where an instance is, and the
//! way to them, as `goflowctl explain` gives them, in the page's language.

use goflow_proto::{ExplainHop, ExplainInstanceRequest, ExplainInstanceResponse};

use crate::AppState;
use crate::i18n::Lang;
use crate::translate::{self, captures};
use crate::view::Badge;

/// The section's own labels, in both languages.
pub struct ExplainTexts {
    pub heading: &'static str,
    pub root_causes: &'static str,
    pub chain: &'static str,
    pub more: &'static str,
}

const EN: ExplainTexts = ExplainTexts {
    heading: "Why is it here?",
    root_causes: "Root causes",
    chain: "The way there",
    more: "more root causes not shown",
};

const ZH: ExplainTexts = ExplainTexts {
    heading: "为什么处于此状态？",
    root_causes: "根本原因",
    chain: "等待链",
    more: "个根本原因未列出",
};

pub fn texts(lang: Lang) -> &'static ExplainTexts {
    match lang {
        Lang::En => &EN,
        Lang::Zh => &ZH,
    }
}

/// One hop as the page shows it.
pub struct HopView {
    pub task: String,
    pub period: String,
    pub badge: Badge,
    pub reason: String,
}

/// A piece of a reason: text, or a command quoted in backticks (shown as code).
pub struct ReasonPart {
    pub code: bool,
    pub text: String,
}

impl HopView {
    /// The reason cut at its backticks: a command it names (`goflowctl run ...`) is code, to
    /// copy as it is, in either language.
    pub fn reason_parts(&self) -> Vec<ReasonPart> {
        self.reason
            .split('`')
            .enumerate()
            .filter(|(_, text)| !text.is_empty())
            .map(|(i, text)| ReasonPart {
                code: i % 2 == 1,
                text: text.to_string(),
            })
            .collect()
    }
}

/// The section: root causes first, then the instances on the way to them.
pub struct ExplainView {
    pub t: &'static ExplainTexts,
    pub root_causes: Vec<HopView>,
    pub chain: Vec<HopView>,
    pub more: i64,
}

/// Asks the coordinator; None when it cannot say (a coordinator from before explain, or an
/// error: the rest of the page stands without it).
pub async fn fetch(app: &AppState, task: &str, period: &str, lang: Lang) -> Option<ExplainView> {
    let request = ExplainInstanceRequest {
        task: task.to_string(),
        etl_day: period.to_string(),
    };
    match app.client().explain_instance(request).await {
        Ok(answer) => Some(view(&answer.into_inner(), lang)),
        Err(status) => {
            tracing::debug!("explain {task}@{period}: {status}");
            None
        }
    }
}

pub fn view(answer: &ExplainInstanceResponse, lang: Lang) -> ExplainView {
    let hop = |h: &ExplainHop| HopView {
        task: h.task.clone(),
        period: h.period.clone(),
        badge: Badge::new(&h.state, false, lang),
        reason: reason(lang, &h.reason),
    };
    ExplainView {
        t: texts(lang),
        root_causes: answer.root_causes.iter().map(hop).collect(),
        // The instance itself heads the page already.
        chain: answer.chain.iter().skip(1).map(hop).collect(),
        more: answer.more_root_causes,
    }
}

/// A hop's reason (core/src/explain.rs words them) in `lang`.
pub fn reason(lang: Lang, text: &str) -> String {
    if lang == Lang::En {
        return translate::say(lang, text);
    }
    for (pattern, say) in RULES {
        if let Some(parts) = captures(pattern, text) {
            return say(&parts);
        }
    }
    translate::say(lang, text)
}

type Rule = (&'static str, fn(&[&str]) -> String);

fn state(name: &str) -> String {
    crate::i18n::state_label(Lang::Zh, name).to_string()
}

fn zh(text: &str) -> String {
    translate::say(Lang::Zh, text)
}

/// More specific shapes first.
const RULES: &[Rule] = &[
    ("waiting", |_| state("waiting")),
    ("succeeded at {}", |p| format!("于 {} 成功", p[0])),
    ("succeeded", |_| "已成功".into()),
    ("marked success at {}", |p| format!("于 {} 被强制通过", p[0])),
    ("marked success", |_| "已强制通过".into()),
    ("{}: exit code {}, try {} of {}, at {}", |p| {
        format!(
            "{}：退出码 {}，第 {} 次运行（共 {} 次），于 {}",
            state(p[0]),
            p[1],
            p[2],
            p[3],
            p[4]
        )
    }),
    ("{}: try {} of {}, at {}", |p| {
        format!(
            "{}：第 {} 次运行（共 {} 次），于 {}",
            state(p[0]),
            p[1],
            p[2],
            p[3]
        )
    }),
    ("{}: {}, try {} of {}, at {}", |p| {
        format!(
            "{}：{}，第 {} 次运行（共 {} 次），于 {}",
            state(p[0]),
            zh(p[1]),
            p[2],
            p[3],
            p[4]
        )
    }),
    ("running on agent {} since {}, try {} of {}", |p| {
        format!(
            "自 {} 起在执行器 {} 上运行，第 {} 次运行（共 {} 次）",
            p[1], p[0], p[2], p[3]
        )
    }),
    ("running on agent {}, try {} of {}", |p| {
        format!("在执行器 {} 上运行，第 {} 次运行（共 {} 次）", p[0], p[1], p[2])
    }),
    ("queued, waiting for an agent to claim it for {}", |p| {
        format!("排队中，等待执行器领取，已等待 {}", p[0])
    }),
    (
        "queued, and no live agent serves queue {} (no agent is alive)",
        |p| format!("排队中，但没有存活的执行器服务队列 {}（没有存活的执行器）", p[0]),
    ),
    (
        "queued, and no live agent serves queue {} ({} alive, none serving it)",
        |p| {
            let count = p[1].split(' ').next().unwrap_or(p[1]);
            format!(
                "排队中，但没有存活的执行器服务队列 {}（{} 个执行器存活，均不服务此队列）",
                p[0], count
            )
        },
    ),
    ("queued, {}; held by {}", |p| {
        format!(
            "排队中，{}；占用者：{}",
            zh(p[0]),
            p[1].replace(" on agent ", " 于执行器 ")
        )
    }),
    ("queued, {}", |p| format!("排队中，{}", zh(p[0]))),
    ("up_for_retry: try {} of {} due at {}", |p| {
        format!("等待重试：第 {} 次运行（共 {} 次）将于 {} 开始", p[0], p[1], p[2])
    }),
    ("up_for_retry: try {} of {} due now", |p| {
        format!("等待重试：第 {} 次运行（共 {} 次）即将开始", p[0], p[1])
    }),
    ("waits for {} upstreams", |p| format!("等待 {} 个上游", p[0])),
    ("waits for {} upstream", |p| format!("等待 {} 个上游", p[0])),
    ("every upstream is met: about to be queued", |_| {
        "所有上游均已满足：即将排队".into()
    }),
    ("no instance: {} (as an upstream, counts as met)", |p| {
        format!("没有实例：{}（作为上游视为已满足）", p[0])
    }),
    ("no instance yet: the cron schedule of {} creates it at {}", |p| {
        format!("尚无实例：{} 的定时调度将于 {} 创建它", p[0], p[1])
    }),
    ("no instance, and no schedule will create it: `{}` would", |p| {
        format!("没有实例，也没有定时调度会创建它：运行 `{}` 可以创建", p[0])
    }),
    ("no instance: {}", |p| format!("没有实例：{}", p[0])),
    ("not followed further (too many instances)", |_| {
        "未继续追踪（实例过多）".into()
    }),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{DAY, get_with, sample};

    #[tokio::test]
    async fn the_instance_page_explains_in_either_language() {
        let app = sample().start().await;
        let page = format!("/instances/load/{DAY}");
        let (_, body) = get_with(&app, &page, &[("accept-language", "en")]).await;
        let section = &body[body
            .find("id=\"explain\"")
            .unwrap_or_else(|| panic!("no explain section: {body}"))..];
        assert!(section.contains("Why is it here?"), "{section}");
        assert!(
            section.contains(&format!(
                "<a href=\"/instances/transform/{DAY}\">transform@{DAY}</a>"
            )),
            "{section}"
        );
        assert!(
            section.contains("running on agent agent-1 since 00:01, try 2 of 3"),
            "{section}"
        );
        assert!(section.contains("state-running"), "{section}");
        let (_, body) = get_with(&app, &page, &[("accept-language", "zh-CN")]).await;
        assert!(body.contains("为什么处于此状态？"), "{body}");
        assert!(
            body.contains("自 00:01 起在执行器 agent-1 上运行，第 2 次运行（共 3 次）"),
            "{body}"
        );
    }

    #[test]
    fn a_command_in_a_reason_is_code() {
        let hop = HopView {
            task: "a".into(),
            period: "20261205".into(),
            badge: Badge::new("waiting", false, Lang::En),
            reason: "no instance: `goflowctl run -j a -d 20261205` creates it".into(),
        };
        let parts: Vec<(bool, String)> = hop.reason_parts().into_iter().map(|p| (p.code, p.text)).collect();
        assert_eq!(
            parts,
            [
                (false, "no instance: ".to_string()),
                (true, "goflowctl run -j a -d 20261205".to_string()),
                (false, " creates it".to_string()),
            ]
        );
    }

    #[test]
    fn reasons_read_in_chinese_and_stay_in_english() {
        let failed = "failed: exit code 3, try 2 of 2, at 05:12";
        assert_eq!(reason(Lang::En, failed), failed);
        assert_eq!(
            reason(Lang::Zh, failed),
            "失败：退出码 3，第 2 次运行（共 2 次），于 05:12"
        );
        assert_eq!(
            reason(
                Lang::Zh,
                "queued, and no live agent serves queue gpu (2 agents alive, none serving it)"
            ),
            "排队中，但没有存活的执行器服务队列 gpu（2 个执行器存活，均不服务此队列）"
        );
        assert_eq!(
            reason(
                Lang::Zh,
                "queued, waiting for pool warehouse (1 of 1 slots in use); held by 4-1 (load@20261205 on agent a1)"
            ),
            "排队中，等待资源池 warehouse（已占用 1 个槽位，共 1 个）；占用者：4-1 (load@20261205 于执行器 a1)"
        );
        assert_eq!(reason(Lang::Zh, "task is paused"), "任务已暂停");
        assert_eq!(reason(Lang::Zh, "waiting"), state("waiting"));
    }
}
