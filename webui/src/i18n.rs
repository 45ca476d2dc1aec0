//! Chinese and English: every label of the UI, as one struct per language, so a template that
//! names a label the other language lacks does not compile.
//!
//! A state reads in the page's language; its name as the API spells it (DESIGN.md: one
//! vocabulary for states, in the API, goflowctl and the UI) stays in the hover text of a
//! Chinese page, so it can still be searched for.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

impl Lang {
    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "en" => Some(Self::En),
            "zh" => Some(Self::Zh),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Zh => "zh-CN",
        }
    }

    /// The other language, for the switch in the header.
    pub fn other(self) -> Self {
        match self {
            Self::En => Self::Zh,
            Self::Zh => Self::En,
        }
    }

    /// The short name the switch posts (`en`, `zh`).
    pub fn key(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Zh => "zh",
        }
    }

    pub fn texts(self) -> &'static Texts {
        match self {
            Self::En => &EN,
            Self::Zh => &ZH,
        }
    }

    /// The first supported language in the header's order of preference (q-values honoured).
    pub fn from_accept_language(header: &str) -> Self {
        let mut choices: Vec<(f32, usize, &str)> = header
            .split(',')
            .enumerate()
            .filter_map(|(index, item)| {
                let mut parts = item.trim().split(';');
                let tag = parts.next()?.trim();
                let q = parts
                    .find_map(|p| p.trim().strip_prefix("q="))
                    .and_then(|q| q.parse::<f32>().ok())
                    .unwrap_or(1.0);
                (!tag.is_empty()).then_some((q, index, tag))
            })
            .collect();
        choices.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, _, tag) in choices {
            let primary = tag.split('-').next().unwrap_or("").to_ascii_lowercase();
            match primary.as_str() {
                "zh" => return Self::Zh,
                "en" => return Self::En,
                _ => {}
            }
        }
        Self::En
    }
}

/// Hover text for a state name, in the page's language.
pub fn state_meaning(lang: Lang, state: &str) -> &'static str {
    let (en, zh) = match state {
        "waiting" => ("waiting for its dependencies", "等待依赖"),
        "queued" => ("queued for an agent", "排队中"),
        "running" => ("running", "运行中"),
        "up_for_retry" => ("failed, will be retried", "等待重试"),
        "success" => ("succeeded", "成功"),
        "forced" => ("success (force-passed, not run)", "强制通过（未运行）"),
        "failed" => ("failed", "失败"),
        "killed" => ("killed", "已终止"),
        "timed_out" => ("timed out", "超时"),
        "lost" => ("lost with its agent", "执行器失联"),
        "killing" => ("being stopped", "正在终止"),
        "none" => ("no instance that day", "当天无实例"),
        _ => ("", ""),
    };
    match lang {
        Lang::En => en,
        Lang::Zh => zh,
    }
}

/// A state as a page shows it: the API's name in English, its Chinese word in Chinese.
pub fn state_label(lang: Lang, state: &str) -> &str {
    if lang == Lang::En {
        return state;
    }
    match state {
        "waiting" => "等待中",
        "queued" => "排队中",
        "running" => "运行中",
        "up_for_retry" => "等待重试",
        "success" => "成功",
        "forced" => "强制通过",
        "failed" => "失败",
        "killed" => "已终止",
        "timed_out" => "超时",
        "lost" => "执行器失联",
        "killing" => "正在终止",
        "none" => "无实例",
        other => other,
    }
}

/// A noun to count: English singular and plural, Chinese with its measure word.
#[derive(Debug, Clone, Copy)]
pub struct Noun {
    pub one: &'static str,
    pub many: &'static str,
    pub zh: &'static str,
}

pub const TASKS: Noun = Noun {
    one: "task",
    many: "tasks",
    zh: "个任务",
};
pub const DAYS: Noun = Noun {
    one: "day",
    many: "days",
    zh: "天",
};
pub const INSTANCES: Noun = Noun {
    one: "instance",
    many: "instances",
    zh: "个实例",
};
pub const NEW: Noun = Noun {
    one: "new",
    many: "new",
    zh: "个新建",
};

