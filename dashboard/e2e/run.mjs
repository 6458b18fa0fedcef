// End-to-end run of the dashboard in real headless Chromium (Debian's package,
// driven by playwright-core; no browser download) against the real `nanoscale`
// binary, its agent and proxy, and a real git repository on this machine.
//
//   NANOSCALE_BIN=../target/debug/nanoscale node e2e/run.mjs
//
// Screenshots of every page go to $SCREENSHOT_DIR (default e2e/screenshots); the
// path is printed at the end. Figures (bundle size, first render with 200
// services) are printed too. Exits non-zero on the first failed step.
import { execFileSync, spawn } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { freePort } from "./net.mjs";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, "../..");
const bin = resolve(process.env.NANOSCALE_BIN ?? join(repoRoot, "target/debug/nanoscale"));
const browserPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const shots = resolve(process.env.SCREENSHOT_DIR ?? join(here, "screenshots"));
const PASSWORD = "correct horse battery staple";
const VIEWER_PASSWORD = "viewer password 12345";

function fail(message) {
  throw new Error(message);
}

function git(cwd, ...args) {
  execFileSync("git", ["-c", "user.name=e2e", "-c", "user.email=e2e@example.invalid", ...args], { cwd, stdio: "pipe" });
}

/** A real repository: the example app, committed, served as file://. */
function makeRepo(dir) {
  const repo = join(dir, "hello.git");
  mkdirSync(repo);
  for (const name of ["app.py", "Procfile", "VERSION"]) cpSync(join(repoRoot, "examples/hello", name), join(repo, name));
  git(repo, "init", "-q", "-b", "main");
  git(repo, "add", ".");
  git(repo, "commit", "-q", "-m", "first <b>commit</b>");
  return repo;
}

/** SQLite in the data dir, whatever the caller's environment points at. */
function withoutDatabaseUrl(env) {
  delete env.NANOSCALE_DATABASE_URL;
  return env;
}

async function startNanoscale(dir, proxyPort, clusterPort) {
  const data = join(dir, "data");
  // The whole log goes to a file, printed when a step fails: a failure in CI must
  // say what the agent was doing.
  const log = openSync(join(dir, "server.log"), "a");
  const child = spawn(
    bin,
    [
      "up",
      "--data-dir",
      data,
      "--listen",
      "127.0.0.1:0",
      "--proxy-listen",
      `127.0.0.1:${proxyPort}`,
      "--cluster-listen",
      `127.0.0.1:${clusterPort}`,
      "--internal-listen",
      "off",
      "--dns-listen",
      "off",
    ],
    { env: withoutDatabaseUrl({ ...process.env, NANOSCALE_LOG: process.env.NANOSCALE_E2E_LOG ?? "info" }), stdio: ["ignore", "pipe", log], detached: true },
  );
  const url = await new Promise((ok, bad) => {
    const timer = setTimeout(() => bad(new Error("nanoscale up printed no API URL in 60 s")), 60_000);
    let buffer = "";
    child.stdout.on("data", (chunk) => {
      buffer += chunk.toString();
      const match = /API:\s+(\S+)\/api\/v1/.exec(buffer);
      if (match) {
        clearTimeout(timer);
        ok(match[1]);
      }
    });
    child.once("exit", (code) => bad(new Error(`nanoscale up exited with ${code}`)));
  });
  child.stdout.resume();
  return { child, url };
}

/**
 * Apps outlive `nanoscale up` by design (their shims keep them running for the
 * next start): stop every process of this run's node, found by its command line
 * or working directory inside the run's temp dir.
 */
function killUnder(dir) {
  for (const pid of pids()) {
    let mine;
    try {
      mine = readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(dir) || readlinkSync(`/proc/${pid}/cwd`).startsWith(dir);
    } catch {
      continue; // gone, or not ours to read
    }
    if (mine && Number(pid) !== process.pid) {
      try {
        process.kill(Number(pid), "SIGKILL");
      } catch {
        // already gone
      }
    }
  }
}

/** The ids of every running process. */
function pids() {
  return readdirSync("/proc").filter((name) => /^\d+$/.test(name));
}

/**
 * What the node was doing when a step failed: the end of the server's log (without
 * the per-request lines), each build's and instance's shim records, and the run's
 * processes.
 */
