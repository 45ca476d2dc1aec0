//! The coordinator's sentences in the page's language: wait reasons, why a try ended, the
//! results of actions, refusals and import errors. The API carries them as English text, so
//! this recognises their shapes (one table of patterns, `{}` for each variable part) and says
//! them in Chinese; a sentence of a shape it does not know stays as the coordinator wrote it.
//! In English it only makes the numbers agree ("1 instances" becomes "1 instance").

use crate::i18n::{Lang, state_label};

/// `text` (a sentence from the coordinator) in `lang`.
pub fn say(lang: Lang, text: &str) -> String {
    match lang {
        Lang::En => singular(text),
        Lang::Zh => zh(text),
    }
}

/// A waiting instance's reason. With `blocked` the page shows a "blocked" flag beside it, so
/// the reason's own "blocked: " is left out (it would say the same thing twice).
pub fn wait_reason(lang: Lang, text: &str, blocked: bool) -> String {
    let text = if blocked {
        text.replacen("blocked: ", "", 1)
    } else {
        text.to_string()
    };
    say(lang, &text)
}

/// "1 instances" -> "1 instance", wherever a count of one stands before a plural noun.
pub fn singular(text: &str) -> String {
    const NOUNS: [(&str, &str); 5] = [
        ("instances", "instance"),
        ("tasks", "task"),
        ("days", "day"),
        ("tries", "try"),
        ("times", "time"),
    ];
    let mut out = text.to_string();
    for (plural, one) in NOUNS {
        let wrong = format!("1 {plural}");
        let mut from = 0;
        while let Some(found) = out[from..].find(&wrong) {
            let at = from + found;
            let before_ok = at == 0 || !is_word_byte(out.as_bytes()[at - 1]);
            let end = at + wrong.len();
            let after_ok = out.as_bytes().get(end).is_none_or(|b| !is_word_byte(*b));
            if before_ok && after_ok {
                out.replace_range(at..end, &format!("1 {one}"));
            }
            from = at + 1;
        }
    }
    out
}