/// `1 task`, `10 tasks`, `10 个任务`.
pub fn count(lang: Lang, n: usize, noun: Noun) -> String {
    match lang {
        Lang::En if n == 1 => format!("1 {}", noun.one),
        Lang::En => format!("{n} {}", noun.many),
        Lang::Zh => format!("{n} {}", noun.zh),
    }
}

/// Every label of the UI.
#[derive(Debug)]
pub struct Texts {
    pub switch_to: &'static str,
    // navigation
    pub overview: &'static str,
    pub graph: &'static str,
    pub grid: &'static str,
    pub tasks: &'static str,
    pub agents: &'static str,
    pub history: &'static str,
    pub new_task: &'static str,
    // shared
    pub data_date: &'static str,
    pub show: &'static str,
    pub latest_day: &'static str,
    pub the_day_before: &'static str,
    pub the_day_after: &'static str,
    pub times_utc: &'static str,
    pub all: &'static str,
    pub task: &'static str,
    pub state: &'static str,
    pub try_: &'static str,
    pub started: &'static str,
    pub finished: &'static str,
    pub duration: &'static str,
    pub exit: &'static str,
    pub info: &'static str,
    pub blocked: &'static str,
    pub live: &'static str,
    pub no_instances: &'static str,
    pub only_first: &'static str,
    pub cancel: &'static str,
    // overview
    pub failed_now: &'static str,
    pub running_now: &'static str,
    pub waiting_now: &'static str,
    pub all_instances: &'static str,
    pub open_graph: &'static str,
    pub agents_health: &'static str,
    pub alive: &'static str,
    pub dead: &'static str,
    pub draining: &'static str,
    // instance
    pub agent: &'static str,
    pub queue: &'static str,
    pub priority: &'static str,
    pub created: &'static str,
    pub queued: &'static str,
    pub next_try: &'static str,
    pub waiting_for: &'static str,
    pub marked_by: &'static str,
    pub message: &'static str,
    pub exit_code: &'static str,
    pub tries: &'static str,
    pub ran: &'static str,
    pub no_tries: &'static str,
    pub log_of_try: &'static str,
    /// After the try's number: `第 2 次运行的日志`.
    pub log_of_try_after: &'static str,
    pub no_output: &'static str,
    pub colon: &'static str,
    pub log: &'static str,
    pub jump_to_end: &'static str,
    pub download: &'static str,
    pub search_log: &'static str,
    pub log_cut: &'static str,
    pub log_live: &'static str,
    pub actions: &'static str,
    pub force_run: &'static str,
    pub redo: &'static str,
    pub redo_down: &'static str,
    pub redo_up: &'static str,
    pub mark_success: &'static str,
    pub kill: &'static str,
    pub delete: &'static str,
    pub force_run_help: &'static str,
    pub redo_help: &'static str,
    pub redo_down_help: &'static str,
    pub redo_up_help: &'static str,
    pub mark_success_help: &'static str,
    pub kill_help: &'static str,
    pub delete_help: &'static str,
    pub confirm_title: &'static str,
    pub confirm_yes: &'static str,
    pub no_instance_yet: &'static str,
    // graph
    pub search: &'static str,
    pub focus_on: &'static str,
    pub hops: &'static str,
    pub whole_graph: &'static str,
    pub no_instance: &'static str,
    pub graph_help: &'static str,
    pub zoom_reset: &'static str,
    // task
    pub definition: &'static str,
    pub command: &'static str,
    pub schedule: &'static str,
    pub timezone: &'static str,
    pub day_offset: &'static str,
    pub retries: &'static str,
    pub retry_delay: &'static str,
    pub timeout: &'static str,
    pub start_day: &'static str,
    pub description: &'static str,
    pub depends_on: &'static str,
    pub next_fire: &'static str,
    pub paused: &'static str,
    pub pause: &'static str,
    pub unpause: &'static str,
    pub run_day: &'static str,
    pub run: &'static str,
    pub backfill: &'static str,
    pub from: &'static str,
    pub to: &'static str,
    pub with_downstream: &'static str,
    pub preview: &'static str,
    pub preview_result: &'static str,
    pub and_more: &'static str,
    pub delete_task: &'static str,
    pub delete_task_help: &'static str,
    pub edit: &'static str,
    pub export_yaml: &'static str,
    pub last_days: &'static str,
    pub neighbourhood: &'static str,
    pub none: &'static str,
    pub default_: &'static str,
    pub no_tasks: &'static str,
    // grid
    pub days: &'static str,
    pub later_days: &'static str,
    pub earlier_days: &'static str,
    // agents
    pub host: &'static str,
    pub queues: &'static str,
    pub slots: &'static str,
    pub running: &'static str,
    pub heartbeat: &'static str,
    pub version: &'static str,
    pub registered: &'static str,
    pub no_agents: &'static str,
    // history
    pub when: &'static str,
    pub who: &'static str,
    pub client: &'static str,
    pub action: &'static str,
    pub target: &'static str,
    pub detail: &'static str,
    pub filter: &'static str,
    pub filter_task: &'static str,
    pub filter_text: &'static str,
    pub no_operations: &'static str,
    // alerts
    pub alerts: &'static str,
    pub alert_kind: &'static str,
    pub alert_channel: &'static str,
    pub alert_delivery: &'static str,
    pub alert_error: &'static str,
    pub no_alerts: &'static str,
    pub expected_duration: &'static str,
    pub expected_duration_help: &'static str,
    pub deadline: &'static str,
    pub deadline_help: &'static str,
    // edit
    pub edit_task: &'static str,
    pub id: &'static str,
    pub save: &'static str,
    pub import_yaml: &'static str,
    pub import: &'static str,
    pub import_help: &'static str,
    pub form_has_errors: &'static str,
    pub depends_on_help: &'static str,
    pub duration_help: &'static str,
    pub schedule_help: &'static str,
    pub retries_help: &'static str,
    // errors
    pub error_back: &'static str,
    pub day_offset_short: &'static str,
    // login
    pub login: &'static str,
    pub login_title: &'static str,
    pub login_help: &'static str,
    pub login_failed: &'static str,
    pub login_unavailable: &'static str,
    pub user_name: &'static str,
    pub password: &'static str,
    pub logout: &'static str,
    pub logged_in_as: &'static str,
    pub role_viewer: &'static str,
    pub role_operator: &'static str,
    pub role_editor: &'static str,
    pub role_admin: &'static str,
}