function diagnose(dir) {
  const text = (path) => {
    try {
      return readFileSync(path, "utf8").trim();
    } catch {
      return null;
    }
  };
  const log = (text(join(dir, "server.log")) ?? "").split("\n").filter((line) => !line.includes("request done"));
  console.error(`\n==> server log, last 150 of ${log.length} lines (without requests):\n${log.slice(-150).join("\n")}`);
  const apps = join(dir, "data/apps");
  for (const service of existsSync(apps) ? readdirSync(apps) : []) {
    for (const kind of ["builds", "instances"]) {
      const parent = join(apps, service, kind);
      for (const name of existsSync(parent) ? readdirSync(parent) : []) {
        const shim = join(parent, name);
        const records = ["shim.pid", "app.pid", "exit.json", "warnings.json"].map((file) => `${file}=${text(join(shim, file))}`);
        console.error(`==> ${service}/${kind}/${name}: ${records.join(" ")}`);
      }
    }
  }
  try {
    console.error(`==> processes:\n${execFileSync("ps", ["-eo", "pid,ppid,stat,etime,args"], { encoding: "utf8" })
      .split("\n")
      .filter((line) => line.includes(dir) || line.includes("nanoscale"))
      .join("\n")}`);
  } catch {
    // no ps
  }
}

async function waitFor(what, probe, timeoutMs = 60_000) {
  const start = Date.now();
  let last;
  while (Date.now() - start < timeoutMs) {
    try {
      const value = await probe();
      if (value) return value;
    } catch (error) {
      last = error;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  fail(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last.message}` : ""}`);
}

async function main() {
  if (!existsSync(bin)) fail(`no nanoscale binary at ${bin}; build it (cargo build) or set NANOSCALE_BIN`);
  if (!existsSync(browserPath)) fail(`no Chromium at ${browserPath}; scripts/test installs Debian's chromium package`);
  rmSync(shots, { recursive: true, force: true });
  mkdirSync(shots, { recursive: true });
  const dir = mkdtempSync(join(tmpdir(), "nanoscale-e2e-"));
  const repo = makeRepo(dir);
  const proxyPort = await freePort();
  const proxy = `http://127.0.0.1:${proxyPort}`;
  const clusterPort = await freePort();
  const { child, url } = await startNanoscale(dir, proxyPort, clusterPort);
  const browser = await chromium.launch({
    executablePath: browserPath,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const problems = [];
  const steps = [];
  let failed = false;
  try {
    const context = await browser.newContext({ baseURL: url, viewport: { width: 1280, height: 900 } });
    context.setDefaultTimeout(30_000);
    const page = await context.newPage();
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    page.on("console", (message) => {
      // 4xx answers are the bad inputs this run makes on purpose (the page shows them);
      // a 5xx, a CSP violation or a script error is a problem.
      if (message.type() === "error" && !/status of 4\d\d/.test(message.text())) problems.push(`console: ${message.text()}`);
    });
    let adminToken;
    let shotNumber = 0;
    const shot = async (name, target = page) => {
      shotNumber += 1;
      await target.screenshot({ path: join(shots, `${String(shotNumber).padStart(2, "0")}-${name}.png`), fullPage: true });
    };
    const step = async (name, body) => {
      const start = Date.now();
      try {
        await body();
      } catch (error) {
        await page.screenshot({ path: join(shots, "FAILED.png"), fullPage: true }).catch(() => {});
        throw new Error(`step "${name}" failed (screenshot ${join(shots, "FAILED.png")}): ${error.message}`, { cause: error });
      }
      steps.push([name, Date.now() - start]);
      console.log(`  ok  ${name} (${Date.now() - start} ms)`);
    };
    const heading = (text) => page.getByRole("heading", { level: 1, name: text });
    const confirm = async (label) => {
      await page.getByRole("dialog").getByRole("button", { name: label, exact: true }).click();
    };
    const answer = async () => (await fetch(`${proxy}/`)).text();

    await step("first visit goes to setup; the admin is created and logged in", async () => {
      const index = await fetch(`${url}/`);
      const csp = index.headers.get("content-security-policy") ?? "";
      if (!csp.includes("script-src 'self'") || !csp.includes("frame-ancestors 'none'")) fail(`weak or missing CSP: ${csp}`);
      if (index.headers.get("cache-control") !== "no-cache") fail(`index.html is cached: ${index.headers.get("cache-control")}`);
      const asset = /src="(\/assets\/[^"]+\.js)"/.exec(await index.text())?.[1] ?? fail("no script in index.html");
      const script = await fetch(`${url}${asset}`, { headers: { "accept-encoding": "br, gzip" } });
      if (!(script.headers.get("cache-control") ?? "").includes("immutable")) fail("hashed assets are not immutable");
      if (script.headers.get("content-encoding") !== "br") fail(`assets are not served precompressed: ${script.headers.get("content-encoding")}`);
      await page.goto("/");
      await heading("Create the first admin").waitFor();
      await shot("setup");
      await page.getByLabel("Username").fill("admin");
      await page.getByLabel("Password").fill("short");
      await page.getByRole("button", { name: "Create admin and log in" }).click();
      await page.locator(".field-error .error-text").getByText("at least 12 characters").waitFor();
      await page.getByLabel("Password").fill(PASSWORD);
      await page.getByRole("button", { name: "Create admin and log in" }).click();
      await heading("Overview").waitFor();
      adminToken = await apiToken(url);
      await page.getByTestId("node-" + (await firstNodeName(url, adminToken))).waitFor();
      await shot("overview");
    });

    await step("logout, a wrong password, then login", async () => {
      await page.getByRole("button", { name: "Log out" }).click();
      await heading("Log in").waitFor();
      await page.getByLabel("Username").fill("admin");
      await page.getByLabel("Password").fill("wrong password!!");
      await page.getByRole("button", { name: "Log in" }).click();
      await page.getByRole("alert").waitFor();
      await shot("login-error");
      await page.getByLabel("Password").fill(PASSWORD);
      await page.getByRole("button", { name: "Log in" }).click();
      await heading("Overview").waitFor();
    });

    await step("an ended session sends to login and back to where the user was", async () => {
      await context.clearCookies();
      await page.goto("/events");
      await heading("Log in").waitFor();
      if (!page.url().includes("next=%2Fevents")) fail(`login URL lacks next: ${page.url()}`);
      await page.getByText("Your session ended").waitFor();
      await page.getByLabel("Username").fill("admin");
      await page.getByLabel("Password").fill(PASSWORD);
      await page.getByRole("button", { name: "Log in" }).click();
      await heading("Events").waitFor();
    });

    let serviceUrl;
    await step("create a project and a service (a bad URL first, shown on its field)", async () => {
      await page.getByRole("link", { name: "Projects" }).click();
      await heading("Projects").waitFor();
      await page.getByLabel("Project name").fill("Bad Name!");
      await page.getByRole("button", { name: "Create project" }).click();
      await page.locator(".field-error").getByText(/.+/).first().waitFor();
      await page.getByLabel("Project name").fill("demo");
      await page.getByRole("button", { name: "Create project" }).click();
      await heading("demo").waitFor();
      // The project's shared environment, edited on its page.
      await page.getByRole("button", { name: "Add variable" }).click();
      await page.getByLabel("Variable 1 name").fill("REGION");
      await page.getByLabel("Variable 1 value").fill("eu");
      await page.getByRole("button", { name: "Save project" }).click();
      await page.getByText("Saved; services get the variables").waitFor();
      await page.reload();
      await heading("demo").waitFor();
      if ((await page.getByLabel("Variable 1 value").inputValue()) !== "eu") fail("the project variable was not kept");
      await page.getByRole("link", { name: "New service" }).click();
      await heading("New service").waitFor();
      await page.getByLabel("Name", { exact: true }).fill("hello");
      await page.getByLabel("Repository URL").fill("ext::sh -c 'touch /tmp/pwned'");
      await page.getByLabel("Path prefix").fill("/");
      // A build that prints over a few seconds, so the log is seen while it grows.
      await page.getByLabel("Build command").fill("echo building hello; sleep 2; echo compiling; python3 -m py_compile app.py; sleep 1; echo build done");
      await page.getByLabel("HTTP path").fill("/healthz");
      await page.getByRole("button", { name: "Create service" }).click();
      const gitField = page.getByLabel("Repository URL");
      await waitFor("the git URL error", async () => (await gitField.getAttribute("aria-invalid")) === "true");
      await shot("service-form-error");
      await gitField.fill(`file://${repo}`);
      await page.getByRole("button", { name: "Create service" }).click();
      await heading("hello").waitFor();
      serviceUrl = page.url();
    });

    const waitLive = async (number) => {
      const row = page.getByTestId(`release-${number}`);
      await row.getByText("live", { exact: true }).waitFor({ timeout: 120_000 });
      await row.getByText("current", { exact: true }).waitFor({ timeout: 30_000 });
    };

    await step("deploy: the build log streams and the release becomes current", async () => {
      await page.getByRole("button", { name: "Deploy", exact: true }).click();
      await page.getByText("Release 1 queued").waitFor();
      const log = page.getByTestId("build-log");
      // The first line while the build still runs (it ends with "build done").
      await waitFor("the first build line while building", async () => {
        const text = (await log.textContent()) ?? "";
        return text.includes("building hello") && !text.includes("build done");
      }, 120_000);
      await shot("build-streaming");
      await waitFor("the last build line", async () => ((await log.textContent()) ?? "").includes("build done"), 120_000);
      await waitLive(1);
      // The commit message is text, even when it looks like markup.
      await page.getByTestId("commit-1").getByText("first <b>commit</b>").waitFor({ timeout: 30_000 });
      if ((await page.getByTestId("commit-1").locator("b").count()) > 0) fail("a commit message rendered as HTML");
      await shot("service-live");
    });

    await step("the app answers through its route, and its traffic shows in the chart", async () => {
      const text = await waitFor("the app through the proxy", async () => {
        const body = await answer();
        return body.startsWith("hello") ? body : null;
      });
      const app = await context.newPage();
      await app.goto(`${proxy}/`);
      await shot("app-through-proxy", app);
      await app.close();
      console.log(`      proxy answered: ${text.trim()}`);
      // Traffic reaches the chart with the agent's next heartbeats (every 10 s).
      const requests = page.getByTestId("chart-Requests").locator("figcaption strong");
      await waitFor("requests in the chart", async () => {
        for (let i = 0; i < 20; i++) await answer();
        return /[1-9]/.test((await requests.textContent()) ?? "");
      }, 60_000);
      await page.getByTestId("chart-Memory").locator("figcaption strong").getByText(/MiB|KiB/).waitFor({ timeout: 30_000 });
      await shot("service-chart");
    });

    await step("change an env var and redeploy", async () => {
      await page.getByLabel("Variable name").fill("GREETING");
      await page.getByLabel("Value", { exact: true }).fill("bonjour");
      await page.getByRole("button", { name: "Set variable" }).click();
      await page.getByText("GREETING saved; deploy to apply it").waitFor();
      await page.getByTestId("env-GREETING").waitFor();
      // A value that is markup stays text: nothing of it runs or renders as HTML.
      const markup = '<img src=x onerror="window.__pwned=1">';
      await page.getByLabel("Variable name").fill("MARKUP");
      await page.getByLabel("Value", { exact: true }).fill(markup);
      await page.getByRole("button", { name: "Set variable" }).click();
      await page.getByTestId("env-MARKUP").getByText(markup, { exact: true }).waitFor();
      if (await page.evaluate(() => "__pwned" in window)) fail("an env value ran as HTML");
      if ((await page.locator('img[src="x"]').count()) > 0) fail("an env value rendered as an element");
      // A secret is hidden until asked for; the reveal is audited (checked below).
      await page.getByLabel("Variable name").fill("API_TOKEN");
      await page.getByLabel("Value", { exact: true }).fill("e2e-secret-value");
      await page.getByLabel("Secret").check();
      await page.getByRole("button", { name: "Set variable" }).click();
      await page.getByTestId("env-API_TOKEN").getByText("secret (hidden)").waitFor();
      if ((await page.getByText("e2e-secret-value").count()) > 0) fail("a secret value is on the page before a reveal");
      await page.getByTestId("env-API_TOKEN").getByRole("button", { name: "Reveal" }).click();
      await page.getByTestId("revealed-API_TOKEN").getByText("e2e-secret-value", { exact: true }).waitFor();
      await page.getByRole("button", { name: "Deploy", exact: true }).click();
      await waitLive(2);
      await waitFor("the new greeting", async () => (await answer()).startsWith("bonjour"));
    });

    await step("roll back to release 1", async () => {
      await page.getByTestId("release-1").getByRole("button", { name: "Roll back" }).click();
      await shot("rollback-confirm");
      await confirm("Roll back");
      await waitLive(3);
      await waitFor("the old greeting", async () => (await answer()).startsWith("hello"));
      await page.getByTestId("log-terminal").locator(".xterm-rows").waitFor();
      await shot("service-after-rollback");
    });

    let tokenValue;
    await step("create an API token, use it, revoke it", async () => {
      await page.getByRole("link", { name: "Settings" }).click();
      await heading("Settings").waitFor();
      await page.getByLabel("Token name").fill("ci");
      await page.getByLabel("Role", { exact: true }).first().selectOption("deployer");
      await page.getByRole("button", { name: "Create token" }).click();
      tokenValue = ((await page.getByTestId("new-token").locator("pre").textContent()) ?? "").trim();
      if (tokenValue.length < 20) fail(`token not shown: ${tokenValue}`);
      await shot("token-created");
      const use = () => fetch(`${url}/api/v1/me`, { headers: { authorization: `Bearer ${tokenValue}` } });
      if ((await use()).status !== 200) fail("the new token does not work");
      await page.getByTestId("token-ci").getByRole("button", { name: "Revoke" }).click();
      await confirm("Revoke");
      await page.getByText("Token revoked").waitFor();
      await page.getByTestId("token-ci").waitFor({ state: "detached" });
      if ((await use()).status !== 401) fail("the revoked token still works");
    });

    await step("every step is in the audit log", async () => {
      await page.reload();
      const table = page.getByTestId("audit-table");
      await table.waitFor();
      const text = (await table.textContent()) ?? "";
      for (const action of ["setup", "auth.login", "project.create", "project.update", "service.create", "service.deploy", "service.env.set", "service.env.reveal", "service.rollback", "token.create", "token.revoke"]) {
        if (!text.includes(action)) fail(`audit log lacks ${action}`);
      }
      await page.getByLabel("Action").fill("service.deploy");
      await page.getByRole("button", { name: "Filter" }).click();
      await waitFor("the filtered audit log", async () => {
        const rows = await table.locator("tbody tr").allTextContents();
        return rows.length >= 2 && rows.every((r) => r.includes("service.deploy"));
      });
      await shot("settings-audit");
    });

    await step("white-labelling shows in the header and on the login page", async () => {
      await page.getByLabel("Product name").fill("Acme Cloud");
      await page.getByRole("button", { name: "Save", exact: true }).click();
      await page.getByTestId("product-name").getByText("Acme Cloud").waitFor();
      await page.getByLabel("Logo URL").fill("javascript:alert(1)");
      await page.getByRole("button", { name: "Save", exact: true }).click();
      await page.locator(".field-error").getByText(/https/).waitFor();
    });

    await step("an admin adds a viewer", async () => {
      await page.getByLabel("Username").fill("vera");
      await page.getByLabel("Password", { exact: true }).fill(VIEWER_PASSWORD);
      await page.getByLabel("Role", { exact: true }).nth(1).selectOption("viewer");
      await page.getByRole("button", { name: "Add user" }).click();
      await page.getByTestId("user-vera").waitFor();
    });

    await step("a team gets a member and a project", async () => {
      await page.getByLabel("Team name").fill("ops");
      await page.getByRole("button", { name: "Create team" }).click();
      const team = page.getByTestId("team-ops");
      await team.waitFor();
      await team.getByLabel("Member to add to ops").selectOption({ label: "vera" });
      await team.getByRole("button", { name: "Add", exact: true }).click();
      await team.getByText("vera").waitFor();
      await page.getByRole("link", { name: "Projects" }).click();
      await page.getByRole("link", { name: "demo" }).click();
      await heading("demo").waitFor();
      await page.getByLabel("Give access to").selectOption({ label: "team ops" });
      await page.getByRole("button", { name: "Grant" }).click();
      await page.getByTestId("grant-team ops").waitFor();
      await shot("project-access");
      await page.getByRole("link", { name: "Settings" }).click();
      await heading("Settings").waitFor();
    });

    await step("servers page: add server shows the one-liner", async () => {
      await page.getByRole("link", { name: "Servers" }).click();
      await heading("Servers").waitFor();
      await page.getByRole("button", { name: "Add server" }).click();
      const command = (await page.getByTestId("join-command").textContent()) ?? "";
      if (!/^curl -fsSL \S+\/install\.sh \| sh -s -- --join K10[0-9a-f]{64}::\S{32,}$/.test(command.trim())) fail(`odd join command: ${command}`);
      await page.getByText("Waiting for the new server").waitFor();
      await shot("servers-add");
      // A second server joins with the token (what the one-liner's script runs),
      // and the page says so without a reload.
      const token = command.trim().split(" ").pop();
      execFileSync(bin, ["join", "--cluster", `127.0.0.1:${clusterPort}`, "--data-dir", join(dir, "worker"), "--name", "worker-e2e"], {
        env: { ...process.env, NANOSCALE_JOIN_TOKEN: token },
        stdio: "pipe",
      });
      await page.getByText("worker-e2e joined and is online").waitFor();
      await page.getByTestId("node-worker-e2e").waitFor();
      // Each server's firewall as its agent reports it (mode A here: every port open).
      await page.locator('[data-testid^="security-"]').getByText("every port open").first().waitFor({ timeout: 30_000 });
      await shot("servers-joined");
      await page.getByRole("link", { name: "Events" }).click();
      await heading("Events").waitFor();
      await page.getByLabel("Kind").selectOption("release.");
      await waitFor("filtered events", async () => {
        const kinds = await page.locator(".timeline .kind").allTextContents();
        return kinds.length > 0 && kinds.every((k) => k.startsWith("release."));
      });
      await shot("events");
    });

    await step("narrow screen and dark theme", async () => {
      await page.goto(serviceUrl);
      await heading("hello").waitFor();
      await page.getByLabel("Theme").selectOption("dark");
      await shot("service-dark");
      await page.setViewportSize({ width: 360, height: 800 });
      // The chart follows its box through a ResizeObserver, a frame or two after
      // the resize: what must hold is the settled layout.
      const overflow = async () => page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      const settled = Date.now() + 3_000;
      while ((await overflow()) > 1 && Date.now() < settled) await page.waitForTimeout(100);
      await shot("service-360px");
      const left = await overflow();
      if (left > 1) {
        const widest = await page.evaluate(() => {
          const over = [...document.querySelectorAll("body *")].filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1);
          const e = over[over.length - 1];
          return e ? `${e.tagName.toLowerCase()}.${e.className} (${Math.round(e.getBoundingClientRect().right)} px)` : "no element";
        });
        fail(`the service page is ${left} px wider than a 360 px screen; it ends at ${widest}`);
      }
      await page.goto("/");
      await heading("Overview").waitFor();
      await shot("overview-360px");
      await page.setViewportSize({ width: 1280, height: 900 });
      await page.getByLabel("Theme").selectOption("light");
    });

    await step("a viewer sees no mutating controls and gets 403 if it tries", async () => {
      const viewer = await browser.newContext({ baseURL: url, viewport: { width: 1280, height: 900 } });
      const v = await viewer.newPage();
      v.on("pageerror", (error) => problems.push(`viewer page error: ${error.message}`));
      await v.goto("/login");
      await v.getByTestId("product-name").getByText("Acme Cloud").waitFor();
      await shot("login-branded", v);
      await v.getByLabel("Username").fill("vera");
      await v.getByLabel("Password").fill(VIEWER_PASSWORD);
      await v.getByRole("button", { name: "Log in" }).click();
      await v.getByRole("heading", { level: 1, name: "Overview" }).waitFor();
      await v.goto(new URL(serviceUrl).pathname);
      await v.getByRole("heading", { level: 1, name: "hello" }).waitFor();
      await v.getByTestId("release-1").waitFor();
      for (const name of ["Deploy", "Edit", "Roll back", "Delete service", "Set variable"]) {
        if ((await v.getByRole("button", { name, exact: true }).count()) + (await v.getByRole("link", { name, exact: true }).count()) > 0) {
          fail(`the viewer sees "${name}"`);
        }
      }
      await shot("service-viewer", v);
      await v.goto("/projects");
      await v.getByRole("heading", { level: 1, name: "Projects" }).waitFor();
      if ((await v.getByRole("button", { name: "Create project" }).count()) > 0) fail("the viewer can create projects");
      await v.goto("/servers");
      await v.getByRole("heading", { level: 1, name: "Servers" }).waitFor();
      if ((await v.getByRole("button", { name: "Add server" }).count()) > 0) fail("the viewer can add servers");
      const serviceId = new URL(serviceUrl).pathname.split("/").pop();
      const status = await v.evaluate(async (id) => {
        const me = await (await fetch("/api/v1/me")).json();
        const answer = await fetch(`/api/v1/services/${id}/deploy`, { method: "POST", headers: { "X-CSRF-Token": me.csrf_token } });
        return answer.status;
      }, serviceId);
      if (status !== 403) fail(`the viewer's deploy answered ${status}, not 403`);
      // A viewer changes their own password: every session ends, the new one works.
      await v.goto("/settings");
      await v.getByLabel("Current password").fill(VIEWER_PASSWORD);
      await v.getByLabel("New password", { exact: true }).fill(`${VIEWER_PASSWORD}-2`);
      await v.getByLabel("New password again").fill(`${VIEWER_PASSWORD}-2`);
      await v.getByRole("button", { name: "Change password" }).click();
      await v.getByText("Your password was changed").waitFor();
      await v.getByLabel("Username").fill("vera");
      await v.getByLabel("Password").fill(VIEWER_PASSWORD);
      await v.getByRole("button", { name: "Log in" }).click();
      await v.locator(".notice-error").waitFor();
      await v.getByLabel("Password").fill(`${VIEWER_PASSWORD}-2`);
      await v.getByRole("button", { name: "Log in" }).click();
      await v.getByRole("heading", { level: 1, name: "Overview" }).waitFor();
      await viewer.close();
    });

    await step("accessibility: axe finds no serious or critical WCAG 2 A/AA problem on any page", async () => {
      // axe-core is injected into the page, which the dashboard's CSP would
      // refuse: this context (same session) bypasses CSP for the audit only.
      const audit = await browser.newContext({ baseURL: url, viewport: { width: 1280, height: 900 }, storageState: await page.context().storageState(), bypassCSP: true });
      const a = await audit.newPage();
      const axeSource = readFileSync(join(here, "../node_modules/axe-core/axe.min.js"), "utf8");
      const projectPath = await (async () => {
        await a.goto("/projects");
        await a.getByRole("heading", { level: 1, name: "Projects" }).waitFor();
        return new URL(await a.getByRole("link", { name: "demo" }).first().evaluate((link) => link.href)).pathname;
      })();
      const pages = ["/", "/servers", "/projects", projectPath, new URL(serviceUrl).pathname, "/events", "/settings"];
      let checks = 0;
      const found = [];
      const audited = [];
      for (const theme of ["light", "dark"]) for (const path of pages) audited.push([theme, path]);
      for (const [theme, path] of audited) {
        if (path === pages[0]) {
          // The theme is kept in localStorage: chosen once per round.
          await a.goto("/");
          await a.getByLabel("Theme").selectOption(theme);
        }
        await a.goto(path);
        await a.locator("h1").first().waitFor();
        await a.waitForTimeout(500);
        await a.evaluate(axeSource);
        const result = await a.evaluate(async () =>
          // eslint-disable-next-line no-undef
          await axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] }, resultTypes: ["violations"] }),
        );
        checks += result.passes.length + result.violations.length;
        for (const violation of result.violations.filter((v) => v.impact === "serious" || v.impact === "critical")) {
          found.push(`${path} (${theme}): ${violation.id} (${violation.impact}): ${violation.help}; e.g. ${violation.nodes[0]?.target.join(" ")}`);
        }
      }
      await audit.close();
      console.log(`      axe: ${pages.length} pages in light and dark, ${checks} rule results, ${found.length} serious or critical`);
      if (found.length > 0) fail(`accessibility problems:\n  ${found.join("\n  ")}`);
    });

    await step("markup in every text a user or an app controls stays text", async () => {
      // The attack suite's HTML payloads, put through the API into the product
      // name, a token's name, a service's commands and env, and a build's output
      // (which the build log and the failure event show). Each page must show
      // them as text, run none of them, and make no element of them.
      const marks = [
        '<img src=x onerror="window.__pwned=1">',
        '"><svg onload="window.__pwned=2">',
        "<script>window.__pwned=3</script>",
      ];
      const auth = { authorization: `Bearer ${adminToken}`, "content-type": "application/json" };
      const call = async (method, path, body) => {
        const answer = await fetch(`${url}${path}`, { method, headers: auth, body: body && JSON.stringify(body) });
        if (!answer.ok) fail(`${method} ${path} answered ${answer.status}: ${await answer.text()}`);
        return answer.status === 204 ? null : answer.json();
      };
      await call("PATCH", "/api/v1/settings", { product_name: marks[0] });
      await call("POST", "/api/v1/tokens", { name: marks[1], role: "viewer" });
      const projects = await call("GET", "/api/v1/projects");
      const demo = projects.find((p) => p.name === "demo");
      const service = await call("POST", `/api/v1/projects/${demo.id}/services`, {
        name: "markup",
        source: { git: `file://${repo}`, ref: "main" },
        // Prints markup into the build log, then fails: the reason and the event show too.
        build: `echo '${marks[0]}'; echo '${marks[2]}'; exit 3`,
        run: `echo '${marks[1]}'`,
        env: { MARKUP: marks[2] },
      });
      await call("POST", `/api/v1/services/${service.id}/deploy`, {});
      await page.goto(`/services/${service.id}`);
      await heading("markup").waitFor();
      await page.getByTestId("release-1").getByText("failed", { exact: true }).waitFor({ timeout: 120_000 });
      // The deploy target, but it never served: not "current".
      if ((await page.getByTestId("release-1").getByText("current", { exact: true }).count()) > 0) fail("a failed release is marked current");
      const log = page.getByTestId("build-log");
      await waitFor("markup in the build log", async () => ((await log.textContent()) ?? "").includes("<script>window.__pwned=3</script>"), 60_000);
      await page.getByText(marks[2], { exact: true }).first().waitFor();
      await shot("markup-inert");
      const pages = [
        ["/", "Overview"],
        [`/services/${service.id}`, "markup"],
        ["/events", "Events"],
        ["/settings", "Settings"],
        ["/projects", "Projects"],
      ];
      for (const [path, title] of pages) {
        await page.goto(path);
        await heading(title).waitFor();
        // The product name is in the header of every page, as text.
        await page.getByTestId("product-name").getByText(marks[0], { exact: true }).waitFor();
        if (path === "/settings") await page.getByText(marks[1], { exact: true }).first().waitFor();
        await page.waitForTimeout(300);
        if (await page.evaluate(() => "__pwned" in window)) fail(`markup ran as script on ${path}`);
        const made = await page.locator('img[src="x"], svg[onload], script:not([src])').count();
        if (made > 0) fail(`markup became ${made} element(s) on ${path}`);
      }
      await call("PATCH", "/api/v1/settings", { product_name: "Acme Cloud" });
    });

    await step("figures: first-load bundle and first render with 200 services", async () => {
      const figures = await measure(browser, url, adminToken, repo);
      console.log(`      first page load: ${figures.files} files, ${(figures.gzipBytes / 1024).toFixed(1)} KiB gzipped JS+CSS (budget 200 KiB)`);
      console.log(`      first meaningful render with ${figures.services} services: ${figures.renderMs} ms (median of ${figures.runs}; budget 1000 ms)`);
      if (figures.gzipBytes > 200 * 1024) fail("the first page load is over 200 KiB gzipped");
    });

    if (problems.length > 0) fail(`the browser reported:\n  ${problems.join("\n  ")}`);
  } catch (error) {
    failed = true;
    diagnose(dir);
    throw error;
  } finally {
    await browser.close();
    try {
      process.kill(-child.pid, "SIGTERM");
    } catch {
      // already gone
    }
    await new Promise((r) => setTimeout(r, 1500));
    try {
      process.kill(-child.pid, "SIGKILL");
    } catch {
      // already gone
    }
    killUnder(dir);
    if (failed) console.error(`==> the run's files are kept in ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  }
  console.log(`\ndashboard e2e: ${steps.length} steps passed; screenshots in ${shots}`);
}

/** An admin API token, for the figures step's setup through the API. */
async function apiToken(url) {
  const login = await fetch(`${url}/api/v1/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: "admin", password: PASSWORD }),
  });
  if (!login.ok) fail(`API login answered ${login.status}`);
  const cookie = login.headers.get("set-cookie").split(";")[0];
  const { csrf_token } = await login.json();
  const token = await fetch(`${url}/api/v1/tokens`, {
    method: "POST",
    headers: { "content-type": "application/json", cookie, "x-csrf-token": csrf_token },
    body: JSON.stringify({ name: "e2e-admin", role: "admin" }),
  });
  return (await token.json()).token;
}

