//! Every page in both languages (issue 17): in Chinese no English word is left in what a reader
//! sees (the words of [`ENGLISH`]), error pages included; the hover text keeps the API's state
//! names. Identifiers (task ids, agents, queues, users), commands and logs are not words.

use axum::http::StatusCode;

use crate::testing::{DAY, Fake, get_with, post_with, sample, unreachable};

/// English words a Chinese page must not show. Short and common on purpose: every label,
/// state, unit of a count and sentence of the UI is made of them.
const ENGLISH: &[&str] = &[
    "a",
    "ago",
    "agent",
    "agents",
    "alive",
    "all",
    "and",
    "at",
    "back",
    "bad",
    "blocked",
    "by",
    "cannot",
    "code",
    "coordinator",
    "created",
    "day",
    "days",
    "dead",
    "default",
    "delete",
    "error",
    "exit",
    "failed",
    "for",
    "forbidden",
    "found",
    "from",
    "graph",
    "grid",
    "history",
    "in",
    "instance",
    "instances",
    "is",
    "kill",
    "killed",
    "log",
    "lost",
    "marked",
    "message",
    "more",
    "new",
    "next",
    "no",
    "none",
    "not",
    "of",
    "output",
    "overview",
    "page",
    "paused",
    "queued",
    "redo",
    "request",
    "retry",
    "run",
    "running",
    "show",
    "success",
    "task",
    "tasks",
    "the",
    "this",
    "to",
    "tries",
    "try",
    "updated",
    "waiting",
    "waits",
    "with",
    "would",
];

/// Names in the sample that are identifiers, not words.
const IDENTIFIERS: &[&str] = &[
    "extract",
    "transform",
    "load",
    "backfill_marker",
    "report",
    "flaky",
    "stuck",
    "later",
    "agent-1",
    "agent-2",
    "worker-a",
    "worker-b",
    "default",
    "io",
    "alice",
    "bob",
    "dag.yaml",
    "webhook",
    "goflowctl/0.1.0",
    "webui/0.1.0",
    "Europe/Berlin",
];