/// A byte that continues a word, an id or a number.
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// One shape: its English pattern and how to say it in Chinese from its parts.
type Rule = (&'static str, fn(&[&str]) -> String);

/// More specific shapes first: the first that matches wins.
const RULES: &[Rule] = &[
    // Wait reasons (coordinator/src/engine/waits.rs).
    ("task is paused", |_| "任务已暂停".into()),
    ("task is paused; {}", |p| format!("任务已暂停；{}", zh(p[0]))),
    ("blocked: waits for {}", |p| {
        format!("受阻：等待 {}", upstreams(p[0]))
    }),
    // Why an instance's finish cannot be predicted (core/src/eta.rs, engine/eta.rs).
    ("waits for {}, which has no instance", |p| {
        format!("等待 {}（该实例不存在）", p[0])
    }),
    ("waits for {}, which cannot be predicted", |p| {
        format!("等待 {}（其完成时间无法预计）", p[0])
    }),
    ("task {} is paused", |p| format!("任务 {} 已暂停", p[0])),
    ("no live agent serves queue {}", |p| {
        format!("没有在线执行器服务队列 {}", p[0])
    }),
    ("no slot will free up for it (queue {}, pool {})", |p| {
        format!("不会有空闲槽位（队列 {}，资源池 {}）", p[0], p[1])
    }),
    ("no slot will free up for it (queue {})", |p| {
        format!("不会有空闲槽位（队列 {}）", p[0])
    }),
    ("waits for {}", |p| format!("等待 {}", upstreams(p[0]))),
    // Held back by a pool or max_active (core/src/pools.rs).
    ("waiting for pool {} ({} of {} slots in use)", |p| {
        format!("等待资源池 {}（已占用 {} 个槽位，共 {} 个）", p[0], p[1], p[2])
    }),
    ("waiting for pool {}, which is not defined", |p| {
        format!("等待资源池 {}（该资源池未定义）", p[0])
    }),
    (
        "waiting for max_active of task {} ({} of {} tries running)",
        |p| {
            format!(
                "等待任务 {} 的并发上限 max_active（{} 个尝试运行中，上限 {}）",
                p[0], p[1], p[2]
            )
        },
    ),
    // Why a try or an instance ended (agent/src/runner, coordinator/src/engine).
    ("exit code {}", |p| format!("退出码 {}", p[0])),
    ("timed out after {}", |p| format!("运行 {} 后超时", p[0])),
    ("killed on request", |_| "应请求终止".into()),
    ("killed by signal {} ({})", |p| {
        format!("被信号 {}（{}）终止", p[0], p[1])
    }),
    ("killed by {}", |p| format!("被 {} 终止", p[0])),
    ("marked success by {}", |p| format!("由 {} 强制通过", p[0])),
    ("ended without an exit code ({})", |p| {
        format!("进程结束，但没有退出码（{}）", p[0])
    }),
    ("could not start `{}`: {}", |p| {
        format!("无法启动 `{}`：{}", p[0], p[1])
    }),
    ("could not wait for the process: {}", |p| {
        format!("无法等待进程：{}", p[0])
    }),
    ("try {} lost ({}); dispatched again", |p| {
        format!("第 {} 次运行因执行器失联而中断（{}），已重新派发", p[0], zh(p[1]))
    }),
    ("lost {} times (agent died): {}", |p| {
        format!("执行器失联 {} 次：{}", p[0], zh(p[1]))
    }),
    ("lost {} time (agent died): {}", |p| {
        format!("执行器失联 {} 次：{}", p[0], zh(p[1]))
    }),
    ("agent {} registered again without it (restarted)", |p| {
        format!("执行器 {} 重启后重新注册，已不再运行它", p[0])
    }),
    ("agent {} no longer runs it; its report was lost", |p| {
        format!("执行器 {} 已不再运行它，结果报告丢失", p[0])
    }),
    ("agent {} stopped heartbeating", |p| {
        format!("执行器 {} 停止了心跳", p[0])
    }),
    // Alerts (coordinator/src/engine/alerts.rs).
    ("try {} of {} failed: {}", |p| {
        format!("第 {} 次运行（共 {} 次）失败：{}", p[0], p[1], zh(p[2]))
    }),
    ("try {} of {} failed", |p| {
        format!("第 {} 次运行（共 {} 次）失败", p[0], p[1])
    }),
    ("try {} of {} timed out: {}", |p| {
        format!("第 {} 次运行（共 {} 次）超时：{}", p[0], p[1], zh(p[2]))
    }),
    ("try {} of {} timed out", |p| {
        format!("第 {} 次运行（共 {} 次）超时", p[0], p[1])
    }),
    ("try {} of {}: {}", |p| {
        format!("第 {} 次运行（共 {} 次）：{}", p[0], p[1], zh(p[2]))
    }),
    ("try {} has run for {} (expected: {})", |p| {
        format!("第 {} 次运行已运行 {}（预期：{}）", p[0], p[1], p[2])
    }),
    ("{} of {} was due by {} ({}); it is {}", |p| {
        format!(
            "{} 在 {} 的数据应于 {}（{}）前完成；当前为“{}”",
            p[0],
            p[1],
            p[2],
            p[3],
            state(p[4])
        )
    }),
    // Results of actions (coordinator/src/grpc/control.rs).
    ("{} killed (was {})", |p| {
        format!("{} 已终止（原为{}）", p[0], state(p[1]))
    }),
    ("{} to run for {}", |p| {
        format!("{} 有 {}待运行", p[1], instances(p[0]))
    }),
    ("{} to run", |p| format!("{}待运行", instances(p[0]))),
    ("{} marked success", |p| format!("{}已强制通过", instances(p[0]))),
    ("{} killed", |p| format!("{}已终止", instances(p[0]))),
    ("{} deleted with its tries and logs", |p| {
        format!("{} 已删除，连同其运行记录和日志", p[0])
    }),
    ("deleted {} (their instances stay readable)", |p| {
        format!("已删除 {}（其实例仍可查看）", p[0])
    }),
    ("deleted {}", |p| format!("已删除 {}", p[0])),
    ("would run {} ({} new, {} existing)", |p| {
        format!("将运行 {}（{} 个新建，{} 个已有）", instances(p[0]), p[1], p[2])
    }),
    // Refusals (coordinator/src/engine, coordinator/src/auth.rs).
    (
        "{} is {}: kill it first (goflowctl kill -j {} -d {}); nothing was changed",
        |p| {
            format!(
                "{} 处于“{}”状态：请先终止它（goflowctl kill -j {} -d {}）；未做任何更改",
                p[0],
                state(p[1]),
                p[2],
                p[3]
            )
        },
    ),
    ("{} is {}: kill it first", |p| {
        format!("{} 处于“{}”状态：请先终止它", p[0], state(p[1]))
    }),
    (
        "{} is {}: only a waiting, queued, running or up_for_retry instance can be killed",
        |p| {
            format!(
                "{} 处于“{}”状态：只有等待中、排队中、运行中或等待重试的实例可以终止",
                p[0],
                state(p[1])
            )
        },
    ),
    ("{} is {}; this needs the {} role", |p| {
        format!("{} 的角色是 {}；此操作需要 {} 角色", p[0], role(p[1]), role(p[2]))
    }),
    ("cannot delete while {} is not finished: kill it first", |p| {
        format!("{} 尚未结束，不能删除：请先终止它", p[0])
    }),
    (
        "cannot delete: {} (delete those tasks in the same request, or change them first)",
        |p| {
            format!(
                "不能删除：{}（请在同一请求中一并删除这些任务，或先修改它们）",
                depends(p[0])
            )
        },
    ),
    ("cannot delete: {}", |p| format!("不能删除：{}", zh(p[0]))),
    ("{} changed meanwhile; nothing was changed, try again", |p| {
        format!("{} 在此期间已变化；未做任何更改，请重试", p[0])
    }),
    ("{} changed meanwhile; try again", |p| {
        format!("{} 在此期间已变化，请重试", p[0])
    }),
    (
        "{} was killed and its processes are still stopping; try again in a few seconds",
        |p| format!("{} 已被终止，其进程仍在停止中；请几秒后重试", p[0]),
    ),
    (
        "nothing to kill: no unfinished instance of {} (or downstream) in {}..{}",
        |p| {
            format!(
                "没有可终止的实例：{}..{} 中 {}（及其下游）没有未结束的实例",
                p[1], p[2], p[0]
            )
        },
    ),
    ("task {} has no instance in {}..{}: it starts on {}", |p| {
        format!(
            "任务 {} 在 {}..{} 中没有实例：它从 {} 开始",
            p[0], p[1], p[2], p[3]
        )
    }),
    ("no scheduled root task has an instance on {}", |p| {
        format!("{} 没有任何定时根任务的实例", p[0])
    }),
    ("--from {} is after --to {}", |p| {
        format!("起始日期 {} 晚于结束日期 {}", p[0], p[1])
    }),
    ("a range of {} days is more than 10 years", |p| {
        format!("{} 天的范围超过了 10 年", p[0])
    }),
    ("no instance {}", |p| format!("没有实例 {}", p[0])),
    ("unknown task {}", |p| format!("未知任务 {}", p[0])),
    ("unknown state {}", |p| format!("未知状态 {}", p[0])),
    ("the coordinator could not be reached: {}", |p| {
        format!("无法连接协调器：{}", p[0])
    }),
    ("too many failed logins for {}: try again in {} s", |p| {
        format!("{} 登录失败次数过多：请 {} 秒后重试", p[0], p[1])
    }),
    ("this coordinator has no login", |_| "此协调器没有登录功能".into()),
    // The web UI's own refusals (error.rs, context.rs, pages/).
    ("no page at {}", |p| format!("没有这个页面：{}", p[0])),
    (
        "this form expired or did not come from this site: reload the page and try again",
        |_| "表单已过期，或并非来自本站：请刷新页面后重试".into(),
    ),
    ("the form is too large", |_| "表单太大".into()),
    ("{} is not a task id", |p| format!("{} 不是任务 ID", p[0])),
    ("{} has no try {}", |p| format!("{} 没有第 {} 次运行", p[0], p[1])),
    ("{} is not a try number", |p| {
        format!("{} 不是有效的运行次数", p[0])
    }),
    ("{} is not a number from 1 to {}", |p| {
        format!("{} 不是 1 到 {} 之间的数", p[0], p[1])
    }),
    ("unknown action {}", |p| format!("未知操作 {}", p[0])),
    (
        "invalid date {}: expected yyyymmdd or yyyy-mm-dd (no such day in the calendar)",
        |p| format!("日期 {} 无效：日历上没有这一天", p[0]),
    ),
    (
        "invalid date {}: expected yyyymmdd or yyyy-mm-dd (year before 1000)",
        |p| format!("日期 {} 无效：年份早于 1000", p[0]),
    ),
    ("invalid date {}: expected yyyymmdd or yyyy-mm-dd", |p| {
        format!("日期 {} 无效：应为 yyyymmdd 或 yyyy-mm-dd", p[0])
    }),
    // Import and edit errors (core/src/dagfile.rs, core/src/dag.rs).
    ("imported document: {}", |p| format!("导入的文档：{}", zh(p[0]))),
    ("edit form: {}", |p| format!("编辑表单：{}", zh(p[0]))),
    ("task {} (tasks[{}], line {}): {}", |p| {
        format!("任务 {}（tasks[{}]，第 {} 行）：{}", p[0], p[1], p[2], zh(p[3]))
    }),
    ("task {} (tasks[{}]): {}", |p| {
        format!("任务 {}（tasks[{}]）：{}", p[0], p[1], zh(p[2]))
    }),
    ("task {} depends on unknown task {}", |p| {
        format!("任务 {} 依赖未知任务 {}", p[0], p[1])
    }),
    ("dependency cycle: {}", |p| format!("依赖成环：{}", p[0])),
    ("duplicate task id {}: tasks[{}] and tasks[{}]{}", |p| {
        format!(
            "任务 ID {} 重复：tasks[{}] 和 tasks[{}]{}",
            p[0], p[1], p[2], p[3]
        )
    }),
    ("the document is empty (expected a `tasks:` list)", |_| {
        "文档为空（应有 `tasks:` 列表）".into()
    }),
    ("command is empty", |_| "命令为空".into()),
    ("command: {}", |p| format!("命令：{}", p[0])),
    ("schedule: {}", |p| format!("调度：{}", p[0])),
    ("timezone: {}", |p| format!("时区：{}", p[0])),
    ("deadline: {}", |p| format!("截止时间：{}", p[0])),
    ("depends_on: {} is not a valid task id", |p| {
        format!("依赖：{} 不是有效的任务 ID", p[0])
    }),
];

/// In Chinese, or as it came when no shape fits.
fn zh(text: &str) -> String {
    for (pattern, say) in RULES {
        if let Some(parts) = captures(pattern, text) {
            return say(&parts);
        }
    }
    text.to_string()
}

/// The variable parts of `text` if it has the shape of `pattern` (`{}` for each; none empty).
/// Each literal piece is found at its first place after the one before; the last one must end
/// the text.
pub(crate) fn captures<'a>(pattern: &str, text: &'a str) -> Option<Vec<&'a str>> {
    let pieces: Vec<&str> = pattern.split("{}").collect();
    let mut rest = text.strip_prefix(pieces[0])?;
    if pieces.len() == 1 {
        return rest.is_empty().then(Vec::new);
    }
    let mut parts = Vec::with_capacity(pieces.len() - 1);
    for (index, literal) in pieces.iter().enumerate().skip(1) {
        let part = if index + 1 == pieces.len() {
            let part = rest.strip_suffix(literal)?;
            rest = "";
            part
        } else {
            let at = rest.find(literal)?;
            let part = &rest[..at];
            rest = &rest[at + literal.len()..];
            part
        };
        if part.is_empty() {
            return None;
        }
        parts.push(part);
    }
    Some(parts)
}