pub static EN: Texts = Texts {
    switch_to: "中文",
    overview: "Overview",
    graph: "Graph",
    grid: "Grid",
    tasks: "Tasks",
    agents: "Agents",
    history: "History",
    new_task: "New task",
    data_date: "Data date",
    show: "Show",
    latest_day: "latest day with runs",
    the_day_before: "the day before",
    the_day_after: "the day after",
    times_utc: "Times are UTC.",
    all: "all",
    task: "task",
    state: "state",
    try_: "try",
    started: "started",
    finished: "finished",
    duration: "duration",
    exit: "exit",
    info: "info",
    blocked: "blocked",
    live: "live",
    no_instances: "No instances for this day.",
    only_first: "Only the first instances of this day are shown.",
    cancel: "Cancel",
    failed_now: "Failed",
    running_now: "Running",
    waiting_now: "Waiting",
    all_instances: "All instances",
    open_graph: "Open the graph of this day",
    agents_health: "Agents",
    alive: "alive",
    dead: "dead",
    draining: "draining: finishing its tries, taking no new ones",
    agent: "agent",
    queue: "queue",
    priority: "priority",
    created: "created",
    queued: "queued",
    next_try: "next try",
    waiting_for: "wait reason",
    marked_by: "marked success by",
    message: "message",
    exit_code: "exit code",
    tries: "Tries",
    ran: "ran",
    no_tries: "No tries yet.",
    log_of_try: "Log of try",
    log_of_try_after: "",
    no_output: "(no output)",
    colon: ": ",
    log: "log",
    jump_to_end: "jump to the end",
    download: "download",
    search_log: "search the log",
    log_cut: "The log is longer; showing its end:",
    log_live: "following the log live",
    actions: "Actions",
    force_run: "force run",
    redo: "redo current",
    redo_down: "redo current and downstream",
    redo_up: "redo with upstream",
    mark_success: "mark success",
    kill: "kill",
    delete: "delete",
    force_run_help: "Run this instance now, without waiting for its dependencies.",
    redo_help: "Run this instance again (it waits for its dependencies).",
    redo_down_help: "Run this instance again, and everything downstream of it.",
    redo_up_help: "Run this instance again, together with everything upstream of it.",
    mark_success_help: "Record this instance as succeeded without running it; its downstream may start.",
    kill_help: "Stop the running try (its whole process group) and record the instance as killed.",
    delete_help: "Remove this instance with its tries and logs (not the task).",
    confirm_title: "Confirm",
    confirm_yes: "Yes, do it",
    no_instance_yet: "This task has no instance on this day yet.",
    search: "search tasks",
    focus_on: "Focus on",
    hops: "hops",
    whole_graph: "whole graph",
    no_instance: "no instance",
    graph_help: "Drag to pan, wheel to zoom, click a task to open its instance.",
    zoom_reset: "fit",
    definition: "Definition",
    command: "command",
    schedule: "schedule",
    timezone: "timezone",
    day_offset: "day offset",
    retries: "retries",
    retry_delay: "retry delay",
    timeout: "timeout",
    start_day: "start day",
    description: "description",
    depends_on: "depends on",
    next_fire: "next fire (UTC)",
    paused: "paused",
    pause: "Pause",
    unpause: "Unpause",
    run_day: "Run one day",
    run: "Run",
    backfill: "Backfill a range",
    from: "from",
    to: "to",
    with_downstream: "with everything downstream",
    preview: "Preview",
    preview_result: "This would run",
    and_more: "and {} more",
    delete_task: "Delete the task",
    delete_task_help: "Removes the definition; its instances and logs stay readable. Refused while other tasks depend on it.",
    edit: "Edit",
    export_yaml: "Export YAML",
    last_days: "Last 30 days",
    neighbourhood: "Upstream and downstream",
    none: "none",
    default_: "default",
    no_tasks: "No tasks yet. Create one, or import a DAG document.",
    days: "days",
    later_days: "later days",
    earlier_days: "earlier days",
    host: "host",
    queues: "queues",
    slots: "slots used",
    running: "running tries",
    heartbeat: "last heartbeat",
    version: "version",
    registered: "registered",
    no_agents: "No agent has registered.",
    when: "when",
    who: "who",
    client: "client",
    action: "action",
    target: "target",
    detail: "detail",
    filter: "Filter",
    filter_task: "task",
    filter_text: "contains",
    no_operations: "No operations recorded.",
    alerts: "Alerts",
    alert_kind: "Kind",
    alert_channel: "Channel",
    alert_delivery: "Delivery",
    alert_error: "Last error",
    no_alerts: "No alerts raised.",
    expected_duration: "expected_duration",
    expected_duration_help: "e.g. 30m: a longer try raises an alert; empty: none",
    deadline: "deadline",
    deadline_help: "HH:MM [timezone] [+days]: the data date D must succeed by then on D+days (default +1); empty: none",
    edit_task: "Edit task",
    id: "id",
    save: "Save",
    import_yaml: "Import YAML",
    import: "Import",
    import_help: "Paste a DAG document (the format of goflowctl apply); all its tasks are created or updated together.",
    form_has_errors: "Nothing was saved:",
    depends_on_help: "one per line: task, or task -1 for its previous day",
    duration_help: "e.g. 30s, 10m, 1h; empty: default",
    schedule_help: "cron, 5 or 6 fields; empty: runs only after its upstreams",
    retries_help: "empty: default",
    error_back: "Back to the overview",
    day_offset_short: "d",
    login: "Log in",
    login_title: "Log in to goflow",
    login_help: "Accounts are created by an administrator on the coordinator's host (goflow user add).",
    login_failed: "Wrong user name or password.",
    login_unavailable: "The coordinator could not check the password:",
    user_name: "User name",
    password: "Password",
    logout: "Log out",
    logged_in_as: "Logged in as",
    role_viewer: "viewer",
    role_operator: "operator",
    role_editor: "editor",
    role_admin: "admin",
};