/// What a reader sees: the text between tags, without scripts, hover texts (attributes),
/// commands (`<code>`, a textarea), logs (`<pre>`) or the SVG's hover titles, and without
/// identifiers.
pub fn visible_text(html: &str) -> String {
    let mut text = html.to_string();
    for (open, close) in [
        ("<script", "</script>"),
        ("<code", "</code>"),
        ("<pre", "</pre>"),
        ("<title>", "</title>"),
        ("<datalist", "</datalist>"),
        ("<textarea", "</textarea>"),
    ] {
        while let Some(start) = text.find(open) {
            let end = text[start..]
                .find(close)
                .map_or(text.len(), |e| start + e + close.len());
            text.replace_range(start..end, " ");
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    let mut words: Vec<&str> = out.split_whitespace().collect();
    words.retain(|w| !IDENTIFIERS.iter().any(|id| w.contains(id)));
    words.join(" ")
}

/// The English words of [`ENGLISH`] in `text`, whole words only.
fn english_words(text: &str) -> Vec<String> {
    // `start_day`, `task_id`: names of fields, one word each.
    text.split(|c: char| !c.is_ascii_alphabetic() && c != '_')
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .filter(|w| ENGLISH.contains(&w.as_str()))
        .collect()
}

/// The sample, with what the coordinator says in every place it can: a blocked wait reason,
/// exit messages, a lost try, commands, an alert, operations with details.
fn talkative() -> Fake {
    let mut fake = sample();
    let load = fake.instances.iter_mut().find(|i| i.task == "load").unwrap();
    load.wait_reason = format!("blocked: waits for report@{DAY} (failed), extract@{DAY} (no instance)");
    load.blocked = true;
    let stuck = fake.instances.iter_mut().find(|i| i.task == "stuck").unwrap();
    stuck.message = "lost 2 times (agent died): agent agent-2 stopped heartbeating".into();
    fake.attempts[0].message = "exit code 1".into();
    fake.attempts[0].command = format!("transform.sh {DAY}");
    fake.attempts[1].command = format!("transform.sh {DAY}");
    for alert in &mut fake.alerts {
        alert.message = "try 1 of 3 failed: exit code 2".into();
    }
    fake.operations[0].detail = "--down 3 instances".into();
    for (id, target, detail) in [
        (
            3,
            "extract",
            "4 fires not run, 2026-03-11 02:00 UTC .. 2026-03-14 02:00 UTC: the coordinator was down; catchup: latest runs only the newest missed fire",
        ),
        (
            4,
            "extract@20260312",
            "fire at 2026-03-12 02:00 UTC not run: the task was paused; catchup: none",
        ),
    ] {
        fake.operations.push(goflow_proto::Operation {
            id,
            actor: "goflow".into(),
            client: "scheduler".into(),
            action: "skip-fire".into(),
            target: target.into(),
            detail: detail.into(),
            ..fake.operations[0].clone()
        });
    }
    let later = fake.instances.iter_mut().find(|i| i.task == "later").unwrap();
    later.wait_reason = "waiting for pool warehouse (2 of 2 slots in use)".into();
    let transform = fake.tasks.iter_mut().find(|t| t.id == "transform").unwrap();
    transform.pool = "warehouse".into();
    transform.max_active = 2;
    fake.pools = vec![goflow_proto::Pool {
        id: "warehouse".into(),
        slots: 2,
        used: 2,
        waiting: 3,
        ..Default::default()
    }];
    fake
}

const ZH: (&str, &str) = ("accept-language", "zh-CN,zh;q=0.9");

#[tokio::test]
async fn every_page_in_chinese_has_no_english_word() {
    let app = talkative().start().await;
    for page in [
        "/".to_string(),
        format!("/?day={DAY}&state=failed"),
        format!("/graph?day={DAY}"),
        format!("/grid?end={DAY}&days=3"),
        "/tasks".into(),
        "/tasks/transform".into(),
        "/tasks/extract?from=2026-01-01&to=2026-01-30&down=1".into(),
        format!("/instances/transform/{DAY}"),
        format!("/instances/transform/{DAY}?try=1"),
        format!("/instances/report/{DAY}"),
        format!("/instances/load/{DAY}"),
        format!("/instances/stuck/{DAY}"),
        format!("/instances/later/{DAY}"),
        "/instances/extract/20260101".into(),
        "/agents".into(),
        "/history".into(),
        "/alerts".into(),
        "/tasks/new".into(),
        "/tasks/transform/edit".into(),
        "/tasks/transform/diff?from=1&to=2".into(),
        "/tasks/transform/diff?from=2&to=2".into(),
        "/import".into(),
        // Error pages: 404s of the UI and of the coordinator, a 400.
        "/nowhere".into(),
        format!("/instances/nope/{DAY}"),
        format!("/instances/transform/{DAY}?try=9"),
        "/?day=2026-13-01".into(),
    ] {
        let (status, body) = get_with(&app, &page, &[ZH]).await;
        assert!(body.contains("<html lang=\"zh-CN\">"), "{page}: {status}");
        let seen = visible_text(&body);
        let english = english_words(&seen);
        assert!(english.is_empty(), "{page} ({status}) shows {english:?}:\n{seen}");
        if std::env::var_os("GOFLOW_SHOW_TEXT").is_some() {
            println!("{page}: {seen}\n");
        }
    }
}

#[tokio::test]
async fn error_pages_speak_the_readers_language() {
    let app = sample().start().await;
    let (status, body) = get_with(&app, "/nowhere", &[ZH]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body.contains("<h1>未找到</h1>") && body.contains("没有这个页面：/nowhere"),
        "{body}"
    );
    let (_, body) = get_with(&app, "/nowhere", &[("accept-language", "en")]).await;
    assert!(body.contains("<h1>Not found</h1>") && body.contains("no page at /nowhere"));
    // A remembered choice counts for error pages too.
    let (_, body) = get_with(&app, "/nowhere", &[("cookie", "goflow_lang=zh")]).await;
    assert!(body.contains("<h1>未找到</h1>"), "{body}");

    // 403: a form without the CSRF token.
    let answer = post_with(
        &app,
        &format!("/instances/report/{DAY}/action"),
        &[("action", "kill")],
        false,
        &[ZH],
    )
    .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(answer.body.contains("<h1>禁止访问</h1>"), "{}", answer.body);
    assert!(
        answer
            .body
            .contains("表单已过期，或并非来自本站：请刷新页面后重试")
    );
    let seen = visible_text(&answer.body);
    assert!(english_words(&seen).is_empty(), "{seen}");
    let answer = post_with(
        &app,
        &format!("/instances/report/{DAY}/action"),
        &[("action", "kill")],
        false,
        &[],
    )
    .await;
    assert!(answer.body.contains("<h1>Forbidden</h1>") && answer.body.contains("this form expired"));

    // 502: no coordinator.
    let (app, url) = unreachable().await;
    let (status, body) = get_with(&app, "/tasks", &[ZH]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.contains(&format!("无法连接位于 {url} 的协调器")), "{body}");
}

#[tokio::test]
async fn states_read_in_chinese_and_keep_their_api_names_in_the_hover_text() {
    let app = talkative().start().await;
    let (_, body) = get_with(&app, &format!("/?day={DAY}"), &[ZH]).await;
    for (name, word) in [
        ("failed", "失败"),
        ("running", "运行中"),
        ("up_for_retry", "等待重试"),
        ("queued", "排队中"),
    ] {
        assert!(
            body.contains(&format!("title=\"{name}\" data-state=\"{name}\">{word}</span>")),
            "{name}: {body}"
        );
    }
    assert!(body.contains("title=\"success (forced)\" data-state=\"success\">强制通过</span>"));
    assert!(
        body.contains("执行器：1 个在线，1 个失联"),
        "full-width colon, measure words"
    );
}

#[tokio::test]
async fn a_pool_wait_and_a_tasks_pool_show_in_both_languages() {
    let app = talkative().start().await;
    let (_, en) = get_with(&app, &format!("/instances/later/{DAY}"), &[]).await;
    assert!(
        en.contains("waiting for pool warehouse (2 of 2 slots in use)"),
        "{en}"
    );
    let (_, zh) = get_with(&app, &format!("/instances/later/{DAY}"), &[ZH]).await;
    assert!(
        zh.contains("等待资源池 warehouse（已占用 2 个槽位，共 2 个）"),
        "{zh}"
    );
    let (_, task) = get_with(&app, "/tasks/transform", &[]).await;
    assert!(task.contains(r#"<dd id="pool">warehouse</dd>"#), "{task}");
    assert!(task.contains(">2</dd>") && task.contains("max_active"), "{task}");
    let (_, task) = get_with(&app, "/tasks/transform", &[ZH]).await;
    assert!(task.contains("资源池"), "{task}");
    let (_, overview) = get_with(&app, &format!("/?day={DAY}"), &[]).await;
    assert!(overview.contains("pool: warehouse 2/2, 3 waiting"), "{overview}");
    let (_, overview) = get_with(&app, &format!("/?day={DAY}"), &[ZH]).await;
    assert!(
        overview.contains("资源池：warehouse 已用 2/2，3 个等待"),
        "{overview}"
    );
}

#[tokio::test]
async fn a_blocked_reason_says_blocked_once_in_either_language() {
    let app = talkative().start().await;
    let page = format!("/instances/load/{DAY}");
    let (_, body) = get_with(&app, &page, &[("accept-language", "en")]).await;
    assert!(
        body.contains(&format!(
            "<span class=\"flag warn\">blocked</span> waits for report@{DAY} (failed), extract@{DAY} (no instance)"
        )),
        "{body}"
    );
    assert!(!visible_text(&body).contains("blocked blocked"));
    let (_, body) = get_with(&app, &page, &[ZH]).await;
    assert!(
        body.contains(&format!(
            "<span class=\"flag warn\">受阻</span> 等待 report@{DAY}（失败）、extract@{DAY}（无实例）"
        )),
        "{body}"
    );
    // The overview's row too.
    let (_, body) = get_with(&app, &format!("/?day={DAY}"), &[ZH]).await;
    assert!(
        !body.contains("受阻</span> 受阻") && !body.contains("blocked: "),
        "{body}"
    );
}

#[tokio::test]
async fn the_instance_page_shows_each_tries_command_and_says_when_a_log_is_empty() {
    let mut fake = talkative();
    fake.logs.insert((crate::testing::TRANSFORM_ID, 1), vec![]);
    fake.attempts[0].log_bytes = 0;
    let app = fake.start().await;
    let (_, body) = get_with(
        &app,
        &format!("/instances/transform/{DAY}?try=1"),
        &[("accept-language", "en")],
    )
    .await;
    assert!(
        body.contains(&format!("<code id=\"command-1\">transform.sh {DAY}</code>")),
        "{body}"
    );
    assert!(body.contains(&format!("<code id=\"command-2\">transform.sh {DAY}</code>")));
    assert!(
        body.contains("<p class=\"empty log-empty\" id=\"log-empty\">(no output)</p>"),
        "{body}"
    );
    assert!(!body.contains("id=\"log\""), "no empty black box");
    let (_, body) = get_with(&app, &format!("/instances/transform/{DAY}?try=1"), &[ZH]).await;
    assert!(
        body.contains(">（无输出）</p>") && body.contains("<h2>第 1 次运行的日志</h2>"),
        "{body}"
    );
    assert!(
        body.contains("第 2 次（最多 3 次）") && body.contains(">退出码 1<"),
        "{body}"
    );
    // A running try with no output yet keeps its (empty) log box to fill, labelled.
    let mut fake = talkative();
    fake.logs.insert((crate::testing::TRANSFORM_ID, 2), vec![]);
    fake.attempts[1].log_bytes = 0;
    let (_, body) = crate::testing::get(&fake.start().await, &format!("/instances/transform/{DAY}")).await;
    assert!(
        body.contains("data-empty=\"(no output)\"") && body.contains("data-live-url="),
        "{body}"
    );
}

#[tokio::test]
async fn counts_agree_in_english_and_use_measure_words_in_chinese() {
    let app = talkative().start().await;
    let (_, body) = get_with(
        &app,
        &format!("/grid?end={DAY}&days=1"),
        &[("accept-language", "en")],
    )
    .await;
    assert!(body.contains("(2 tasks × 1 day)"), "{body}");
    let (_, body) = get_with(&app, &format!("/grid?end={DAY}&days=14"), &[ZH]).await;
    assert!(body.contains("(2 个任务 × 14 天)"), "{body}");
    let (_, body) = get_with(&app, "/agents", &[ZH]).await;
    assert!(
        body.contains("秒前") || body.contains("天前"),
        "relative times in Chinese: {body}"
    );
    let (_, body) = get_with(&app, "/history", &[ZH]).await;
    assert!(
        body.contains("含下游 3 个实例") && body.contains("title=\"run\" data-action=\"run\">运行<"),
        "{body}"
    );
}