/// `a@20260110 (failed), b@20260110 (waiting behind a failed upstream)`, each upstream with
/// its state in Chinese. Commas inside the parentheses do not split.
fn upstreams(list: &str) -> String {
    let mut items = vec![];
    let (mut depth, mut start) = (0i32, 0);
    for (at, c) in list.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&list[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    items.push(&list[start..]);
    let mut said: Vec<String> = vec![];
    for item in items {
        let item = item.trim();
        // `a@20260109, which has no instance (before b's first day? set its start_day)`: one
        // upstream, written with a comma.
        if let Some(p) = captures(
            "which has no instance (before {}'s first day? set its start_day)",
            item,
        ) && let Some(upstream) = said.last_mut()
        {
            upstream.push_str(&format!(
                "（无实例：早于 {} 的第一天？请设置它的 start_day）",
                p[0]
            ));
            continue;
        }
        said.push(match item.strip_suffix(')').and_then(|i| i.split_once(" (")) {
            Some((key, why)) => format!("{key}（{}）", upstream_state(why)),
            None => item.to_string(),
        });
    }
    said.join("、")
}

fn upstream_state(why: &str) -> String {
    match why {
        "waiting behind a failed upstream" => "在失败的上游之后等待".into(),
        "no instance" => "无实例".into(),
        _ if state_label(Lang::Zh, why) != why => state(why),
        _ => zh(why),
    }
}

/// `3 instances`, `1 instance` -> `3 个实例`; anything else as a sentence.
fn instances(count: &str) -> String {
    match count.split_once(' ') {
        Some((n, "instances" | "instance")) if n.bytes().all(|b| b.is_ascii_digit()) => format!("{n} 个实例"),
        _ => zh(count),
    }
}

fn state(name: &str) -> String {
    state_label(Lang::Zh, name).to_string()
}

fn role(name: &str) -> String {
    match name {
        "viewer" => "查看者".into(),
        "operator" => "操作员".into(),
        "editor" => "编辑者".into(),
        "admin" => "管理员".into(),
        other => other.into(),
    }
}

/// `b depends on a, c depends on a`.
fn depends(list: &str) -> String {
    list.split(", ")
        .map(|item| match captures("{} depends on {}", item) {
            Some(p) => format!("{} 依赖 {}", p[0], p[1]),
            None => zh(item),
        })
        .collect::<Vec<_>>()
        .join("，")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_match_whole_sentences_only() {
        assert_eq!(captures("exit code {}", "exit code 3"), Some(vec!["3"]));
        assert_eq!(captures("exit code {}", "exit code "), None);
        assert_eq!(captures("task is paused", "task is paused; x"), None);
        assert_eq!(
            captures("{} is {}: kill it first", "a@20260110 is running: kill it first"),
            Some(vec!["a@20260110", "running"])
        );
    }

    #[test]
    fn why_a_finish_cannot_be_predicted_reads_in_chinese() {
        assert_eq!(
            zh("waits for load@20261205, which has no instance"),
            "等待 load@20261205（该实例不存在）"
        );
        assert_eq!(zh("no live agent serves queue gpu"), "没有在线执行器服务队列 gpu");
        assert_eq!(
            zh("no slot will free up for it (queue default, pool db)"),
            "不会有空闲槽位（队列 default，资源池 db）"
        );
    }

    #[test]
    fn pool_waits_read_in_chinese() {
        assert_eq!(
            wait_reason(
                Lang::Zh,
                "waiting for pool warehouse (3 of 3 slots in use)",
                false
            ),
            "等待资源池 warehouse（已占用 3 个槽位，共 3 个）"
        );
        assert_eq!(
            wait_reason(Lang::Zh, "waiting for pool gone, which is not defined", false),
            "等待资源池 gone（该资源池未定义）"
        );
        assert_eq!(
            wait_reason(
                Lang::Zh,
                "waiting for max_active of task load (2 of 2 tries running)",
                false
            ),
            "等待任务 load 的并发上限 max_active（2 个尝试运行中，上限 2）"
        );
        assert_eq!(
            wait_reason(
                Lang::En,
                "waiting for max_active of task load (1 of 1 tries running)",
                false
            ),
            "waiting for max_active of task load (1 of 1 try running)"
        );
    }

    #[test]
    fn wait_reasons_read_in_chinese_without_saying_blocked_twice() {
        let reason =
            "blocked: waits for fail@20260110 (failed), mid@20260110 (waiting behind a failed upstream)";
        assert_eq!(
            wait_reason(Lang::Zh, reason, true),
            "等待 fail@20260110（失败）、mid@20260110（在失败的上游之后等待）"
        );
        assert_eq!(
            wait_reason(Lang::En, reason, true),
            "waits for fail@20260110 (failed), mid@20260110 (waiting behind a failed upstream)"
        );
        assert_eq!(
            wait_reason(
                Lang::Zh,
                "task is paused; waits for a@20260109 (no instance)",
                false
            ),
            "任务已暂停；等待 a@20260109（无实例）"
        );
        assert_eq!(
            wait_reason(
                Lang::Zh,
                "waits for a@20260109, which has no instance (before b's first day? set its start_day), c@20260110 (running)",
                false
            ),
            "等待 a@20260109（无实例：早于 b 的第一天？请设置它的 start_day）、c@20260110（运行中）"
        );
        // A reason of a shape not known yet stays readable, untouched.
        assert_eq!(say(Lang::Zh, "something new"), "something new");
    }

    #[test]
    fn exit_messages_and_results_read_in_chinese() {
        for (english, chinese) in [
            ("exit code 3", "退出码 3"),
            ("timed out after 10s", "运行 10s 后超时"),
            ("killed by signal 9 (SIGKILL)", "被信号 9（SIGKILL）终止"),
            ("killed by alice", "被 alice 终止"),
            ("marked success by web", "由 web 强制通过"),
            (
                "lost 2 times (agent died): agent a1 stopped heartbeating",
                "执行器失联 2 次：执行器 a1 停止了心跳",
            ),
            ("1 instances to run", "1 个实例待运行"),
            ("1 instance to run", "1 个实例待运行"),
            ("12 instances to run for 20260110", "20260110 有 12 个实例待运行"),
            ("2 instances killed", "2 个实例已终止"),
            (
                "would run 1 instance (1 new, 0 existing)",
                "将运行 1 个实例（1 个新建，0 个已有）",
            ),
            ("3 instances marked success", "3 个实例已强制通过"),
            (
                "x@20260110 killed (was running)",
                "x@20260110 已终止（原为运行中）",
            ),
            (
                "r@20260110 is running: kill it first",
                "r@20260110 处于“运行中”状态：请先终止它",
            ),
            (
                "bt_viewer is viewer; this needs the operator role",
                "bt_viewer 的角色是 查看者；此操作需要 操作员 角色",
            ),
            (
                "cannot delete: b depends on a (delete those tasks in the same request, or change them first)",
                "不能删除：b 依赖 a（请在同一请求中一并删除这些任务，或先修改它们）",
            ),
            (
                "imported document: task \"x\" (tasks[0], line 2): command is empty",
                "导入的文档：任务 \"x\"（tasks[0]，第 2 行）：命令为空",
            ),
        ] {
            assert_eq!(say(Lang::Zh, english), chinese, "{english}");
        }
    }

    #[test]
    fn english_counts_agree() {
        assert_eq!(singular("1 instances to run"), "1 instance to run");
        assert_eq!(singular("11 instances to run"), "11 instances to run");
        assert_eq!(singular("21 instances, 1 tasks"), "21 instances, 1 task");
        assert_eq!(singular("lost 1 times"), "lost 1 time");
        assert_eq!(singular("task_1 instances"), "task_1 instances");
    }
}