pub static ZH: Texts = Texts {
    switch_to: "English",
    overview: "概览",
    graph: "依赖图",
    grid: "运行矩阵",
    tasks: "任务",
    agents: "执行器",
    history: "操作历史",
    new_task: "新建任务",
    data_date: "数据日期",
    show: "查看",
    latest_day: "最近有运行的日期",
    the_day_before: "前一天",
    the_day_after: "后一天",
    times_utc: "时间均为 UTC。",
    all: "全部",
    task: "任务",
    state: "状态",
    try_: "尝试",
    started: "开始",
    finished: "结束",
    duration: "耗时",
    exit: "退出码",
    info: "说明",
    blocked: "受阻",
    live: "实时",
    no_instances: "这一天没有实例。",
    only_first: "只显示这一天的前若干个实例。",
    cancel: "取消",
    failed_now: "失败",
    running_now: "运行中",
    waiting_now: "等待中",
    all_instances: "全部实例",
    open_graph: "查看这一天的依赖图",
    agents_health: "执行器",
    alive: "在线",
    dead: "失联",
    draining: "停止中：运行完当前任务，不再接新任务",
    agent: "执行器",
    queue: "队列",
    priority: "优先级",
    created: "创建",
    queued: "入队",
    next_try: "下次重试",
    waiting_for: "等待原因",
    marked_by: "强制通过操作人",
    message: "消息",
    exit_code: "退出码",
    tries: "运行记录",
    ran: "运行命令",
    no_tries: "尚未运行。",
    log_of_try: "第",
    log_of_try_after: "次运行的日志",
    no_output: "（无输出）",
    colon: "：",
    log: "日志",
    jump_to_end: "跳到末尾",
    download: "下载",
    search_log: "搜索日志",
    log_cut: "日志较长，只显示末尾：",
    log_live: "正在实时跟踪日志",
    actions: "操作",
    force_run: "强制运行",
    redo: "重做当前",
    redo_down: "重做当前及下游",
    redo_up: "连同上游重做",
    mark_success: "强制通过",
    kill: "终止",
    delete: "删除",
    force_run_help: "立即运行此实例，不等待依赖。",
    redo_help: "重新运行此实例（等待依赖满足）。",
    redo_down_help: "重新运行此实例及其所有下游。",
    redo_up_help: "连同其所有上游一起重新运行此实例。",
    mark_success_help: "不运行，直接将此实例记为成功；其下游可以开始。",
    kill_help: "终止正在运行的进程（整个进程组），并将实例记为已终止。",
    delete_help: "删除此实例及其运行记录和日志（不删除任务）。",
    confirm_title: "确认",
    confirm_yes: "确定执行",
    no_instance_yet: "此任务在这一天还没有实例。",
    search: "搜索任务",
    focus_on: "聚焦于",
    hops: "层",
    whole_graph: "完整依赖图",
    no_instance: "无实例",
    graph_help: "拖动平移，滚轮缩放，点击任务打开其实例。",
    zoom_reset: "适应窗口",
    definition: "定义",
    command: "命令",
    schedule: "调度",
    timezone: "时区",
    day_offset: "日期偏移",
    retries: "重试次数",
    retry_delay: "重试间隔",
    timeout: "超时",
    start_day: "起始日期",
    description: "描述",
    depends_on: "依赖",
    next_fire: "下次触发（UTC）",
    paused: "已暂停",
    pause: "暂停",
    unpause: "恢复",
    run_day: "运行某一天",
    run: "运行",
    backfill: "补数（日期范围）",
    from: "从",
    to: "到",
    with_downstream: "包括所有下游",
    preview: "预览",
    preview_result: "将会运行",
    and_more: "还有 {} 个",
    delete_task: "删除任务",
    delete_task_help: "删除定义；其实例和日志仍可查看。有其他任务依赖它时会被拒绝。",
    edit: "编辑",
    export_yaml: "导出 YAML",
    last_days: "最近 30 天",
    neighbourhood: "上下游",
    none: "无",
    default_: "默认",
    no_tasks: "还没有任务。新建一个，或导入 DAG 文档。",
    days: "天",
    later_days: "之后的日期",
    earlier_days: "之前的日期",
    host: "主机",
    queues: "队列",
    slots: "已用槽位",
    running: "运行中",
    heartbeat: "最近心跳",
    version: "版本",
    registered: "注册时间",
    no_agents: "还没有执行器注册。",
    when: "时间",
    who: "操作人",
    client: "客户端",
    action: "操作",
    target: "对象",
    detail: "详情",
    filter: "筛选",
    filter_task: "任务",
    filter_text: "包含",
    no_operations: "没有操作记录。",
    alerts: "告警",
    alert_kind: "类型",
    alert_channel: "通道",
    alert_delivery: "发送状态",
    alert_error: "最近错误",
    no_alerts: "没有告警。",
    expected_duration: "预期时长",
    expected_duration_help: "例如 30m：运行更久时告警；留空为不检查",
    deadline: "截止时间",
    deadline_help: "HH:MM [时区] [+天数]：数据日期 D 须在 D+天数（默认 +1）的该时刻前成功；留空为无",
    edit_task: "编辑任务",
    id: "ID",
    save: "保存",
    import_yaml: "导入 YAML",
    import: "导入",
    import_help: "粘贴 DAG 文档（与 goflowctl apply 相同的格式）；其中所有任务一起创建或更新。",
    form_has_errors: "未保存：",
    depends_on_help: "每行一个：任务，或 任务 -1 表示其前一天",
    duration_help: "例如 30s、10m、1h；留空为默认",
    schedule_help: "cron，5 或 6 个字段；留空则只在上游完成后运行",
    retries_help: "留空为默认",
    error_back: "返回概览",
    day_offset_short: " 天",
    login: "登录",
    login_title: "登录 goflow",
    login_help: "账户由管理员在协调器主机上创建（goflow user add）。",
    login_failed: "用户名或密码错误。",
    login_unavailable: "协调器无法校验密码：",
    user_name: "用户名",
    password: "密码",
    logout: "退出登录",
    logged_in_as: "当前用户",
    role_viewer: "查看者",
    role_operator: "操作员",
    role_editor: "编辑者",
    role_admin: "管理员",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_preferred_supported_language() {
        assert_eq!(Lang::from_accept_language("zh-CN,zh;q=0.9,en;q=0.8"), Lang::Zh);
        assert_eq!(Lang::from_accept_language("en-US,en;q=0.9,zh;q=0.8"), Lang::En);
        assert_eq!(Lang::from_accept_language("de-DE,zh-TW;q=0.7,en;q=0.5"), Lang::Zh);
        assert_eq!(Lang::from_accept_language("en;q=0.2, zh;q=0.9"), Lang::Zh);
        assert_eq!(Lang::from_accept_language("fr"), Lang::En);
        assert_eq!(Lang::from_accept_language(""), Lang::En);
    }

    #[test]
    fn mark_success_reads_as_the_seed_named_it() {
        assert_eq!(EN.mark_success, "mark success");
        assert_eq!(ZH.mark_success, "强制通过");
    }
}
