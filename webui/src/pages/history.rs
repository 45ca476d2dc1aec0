//! `/history`: the operations log (who, when, what, from which client), filterable by task,
//! by action and by any text.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::Query;
use goflow_proto::{ListOperationsRequest, Operation};
use serde::Deserialize;

use crate::AppState;
use crate::context::Ctx;
use crate::error::WebError;
use crate::i18n::{Lang, state_label};
use crate::translate;
use crate::view;

/// Operations read per page view; the text filters apply to these.
const LIMIT: i32 = 500;

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    task: Option<String>,
    action: Option<String>,
    q: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/history.html")]
pub struct HistoryPage {
    ctx: Ctx,
    task: String,
    action: String,
    q: String,
    /// Every action listed: its API name and its label.
    actions: Vec<(String, String)>,
    rows: Vec<Row>,
}

struct Row {
    at: String,
    actor: String,
    client: String,
    /// The action as the API names it (the hover text; what the filter matches).
    action: String,
    /// The action in the page's language.
    action_label: String,
    target: String,
    target_href: String,
    detail: String,
}

pub async fn page(app: AppState, ctx: Ctx, Query(params): Query<Params>) -> Result<HistoryPage, WebError> {
    let task = params.task.unwrap_or_default().trim().to_string();
    let action = params.action.unwrap_or_default().trim().to_string();
    let q = params.q.unwrap_or_default().trim().to_string();
    let operations = app
        .client()
        .list_operations(ListOperationsRequest {
            limit: LIMIT,
            task: task.clone(),
        })
        .await
        .map_err(|status| app.fail(status))?
        .into_inner()
        .operations;
    let mut actions: Vec<String> = operations.iter().map(|o| o.action.clone()).collect();
    actions.sort();
    actions.dedup();
    let rows = operations
        .iter()
        .filter(|o| action.is_empty() || o.action == action)
        .filter(|o| matches_text(o, &q))
        .map(|o| Row::new(o, ctx.lang))
        .collect();
    let actions = actions
        .into_iter()
        .map(|a| {
            let label = action_label(ctx.lang, &a).to_string();
            (a, label)
        })
        .collect();
    Ok(HistoryPage {
        ctx,
        task,
        action,
        q,
        actions,
        rows,
    })
}

/// Case-insensitive, in any column.
fn matches_text(o: &Operation, q: &str) -> bool {
    if q.is_empty() {
        return true;
    }
    let q = q.to_lowercase();
    [&o.actor, &o.client, &o.action, &o.target, &o.detail]
        .iter()
        .any(|field| field.to_lowercase().contains(&q))
}

/// An operation's action in the page's language.
fn action_label(lang: Lang, action: &str) -> &str {
    if lang == Lang::En {
        return action;
    }
    match action {
        "apply" => "应用定义",
        "pause" => "暂停",
        "unpause" => "恢复",
        "run" => "运行",
        "do-all-job" => "运行全部",
        "mark-success" => "强制通过",
        "kill" => "终止",
        "delete" => "删除实例",
        "delete_task" => "删除任务",
        "token-create" => "创建令牌",
        "token-revoke" => "吊销令牌",
        "skip-fire" => "跳过触发",
        other => other,
    }
}

/// An operation's detail in Chinese: its flags, counts and lists (the coordinator writes
/// `--down 20260101..20260110`, `created [a] updated [b]`, `3 instances`, a state name).
fn detail_zh(detail: &str) -> String {
    if let Some(skipped) = skipped_fires_zh(detail) {
        return skipped;
    }
    if detail.starts_with("created [") || detail.starts_with("updated [") {
        // An apply also names the versions it made (`a v2`), its file's DAG and what it pruned.
        let detail = detail
            .replacen("created [", "新建 [", 1)
            .replacen("updated [", "更新 [", 1)
            .replacen(" dag ", " 所属流程 ", 1)
            .replacen("pruned [", "清理 [", 1);
        let Some((head, rest)) = detail.split_once("versions [") else {
            return detail;
        };
        let (list, tail) = rest.split_once(']').unwrap_or((rest, ""));
        let versions: Vec<String> = list
            .split(", ")
            .filter(|item| !item.is_empty())
            .map(|item| match item.rsplit_once(" v") {
                Some((id, n)) if n.chars().all(|c| c.is_ascii_digit()) => format!("{id} 版本 {n}"),
                _ => item.to_string(),
            })
            .collect();
        return format!("{head}版本 [{}]{tail}", versions.join(", "));
    }
    let (detail, skipped) = match detail.split_once(" (left alone, live meanwhile: ") {
        Some((head, tail)) => (
            head,
            format!("（跳过正在运行的：{}", tail.trim_end_matches(')')) + "）",
        ),
        None => (detail, String::new()),
    };
    let mut words: Vec<String> = vec![];
    let mut tokens = detail.split_whitespace().peekable();
    while let Some(token) = tokens.next() {
        let word = match token {
            "--down" => "含下游".to_string(),
            "--up" => "含上游".to_string(),
            "--force" => "强制".to_string(),
            n if n.bytes().all(|b| b.is_ascii_digit())
                && matches!(tokens.peek(), Some(&"instances" | &"instance")) =>
            {
                tokens.next();
                format!("{n} 个实例")
            }
            other => state_label(Lang::Zh, other).to_string(),
        };
        words.push(word);
    }
    words.join(" ") + &skipped
}

