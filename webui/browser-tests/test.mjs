// Browser tests of the goflow web UI, run by scripts/test-webui against a real standalone.
// Every wait is for a behaviour (a state shown, a log line present), never a fixed duration;
// the generous timeouts only bound how long a broken build may hang.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const WEB = process.env.GOFLOW_WEB;
// A second standalone, started with --auth, with the users bt_editor, bt_operator and bt_viewer.
const AUTH_WEB = process.env.GOFLOW_AUTH_WEB;
const AUTH_PASSWORD = process.env.GOFLOW_AUTH_PASSWORD;
const GRPC = process.env.GOFLOW_GRPC;
const CTL = process.env.GOFLOWCTL;
const SHOTS = process.env.SCREENSHOTS;
const DAG = process.env.DAG;
const FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
const WAIT = 60_000;

function ctl(...args) {
  return execFileSync(CTL, ["--server", GRPC, ...args], { encoding: "utf8" });
}

function yesterday() {
  const d = new Date(Date.now() - 86_400_000);
  return d.toISOString().slice(0, 10).replaceAll("-", "");
}
const DAY = yesterday();
const DASHED = `${DAY.slice(0, 4)}-${DAY.slice(4, 6)}-${DAY.slice(6)}`;

let passed = 0;
async function step(name, body) {
  try {
    await body();
    passed++;
    console.log(`ok - ${name}`);
  } catch (error) {
    console.log(`not ok - ${name}`);
    throw error;
  }
}

/** Polls `check` (reloading `page` first when asked) until it returns true. */
async function eventually(page, check, what, { reload = true } = {}) {
  const deadline = Date.now() + WAIT;
  for (;;) {
    if (reload) await page.reload();
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`never happened: ${what}`);
    await page.waitForTimeout(300);
  }
}

async function stateOf(page) {
  return (await page.textContent("#instance-state")).trim();
}

async function triesOf(page) {
  // A try's row, not the row under it with its command.
  return page.locator("table.grid tbody tr:not(.command)").count();
}

/** Clicks a button that posts a form (accepting its confirmation) and waits for the answer. */
async function submit(page, selector) {
  await Promise.all([page.waitForNavigation(), page.click(selector)]);
  return (await page.textContent("#flash")).trim();
}

async function openContext(options = {}) {
  const profile = mkdtempSync(join(tmpdir(), "goflow-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: FLAGS,
    viewport: { width: 1400, height: 900 },
    locale: "en-US",
    ...options,
  });
  // The profile goes once the browser has exited (closing waits for that).
  const close = context.close.bind(context);
  context.close = async () => {
    await close();
    rmSync(profile, { recursive: true, force: true, maxRetries: 5 });
  };
  return context;
}

const instance = (task) => `${WEB}/instances/${task}/${DAY}`;

// English words a Chinese page must not show (whole words, case aside): the words every label,
// state, count and sentence of the UI is made of.
const ENGLISH = new Set(`a ago agent agents alive all and at back bad blocked by cannot code coordinator
  created day days dead default delete error exit failed for forbidden found from graph grid history in
  instance instances is kill killed log lost marked message more new next no none not of output overview
  page paused queued redo request retry run running show success task tasks the this to tries try updated
  waiting waits with would`.split(/\s+/));

/** What a reader sees: no hover texts (attributes), scripts, commands (code, textarea), logs (pre),
 * SVG titles or what users wrote (.user-text: a task's description); identifiers (task ids, the
 * agent, queues, users, clients) left out. */
async function visibleText(page) {
  const text = await page.evaluate(() => {
    const body = document.body.cloneNode(true);
    body.querySelectorAll("script, noscript, code, pre, textarea, title, datalist, .user-text").forEach((e) => e.remove());
    return body.textContent;
  });
  const identifier = /(^|[^A-Za-z])(bt_\w+|etl_\w+|auth_\w+|standalone|webui\/[\w.]+|goflowctl\/[\w.]+|local:\w+|unknown|default|web)\b/g;
  return text.replace(identifier, " ");
}

/** The words of ENGLISH in `text`; `start_day`-like names of fields count as one word. */
function englishWords(text) {
  return (text.match(/[A-Za-z_]+/g) ?? []).map((w) => w.toLowerCase()).filter((w) => ENGLISH.has(w));
}