/** The one node of `nanoscale up`, named after the host. */
async function firstNodeName(url, token) {
  const nodes = await waitFor("the local node", async () => {
    const list = await (await fetch(`${url}/api/v1/nodes`, { headers: { authorization: `Bearer ${token}` } })).json();
    return list.length > 0 ? list : null;
  });
  return nodes[0].name;
}

/** Gzipped size of what the first page loads, and time to a rendered overview with 200 services. */
async function measure(browser, url, token, repo) {
  const auth = { authorization: `Bearer ${token}`, "content-type": "application/json" };
  const projects = await (await fetch(`${url}/api/v1/projects`, { headers: auth })).json();
  const projectId = projects.find((p) => p.name === "demo").id;
  const existing = (await (await fetch(`${url}/api/v1/services`, { headers: auth })).json()).length;
  for (let i = existing; i < 200; i++) {
    const answer = await fetch(`${url}/api/v1/projects/${projectId}/services`, {
      method: "POST",
      headers: auth,
      body: JSON.stringify({ name: `svc-${i}`, source: { git: `file://${repo}`, ref: "main" } }),
    });
    if (answer.status !== 201) fail(`creating service ${i} answered ${answer.status}`);
  }
  const dist = join(here, "../dist");
  const html = readFileSync(join(dist, "index.html"), "utf8");
  const firstLoad = [...html.matchAll(/(?:src|href)="\/(assets\/[^"]+\.(?:js|css))"/g)].map((m) => m[1]);
  // Chunks the entry imports statically are fetched on first load as well.
  const entry = firstLoad.find((f) => f.endsWith(".js"));
  const imported = [...readFileSync(join(dist, entry), "utf8").matchAll(/from"\.\/([^"]+\.js)"/g)].map((m) => `assets/${m[1]}`);
  const files = [...new Set([...firstLoad, ...imported])];
  const gzipBytes = files.reduce((sum, f) => sum + gzipSync(readFileSync(join(dist, f)), { level: 9 }).length, 0);
  const context = await browser.newContext({ baseURL: url, viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  await page.goto("/login");
  await page.getByLabel("Username").fill("admin");
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("heading", { level: 1, name: "Overview" }).waitFor();
  const times = [];
  for (let run = 0; run < 5; run++) {
    const start = Date.now();
    await page.goto("/", { waitUntil: "commit" });
    await page.getByText("of 200 services live").waitFor();
    times.push(Date.now() - start);
  }
  await context.close();
  times.sort((a, b) => a - b);
  return { files: files.length, gzipBytes, services: 200, renderMs: times[2], runs: times.length };
}

main().catch((error) => {
  console.error(`\ndashboard e2e FAILED: ${error.stack ?? error.message}`);
  process.exit(1);
});