/// A skipped fire's detail in Chinese (`fire at T not run: REASON`, `N fires not run, A .. B:
/// REASON`); the reasons goflow writes are translated, others kept.
fn skipped_fires_zh(detail: &str) -> Option<String> {
    let (head, reason) = detail.split_once(" not run")?;
    let reason = reason.trim_start_matches(',');
    let (range, reason) = match reason.split_once(": ") {
        Some((range, reason)) => (range.trim(), reason),
        None => ("", reason.trim_start_matches(':').trim()),
    };
    let reason = reason
        .split("; ")
        .map(|part| match part {
            "the coordinator was down" => "调度器停机",
            "the task was paused" => "任务已暂停",
            "the schedule changed while the task was paused" => "任务暂停期间调度已更改",
            "catchup: latest runs only the newest missed fire" => "补跑策略只补最近一次",
            "catchup: none" => "补跑策略为不补跑",
            other => other,
        })
        .collect::<Vec<_>>()
        .join("；");
    let when = |t: &str| t.replace(" UTC", "（UTC）");
    if let Some(time) = head.strip_prefix("fire at ") {
        return Some(format!("{} 的触发未运行：{reason}", when(time)));
    }
    let count = head.strip_suffix(" fires")?;
    let (from, to) = range.split_once(" .. ")?;
    Some(format!(
        "{count} 次触发未运行（{} 至 {}）：{reason}",
        when(from),
        when(to)
    ))
}

impl Row {
    fn new(o: &Operation, lang: Lang) -> Self {
        // Targets are `task@day` for instances, a task id, or a document name.
        let target_href = match o.target.split_once('@') {
            Some((task, day)) if day.len() == 8 => format!("/instances/{task}/{day}"),
            _ if goflow_core::dag::is_valid_task_id(&o.target) => format!("/tasks/{}", o.target),
            _ => String::new(),
        };
        Self {
            at: view::time(o.at),
            actor: o.actor.clone(),
            // `goflowctl/0.1.0 from 127.0.0.1:5000`: the program is a name, "from" a word.
            client: match (lang, o.client.split_once(" from ")) {
                (Lang::Zh, Some((program, address))) => format!("{program}（来自 {address}）"),
                _ => o.client.clone(),
            },
            action: o.action.clone(),
            action_label: action_label(lang, &o.action).to_string(),
            target: o.target.clone(),
            target_href,
            detail: match lang {
                Lang::En => translate::singular(&o.detail),
                Lang::Zh => detail_zh(&o.detail),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{get, sample};

    #[test]
    fn skipped_fires_read_in_chinese() {
        assert_eq!(
            super::detail_zh(
                "4 fires not run, 2026-03-11 02:00 UTC .. 2026-03-14 02:00 UTC: the coordinator was down; catchup: latest runs only the newest missed fire"
            ),
            "4 次触发未运行（2026-03-11 02:00（UTC） 至 2026-03-14 02:00（UTC））：调度器停机；补跑策略只补最近一次"
        );
        assert_eq!(
            super::detail_zh("fire at 2026-03-12 02:00 UTC not run: the task was paused; catchup: none"),
            "2026-03-12 02:00（UTC） 的触发未运行：任务已暂停；补跑策略为不补跑"
        );
        // A reason goflow does not know is kept as it is.
        assert_eq!(
            super::detail_zh("fire at 2026-03-12 02:00 UTC not run: not a cn_workday day"),
            "2026-03-12 02:00（UTC） 的触发未运行：not a cn_workday day"
        );
    }

    #[tokio::test]
    async fn lists_operations_and_filters_them() {
        let app = sample().start().await;
        let (_, body) = get(&app, "/history").await;
        assert!(body.contains("alice") && body.contains("bob"));
        assert!(body.contains(r#"<a href="/instances/transform/20260110">transform@20260110</a>"#));
        let (_, body) = get(&app, "/history?action=apply").await;
        assert!(!body.contains("alice") && body.contains("bob"));
        let (_, body) = get(&app, "/history?q=DOWN").await;
        assert!(body.contains("alice") && !body.contains("<td>bob</td>"));
    }

    #[test]
    fn details_read_in_chinese() {
        use super::detail_zh;
        assert_eq!(
            detail_zh("--down 20260101..20260110"),
            "含下游 20260101..20260110"
        );
        assert_eq!(detail_zh("created [a, b] updated [c]"), "新建 [a, b] 更新 [c]");
        assert_eq!(detail_zh("created [a]"), "新建 [a]");
        assert_eq!(
            detail_zh("created [a, vt] updated [b] versions [a v1, vt v1, b v3] dag shop pruned [c]"),
            "新建 [a, vt] 更新 [b] 版本 [a 版本 1, vt 版本 1, b 版本 3] 所属流程 shop 清理 [c]"
        );
        assert_eq!(
            detail_zh("20260101..20260102 --down 3 instances"),
            "20260101..20260102 含下游 3 个实例"
        );
        assert_eq!(detail_zh("running"), "运行中");
        assert_eq!(
            detail_zh("--force (left alone, live meanwhile: a@20260110)"),
            "强制（跳过正在运行的：a@20260110）"
        );
    }
}