// --- setup: the DAG, and runs for yesterday.
ctl("apply", "-f", DAG);
ctl("run", "-j", "bt_extract", "-d", DAY, "--down");
ctl("run", "-j", "bt_fail", "-d", DAY, "--down");

const context = await openContext();
const page = context.pages()[0] ?? (await context.newPage());
page.setDefaultTimeout(WAIT);
page.on("dialog", (dialog) => dialog.accept());
const failures = [];
page.on("pageerror", (error) => failures.push(String(error)));

try {
  await step("the overview opens on the latest day with runs", async () => {
    await page.goto(`${WEB}/`);
    assert.match(await page.textContent("h1"), new RegExp(`Data date ${DASHED}`));
    await eventually(page, async () => (await page.locator("#region-overview a[href='/instances/bt_fail/" + DAY + "']").count()) > 0, "bt_fail listed");
    await page.screenshot({ path: `${SHOTS}/overview.png`, fullPage: true });
  });

  await step("the graph draws every task coloured by state, and search finds a task", async () => {
    await page.goto(`${WEB}/`);
    await page.click("#open-graph");
    await page.waitForSelector("svg.dag");
    assert.equal(await page.locator("svg.dag a.node").count(), 5);
    await eventually(page, async () => (await page.locator("#node-bt_fail.state-failed").count()) === 1, "bt_fail drawn failed");
    assert.equal(await page.locator("svg.dag text.offset-label").count(), 1, "the -1 day edge is labelled");
    // bt_daily waits for bt_extract of the same day and of the day before: two curves, apart.
    const middles = await page.evaluate(() => {
      const extract = document.querySelector("#node-bt_extract");
      const daily = document.querySelector("#node-bt_daily");
      const index = (node) => [...node.parentNode.children].indexOf(node);
      return [...document.querySelectorAll("svg.dag path.edge")]
        .filter((p) => p.dataset.up === String(index(extract)) && p.dataset.down === String(index(daily)))
        .map((p) => { const length = p.getTotalLength(); return p.getPointAtLength(length / 2).y; });
    });
    assert.equal(middles.length, 2, "two edges from bt_extract to bt_daily");
    assert.ok(Math.abs(middles[0] - middles[1]) >= 20, `drawn apart: ${middles}`);
    await page.fill("#graph-search", "slow");
    assert.equal((await page.textContent("#graph-matches")).trim(), "1");
    assert.equal(await page.locator("svg.dag a.node.dim").count(), 4);
    await page.fill("#graph-search", "");
    await page.screenshot({ path: `${SHOTS}/graph.png` });
    await page.goto(`${WEB}/graph?day=${DAY}&focus=bt_fail&hops=1`);
    assert.equal(await page.locator("svg.dag a.node").count(), 2, "bt_fail and bt_report");
    await page.click("#node-bt_report");
    await page.waitForURL(`**/instances/bt_report/${DAY}`);
  });

  await step("a running task's log grows in place", async () => {
    await page.goto(instance("bt_slow"));
    await eventually(page, async () => (await page.locator("#log[data-live-url]").count()) === 1, "bt_slow running with a live log");
    await page.evaluate(() => { window.stillTheSamePage = true; });
    // The log's stream stands in for the change stream: one stream per tab.
    assert.equal(await page.evaluate(() => document.documentElement.dataset.live), "log");
    const before = (await page.textContent("#log")).length;
    await page.waitForFunction((n) => document.getElementById("log").textContent.length > n + 40, before);
    assert.equal(await page.evaluate(() => window.stillTheSamePage), true, "no reload");
    const text = await page.textContent("#log");
    const numbers = [...text.matchAll(/slow line (\d+) of 400/g)].map((m) => Number(m[1]));
    assert.deepEqual(numbers, numbers.map((_, i) => numbers[0] + i), "no line lost or repeated");
    await page.fill("#log-search", "line 1 ");
    assert.match(await page.textContent("#log-matches"), /^1 \//);
    await page.fill("#log-search", "");
    await page.screenshot({ path: `${SHOTS}/instance-running.png` });
  });

  await step("delete is refused while the instance runs, with the reason", async () => {
    await page.goto(instance("bt_slow"));
    const flash = await submit(page, "#action-delete");
    assert.match(flash, /running.*kill it first/);
    assert.equal(await page.getAttribute("#flash", "class"), "flash refused");
  });

  await step("kill stops a running instance; a live overview shows it from the change stream, not its timer (or from the timer when the stream is refused)", async () => {
    // A second tab on the day's overview, its refresh timer made an hour long: only the
    // change stream can bring the kill to it in time.
    const overview = await context.newPage();
    overview.setDefaultTimeout(WAIT);
    const url = `${WEB}/?day=${DAY}`;
    await overview.route(url, async (route) => {
      const response = await route.fetch();
      const headers = { ...response.headers() };
      delete headers["content-encoding"];
      delete headers["content-length"];
      const body = (await response.text()).replace(/data-seconds="\d+"/, 'data-seconds="3600"');
      await route.fulfill({ response, headers, body });
    });
    await overview.goto(url);
    assert.equal(await overview.getAttribute("#autorefresh", "data-seconds"), "3600");
    await overview.waitForFunction(() => document.documentElement.dataset.live === "stream");
    await overview.evaluate(() => { window.stillTheSamePage = true; });
    const slowRow = `#region-overview tr:has(a[href='/instances/bt_slow/${DAY}'])`;
    assert.match(await overview.textContent(slowRow), /running/);
    // A third tab whose change stream is refused falls back to its (3 s) timer ("timer" is
    // shown only once the stream failed).
    const fallback = await context.newPage();
    fallback.setDefaultTimeout(WAIT);
    await fallback.route("**/watch?*", (route) => route.abort());
    await fallback.goto(url);
    await fallback.waitForFunction(() => document.documentElement.dataset.live === "timer");
    await fallback.evaluate(() => { window.stillTheSamePage = true; });

    await page.goto(instance("bt_slow"));
    const flash = await submit(page, "#action-kill");
    assert.match(flash, /kill bt_slow@\d+: bt_slow@\d+ killed/);
    await eventually(page, async () => (await stateOf(page)) === "killed", "bt_slow killed");

    await overview.waitForFunction((row) => /killed/.test(document.querySelector(row).textContent), slowRow);
    assert.equal(await overview.evaluate(() => window.stillTheSamePage), true, "updated in place, not reloaded");
    await overview.close();
    await fallback.waitForFunction((row) => /killed/.test(document.querySelector(row).textContent), slowRow);
    assert.equal(await fallback.evaluate(() => window.stillTheSamePage), true, "the timer updates in place too");
    await fallback.close();
  });

  await step("redo current runs a failed instance again", async () => {
    await page.goto(instance("bt_fail"));
    await eventually(page, async () => (await stateOf(page)) === "failed", "bt_fail failed");
    assert.equal(await triesOf(page), 1);
    assert.match(await page.textContent("#log"), /about to fail/);
    const flash = await submit(page, "#action-redo");
    assert.match(flash, /redo current bt_fail@\d+: 1 instance to run/);
    await eventually(page, async () => (await stateOf(page)) === "failed" && (await triesOf(page)) === 2, "a second try that failed");
  });

  await step("force run runs a blocked instance without its dependencies", async () => {
    await page.goto(instance("bt_report"));
    assert.equal(await stateOf(page), "waiting");
    assert.match(await page.textContent("#region-head"), /blocked/);
    await submit(page, "#action-force_run");
    await eventually(page, async () => (await stateOf(page)) === "success", "bt_report succeeded");
  });

  await step("mark success (强制通过) passes a failed instance, drawn hatched", async () => {
    await page.goto(instance("bt_fail"));
    const flash = await submit(page, "#action-mark_success");
    assert.match(flash, /mark success bt_fail@\d+: 1 instance marked success/);
    assert.equal(await stateOf(page), "success");
    assert.equal(await page.locator("#instance-state .state-success.forced").count(), 1);
  });

  await step("redo current and downstream reruns the instance and what follows", async () => {
    await page.goto(instance("bt_extract"));
    await eventually(page, async () => (await stateOf(page)) === "success", "bt_extract succeeded");
    // The command each try ran, after templating.
    assert.equal((await page.textContent("#command-1")).trim(), `echo extracting ${DAY}`);
    const flash = await submit(page, "#action-redo_down");
    assert.match(flash, /redo current and downstream bt_extract@\d+: (\d+) instances? to run/);
    const count = Number(flash.match(/: (\d+) instances? to run/)[1]);
    assert.ok(count >= 3, `extract, slow and daily: ${flash}`);
    await eventually(page, async () => (await stateOf(page)) === "success" && (await triesOf(page)) === 2, "bt_extract ran again");
    // bt_slow runs again (its log restarts); stop it so the rest of the run stays quick.
    ctl("kill", "-j", "bt_slow", "-d", DAY);
  });

  await step("redo with upstream reruns the instance after its upstreams", async () => {
    await page.goto(instance("bt_report"));
    const flash = await submit(page, "#action-redo_up");
    assert.match(flash, /redo with upstream bt_report@\d+: 2 instances to run/);
    await page.goto(instance("bt_fail"));
    await eventually(page, async () => (await triesOf(page)) === 3 && (await stateOf(page)) === "failed", "bt_fail ran a third time");
    await page.goto(instance("bt_report"));
    assert.equal(await stateOf(page), "waiting", "bt_report waits for its failed upstream again");
  });

  await step("delete removes a finished instance; the task then offers a run", async () => {
    await page.goto(instance("bt_report"));
    await submit(page, "#action-kill");
    const flash = await submit(page, "#action-delete");
    assert.match(flash, /deleted with its tries and logs/);
    assert.match(page.url(), new RegExp(`/\\?day=${DAY}$`));
    await page.goto(instance("bt_report"));
    assert.match(await page.textContent("main"), /no instance on this day yet/);
  });

  await step("the task page pauses, previews a backfill, and refuses a delete with dependents", async () => {
    await page.goto(`${WEB}/tasks/bt_extract`);
    assert.equal(await page.locator("#cells a.cell").count(), 30);
    assert.equal(await page.locator("svg.dag a.node").count(), 3, "extract, slow, daily");
    await submit(page, "#pause-toggle");
    assert.match(await page.textContent("h1"), /paused/);
    await submit(page, "#pause-toggle");
    assert.doesNotMatch(await page.textContent("h1"), /paused/);
    await page.fill("#backfill-preview input[name=from]", "2026-01-01");
    await page.fill("#backfill-preview input[name=to]", "2026-01-10");
    await Promise.all([page.waitForNavigation(), page.click("#backfill-preview button")]);
    assert.match(await page.textContent("#preview"), /This would run 10 instances \(10 new\)/);
    assert.equal(await page.locator("#preview-instances tr").count(), 10, "a row a day");
    assert.equal(await page.locator("#preview-instances span.new").count(), 10);
    const flash = await submit(page, "#delete-task");
    assert.match(flash, /cannot delete: .*bt_daily depends on bt_extract/);
  });

  await step("the grid shows tasks x days, the agents and the history pages list what happened", async () => {
    await page.goto(`${WEB}/grid?end=${DAY}&days=7`);
    assert.equal(await page.locator("#statusgrid a.cell").count(), 5 * 7);
    assert.equal(await page.locator(`#statusgrid a.cell.state-killed[href='/instances/bt_slow/${DAY}']`).count(), 1);
    await page.screenshot({ path: `${SHOTS}/grid.png` });
    await page.goto(`${WEB}/agents`);
    assert.match(await page.textContent("#agents"), /alive/);
    await page.goto(`${WEB}/history?action=kill`);
    const rows = await page.locator("#operations tbody tr").allTextContents();
    assert.ok(rows.length >= 2 && rows.every((r) => r.includes("kill")), rows.join("\n"));
    assert.ok(rows.some((r) => r.includes("webui/")), "the web UI is named as the client");
  });

  await step("the edit form shows the apply messages next to the field, then saves", async () => {
    await page.goto(`${WEB}/tasks/new`);
    await page.fill("#f-id", "bt_new");
    await page.fill("#f-command", "echo new");
    await page.fill("#f-schedule", "every morning");
    await Promise.all([page.waitForNavigation(), page.click("#save-task")]);
    assert.match(await page.textContent("#error-schedule"), /schedule/);
    await page.fill("#f-schedule", "");
    await page.fill("#f-depends_on", "bt_nope");
    await Promise.all([page.waitForNavigation(), page.click("#save-task")]);
    assert.match(await page.textContent("#error-depends_on"), /bt_nope/);
    await page.fill("#f-depends_on", "bt_extract -1");
    await Promise.all([page.waitForNavigation(), page.click("#save-task")]);
    assert.match(page.url(), /\/tasks\/bt_new$/);
    assert.match(await page.textContent("#flash"), /bt_new created/);
  });

  await step("import previews every changed field, and export gives the document back", async () => {
    const exported = await (await page.request.get(`${WEB}/tasks/bt_new/yaml`)).text();
    assert.match(exported, /id: bt_new/);
    await page.goto(`${WEB}/import`);
    await page.fill("#import-document", exported.replace("echo new", "echo newer"));
    await Promise.all([page.waitForNavigation(), page.click("#import-preview-button")]);
    assert.match(await page.textContent("#import-preview"), /command\s*echo new\s*echo newer/);
    await Promise.all([page.waitForNavigation(), page.click("#import-apply")]);
    assert.match(await page.textContent("#flash"), /updated 1/);
    await page.goto(`${WEB}/tasks/bt_new`);
    const flash = await submit(page, "#delete-task");
    assert.match(flash, /deleted bt_new/);
  });

  await step("switching to Chinese is remembered", async () => {
    await page.goto(instance("bt_fail"));
    await Promise.all([page.waitForNavigation(), page.click("#lang-switch")]);
    assert.match(await page.textContent("header nav"), /概览/);
    assert.equal((await page.textContent("#action-mark_success")).trim(), "强制通过");
    await page.screenshot({ path: `${SHOTS}/instance-zh.png`, fullPage: true });
    await page.goto(`${WEB}/graph?day=${DAY}`);
    assert.match(await page.textContent("h1"), /依赖图/);
    await page.screenshot({ path: `${SHOTS}/graph-zh.png` });
    await Promise.all([page.waitForNavigation(), page.click("#lang-switch")]);
    assert.match(await page.textContent("header nav"), /Overview/);
  });

  await step("every Chinese page reads in Chinese, error pages included", async () => {
    await context.addCookies([{ name: "goflow_lang", value: "zh", url: WEB }]);
    const pages = [
      "/", `/?day=${DAY}&state=failed`, `/graph?day=${DAY}`, `/grid?end=${DAY}&days=7`, "/tasks",
      "/tasks/bt_extract", `/tasks/bt_extract?from=2026-01-01&to=2026-01-10&down=1`, "/tasks/bt_daily",
      instance("bt_fail"), `${instance("bt_fail")}?try=1`, instance("bt_extract"), instance("bt_slow"),
      instance("bt_daily"), instance("bt_report"), "/agents", "/history", "/alerts", "/tasks/new",
      "/tasks/bt_fail/edit", "/import", "/nowhere", `/instances/bt_nope/${DAY}`, "/?day=2026-13-01",
    ];
    for (const path of pages) {
      await page.goto(path.startsWith("http") ? path : `${WEB}${path}`);
      assert.equal(await page.getAttribute("html", "lang"), "zh-CN", path);
      const seen = await visibleText(page);
      const english = englishWords(seen);
      assert.deepEqual(english, [], `${path} shows English words in:\n${seen.replace(/\s+/g, " ")}`);
    }
    // A forbidden POST (no CSRF token): its 403 page too.
    const forbidden = await page.request.post(`${instance("bt_fail")}/action`, {
      form: { action: "kill", confirmed: "1", csrf: "0".repeat(40) },
      headers: { cookie: "goflow_lang=zh" },
    });
    assert.equal(forbidden.status(), 403);
    await page.setContent(await forbidden.text());
    assert.deepEqual(englishWords(await visibleText(page)), [], "the 403 page shows English words");
    // Results of actions: a refusal and a success, in Chinese.
    await page.goto(instance("bt_report"));
    const flash = await submit(page, "#action-redo");
    assert.match(flash, /重做当前 bt_report@\d+：\d+ 个实例待运行/);
    await page.screenshot({ path: `${SHOTS}/instance-zh-flash.png`, fullPage: true });
    await context.addCookies([{ name: "goflow_lang", value: "en", url: WEB }]);
  });

  await step("a POST from elsewhere (no CSRF token) changes nothing", async () => {
    const response = await page.request.post(`${instance("bt_fail")}/action`, {
      form: { action: "delete", confirmed: "1", csrf: "0".repeat(40) },
    });
    assert.equal(response.status(), 403);
    await page.goto(instance("bt_fail"));
    assert.equal(await stateOf(page), "failed");
  });

  await step("a 60-task DAG is drawn whole, and focus narrows it", async () => {
    // Five layers of twelve, each task after two of the layer before; a few of them fail.
    const lines = ["tasks:"];
    for (let layer = 0; layer < 5; layer++) {
      for (let i = 0; i < 12; i++) {
        const id = `etl_l${layer}_${String(i).padStart(2, "0")}`;
        const fails = layer === 2 && i % 5 === 0;
        lines.push(`  - id: ${id}`, `    command: "${fails ? "exit 1" : "echo ok"}"`);
        if (layer > 0) {
          const up = (k) => `etl_l${layer - 1}_${String(k).padStart(2, "0")}`;
          lines.push(`    depends_on: [${up(i)}, ${up((i * 5 + 3) % 12)}]`);
        }
      }
    }
    const file = join(tmpdir(), `goflow-large-${process.pid}.yaml`);
    writeFileSync(file, lines.join("\n") + "\n");
    ctl("apply", "-f", file);
    rmSync(file);
    for (let i = 0; i < 12; i++) ctl("run", "-j", `etl_l0_${String(i).padStart(2, "0")}`, "-d", DAY, "--down");
    await page.goto(`${WEB}/graph?day=${DAY}`);
    assert.equal(await page.locator("svg.dag a.node").count(), 65);
    await eventually(page, async () => (await page.locator("svg.dag a.node.state-failed").count()) >= 3, "the failing tasks drawn red");
    await page.screenshot({ path: `${SHOTS}/graph-large.png` });
    await page.goto(`${WEB}/graph?day=${DAY}&focus=etl_l2_05&hops=1`);
    assert.ok((await page.locator("svg.dag a.node").count()) < 10);
  });

  assert.deepEqual(failures, [], "no script errors on any page");
} finally {
  await context.close();
}

// --- Without JavaScript: every page reads, and an action confirms on a page of its own.
const plain = await openContext({ javaScriptEnabled: false });
try {
  const page = plain.pages()[0] ?? (await plain.newPage());
  page.setDefaultTimeout(WAIT);
  await step("without JavaScript every page reads and actions confirm on a page", async () => {
    for (const path of ["/", `/graph?day=${DAY}`, "/grid", "/tasks", "/tasks/bt_fail", `/instances/bt_fail/${DAY}`, "/agents", "/history"]) {
      const response = await page.goto(`${WEB}${path}`);
      assert.equal(response.status(), 200, path);
    }
    await page.goto(instance("bt_fail"));
    assert.match(await page.textContent("#log"), /about to fail/);
    await Promise.all([page.waitForNavigation(), page.click("#action-redo")]);
    assert.match(await page.textContent("h1"), /redo current: bt_fail@/);
    const flash = await submit(page, "#confirm-yes");
    assert.match(flash, /1 instance to run/);
  });
} finally {
  await plain.close();
}
// --- With authentication (issue 9): a login form, buttons by role, and the coordinator refusing
// a forged POST all the same.
const secured = await openContext();
try {
  const page = secured.pages()[0] ?? (await secured.newPage());
  page.setDefaultTimeout(WAIT);
  page.on("dialog", (dialog) => dialog.accept());
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  const authInstance = `${AUTH_WEB}/instances/auth_fail/${DAY}`;
  const sessionCookie = async () => (await secured.cookies(AUTH_WEB)).find((c) => c.name === "goflow_session");

  async function login(user, password = AUTH_PASSWORD) {
    await page.fill("#login-user", user);
    await page.fill("#login-password", password);
    await Promise.all([page.waitForNavigation(), page.click("#login-submit")]);
  }
  async function logout() {
    await Promise.all([page.waitForNavigation(), page.click("#logout")]);
    assert.match(page.url(), /\/login$/);
    assert.equal(await sessionCookie(), undefined, "the cookie is gone");
  }

  await step("with authentication a stranger gets the login form, and a wrong password stores nothing", async () => {
    await page.goto(`${AUTH_WEB}/tasks`);
    assert.equal(new URL(page.url()).pathname, "/login");
    assert.equal(await page.locator("header nav").count(), 0);
    await page.screenshot({ path: `${SHOTS}/login.png` });
    await login("bt_operator", "not-the-password");
    assert.match(await page.textContent("#login-error"), /Wrong user name or password/);
    assert.equal(await page.inputValue("#login-user"), "bt_operator");
    assert.equal(await sessionCookie(), undefined);
    await page.screenshot({ path: `${SHOTS}/login-refused.png` });
    const response = await page.request.get(`${AUTH_WEB}/`, { maxRedirects: 0 });
    assert.equal(response.status(), 303);
    assert.equal(response.headers()["location"], "/login");
  });

  await step("an editor logs in, imports a task, and logs out", async () => {
    await page.goto(`${AUTH_WEB}/tasks`);
    await login("bt_editor");
    assert.equal(new URL(page.url()).pathname, "/tasks", "back where the visitor was going");
    const cookie = await sessionCookie();
    assert.ok(cookie && cookie.httpOnly && cookie.value.startsWith("gfs_"), JSON.stringify(cookie));
    assert.ok(cookie.sameSite === "Lax" || cookie.sameSite === "Strict", JSON.stringify(cookie));
    assert.equal((await page.textContent("#who-name")).trim(), "bt_editor");
    assert.equal((await page.textContent("#who-role")).trim(), "editor");
    await page.click("#import-yaml");
    await page.fill("#import-document", "tasks:\n  - id: auth_fail\n    command: 'echo \"about to fail\" >&2; exit 3'\n");
    await Promise.all([page.waitForNavigation(), page.click("#import-apply")]);
    assert.match(await page.textContent("#flash"), /created 1/);
    await logout();
  });

  await step("an operator sees and uses the repair buttons, but no editing", async () => {
    await page.goto(authInstance);
    await login("bt_operator");
    assert.equal(page.url(), authInstance);
    assert.equal((await page.textContent("#who-role")).trim(), "operator");
    assert.match(await page.textContent("main"), /no instance on this day yet/);
    await submit(page, "#action-force_run");
    await eventually(page, async () => (await stateOf(page)) === "failed", "auth_fail ran and failed");
    assert.equal(await triesOf(page), 1);
    const flash = await submit(page, "#action-redo");
    assert.match(flash, /redo current auth_fail@\d+: 1 instance to run/);
    await eventually(page, async () => (await stateOf(page)) === "failed" && (await triesOf(page)) === 2, "a second try");
    await page.screenshot({ path: `${SHOTS}/instance-operator.png` });
    await page.goto(`${AUTH_WEB}/tasks/auth_fail`);
    assert.equal(await page.locator("#pause-toggle").count(), 1);
    assert.equal(await page.locator("#edit-task, #delete-task").count(), 0);
    await page.goto(`${AUTH_WEB}/history`);
    assert.match(await page.textContent("#operations"), /bt_operator/, "the operations log names the user");
    await logout();
  });

  await step("a viewer reads, has no repair button, and a forged one is refused", async () => {
    await page.goto(authInstance);
    await login("bt_viewer");
    assert.equal((await page.textContent("#who-role")).trim(), "viewer");
    assert.equal(await stateOf(page), "failed");
    assert.equal(await page.locator("#actions form").count(), 0, "no repair button");
    assert.equal(await page.locator("#action-redo").count(), 0);
    await page.screenshot({ path: `${SHOTS}/instance-viewer.png` });
    // The same POST the operator's button sent, with this page's own CSRF token: the UI lets it
    // through to the coordinator, which refuses it for the role.
    const csrf = await page.getAttribute("form.logout input[name=csrf]", "value");
    const response = await page.request.post(`${authInstance}/action`, {
      form: { action: "redo", confirmed: "1", csrf },
    });
    assert.equal(response.status(), 200);
    assert.match(await response.text(), /bt_viewer is viewer; this needs the operator role/);
    await page.reload();
    assert.equal(await triesOf(page), 2, "nothing ran");
    assert.equal(await stateOf(page), "failed");
    await page.goto(`${AUTH_WEB}/tasks/auth_fail`);
    assert.equal(await page.locator("#pause-toggle, #run-day, #edit-task, #delete-task").count(), 0);
    await logout();
    await page.goto(authInstance);
    assert.equal(new URL(page.url()).pathname, "/login", "logged out for good");
  });
  assert.deepEqual(errors, [], "no script errors on any page");
} finally {
  await secured.close();
}

console.log(`${passed} browser checks passed; screenshots in ${SHOTS}`);
