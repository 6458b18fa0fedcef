// Dashboard benchmark (issue 6), against a named peer in the same run:
//
// - **first meaningful render** of the Overview with 200 services, in headless
//   Chromium with a cold HTTP cache (a fresh browser context each time, already
//   logged in): from navigation to "… of 200 services live" on screen. Peer: the
//   same 200 services as a plain, server-rendered HTML table served by nginx (no
//   JavaScript at all), the floor any web console can reach.
// - **bytes transferred** for that first load (the browser's own count,
//   compressed as sent), ours and the peer's.
//
// Usage: bench/run dashboard  (builds the release binary and the dashboard first)
import { spawn } from "node:child_process";
import { chmodSync, mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { freePort } from "../dashboard/e2e/net.mjs";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, "..");
// playwright-core is the dashboard's dev dependency (the e2e run's driver).
const { chromium } = createRequire(join(repoRoot, "dashboard/package.json"))("playwright-core");
const bin = resolve(process.argv[2] ?? join(repoRoot, "target/release/nanoscale"));
const SERVICES = 200;
const RUNS = 7;
const PASSWORD = "benchmark-password";

async function waitFor(what, probe, ms = 30_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      if (await probe()) return;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((ok) => setTimeout(ok, 100));
  }
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Navigation to `text` visible, and the bytes the browser fetched, cold cache. */
async function firstLoad(browser, url, path, text, storageState) {
  const context = await browser.newContext({ baseURL: url, viewport: { width: 1280, height: 900 }, storageState });
  const page = await context.newPage();
  const start = Date.now();
  await page.goto(path, { waitUntil: "commit" });
  await page.getByText(text).first().waitFor();
  const ms = Date.now() - start;
  // By kind: the document, scripts and styles, and API answers (fetch).
  const kinds = await page.evaluate(() => {
    const out = {};
    for (const entry of performance.getEntries()) {
      if (typeof entry.transferSize !== "number") continue;
      const kind = entry.entryType === "navigation" ? "document" : entry.initiatorType === "fetch" ? "api" : "assets";
      out[kind] = (out[kind] ?? 0) + entry.transferSize;
    }
    return out;
  });
  await context.close();
  const bytes = Object.values(kinds).reduce((a, b) => a + b, 0);
  return { ms, bytes, kinds };
}

async function main() {
  const work = mkdtempSync(join(tmpdir(), "nanoscale-bench-dashboard-"));
  const children = [];
  try {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    // SQLite in the data dir, whatever the caller's environment points at.
    const env = { ...process.env, NANOSCALE_LOG: "warn" };
    delete env.NANOSCALE_DATABASE_URL;
    const up = spawn(
      bin,
      ["up", "--no-agent", "--listen", `127.0.0.1:${port}`, "--data-dir", join(work, "data"), "--proxy-listen", "off", "--internal-listen", "off", "--dns-listen", "off"],
      { stdio: ["ignore", "ignore", "inherit"], env },
    );
    children.push(up);
    await waitFor("the control plane", async () => (await fetch(`${url}/health/ready`)).ok);
    const setup = await fetch(`${url}/api/v1/setup`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username: "admin", password: PASSWORD }),
    });
    if (!setup.ok) throw new Error(`setup answered ${setup.status}`);

    const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: ["--no-sandbox"] });
    try {
      const login = await browser.newContext({ baseURL: url });
      const page = await login.newPage();
      await page.goto("/login");
      await page.getByLabel("Username").fill("admin");
      await page.getByLabel("Password").fill(PASSWORD);
      await page.getByRole("button", { name: "Log in" }).click();
      await page.getByRole("heading", { level: 1, name: "Overview" }).waitFor();
      // The services, created with the browser's own session.
      const names = await page.evaluate(async (count) => {
        const me = await (await fetch("/api/v1/me")).json();
        const headers = { "content-type": "application/json", "x-csrf-token": me.csrf_token };
        const project = await (await fetch("/api/v1/projects", { method: "POST", headers, body: JSON.stringify({ name: "bench" }) })).json();
        const created = [];
        for (let i = 0; i < count; i++) {
          const name = `svc-${i}`;
          const answer = await fetch(`/api/v1/projects/${project.id}/services`, {
            method: "POST",
            headers,
            body: JSON.stringify({ name, source: { git: "https://git.example.invalid/app.git", ref: "main" } }),
          });
          if (answer.status !== 201) throw new Error(`creating ${name} answered ${answer.status}`);
          created.push(name);
        }
        return created;
      }, SERVICES);
      const storageState = await login.storageState();
      await login.close();

      // The peer: the same services as a plain HTML table, from nginx with gzip.
      const root = join(work, "peer");
      mkdirSync(root);
      // nginx's workers run as nobody: the peer's page must be readable to them.
      chmodSync(work, 0o755);
      const rows = names.map((n) => `<tr><td>${escapeHtml(n)}</td><td>bench</td><td>queued</td></tr>`).join("\n");
      writeFileSync(
        join(root, "index.html"),
        `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Overview</title></head><body><h1>Overview</h1><p>0 of ${SERVICES} services live (peer)</p><table><thead><tr><th>Service</th><th>Project</th><th>Status</th></tr></thead><tbody>${rows}</tbody></table></body></html>`,
      );
      const nginxPort = await freePort();
      const conf = join(work, "nginx.conf");
      writeFileSync(
        conf,
        `worker_processes 1; pid ${work}/nginx.pid; error_log ${work}/nginx-error.log; daemon off;
events { worker_connections 256; }
http { access_log off; include /etc/nginx/mime.types; gzip on;
  client_body_temp_path ${work}/body; proxy_temp_path ${work}/proxy; fastcgi_temp_path ${work}/fcgi;
  uwsgi_temp_path ${work}/uwsgi; scgi_temp_path ${work}/scgi;
  server { listen 127.0.0.1:${nginxPort}; root ${root}; } }\n`,
      );
      const nginx = spawn("/usr/sbin/nginx", ["-c", conf], { stdio: "ignore" });
      children.push(nginx);
      const peerUrl = `http://127.0.0.1:${nginxPort}`;
      await waitFor("nginx", async () => (await fetch(peerUrl)).ok);

      const ours = [];
      const peer = [];
      // One untimed round each: Chromium's own start-up is not the page's.
      await firstLoad(browser, url, "/", `of ${SERVICES} services live`, storageState);
      await firstLoad(browser, peerUrl, "/", `of ${SERVICES} services live`, undefined);
      for (let run = 0; run < RUNS; run++) {
        ours.push(await firstLoad(browser, url, "/", `of ${SERVICES} services live`, storageState));
        peer.push(await firstLoad(browser, peerUrl, "/", `of ${SERVICES} services live`, undefined));
      }
      const oursMs = median(ours.map((r) => r.ms));
      const peerMs = median(peer.map((r) => r.ms));
      const oursKiB = median(ours.map((r) => r.bytes)) / 1024;
      const peerKiB = median(peer.map((r) => r.bytes)) / 1024;
      console.log(`dashboard Overview with ${SERVICES} services, cold cache, headless Chromium (median of ${RUNS})`);
      console.log(`  NanoScale   first meaningful render ${String(oursMs).padStart(5)} ms   transferred ${oursKiB.toFixed(1)} KiB   all ${JSON.stringify(ours.map((r) => r.ms))}`);
      console.log(`  plain HTML  first meaningful render ${String(peerMs).padStart(5)} ms   transferred ${peerKiB.toFixed(1)} KiB   all ${JSON.stringify(peer.map((r) => r.ms))}  (nginx, no JavaScript)`);
      const kib = (n) => `${((n ?? 0) / 1024).toFixed(1)} KiB`;
      const last = ours[ours.length - 1].kinds;
      console.log(`  NanoScale bytes by kind: document ${kib(last.document)}, scripts and styles ${kib(last.assets)}, API answers ${kib(last.api)}`);
      console.log(`  ratio       render ${(oursMs / peerMs).toFixed(2)}x, bytes ${(oursKiB / peerKiB).toFixed(2)}x   (targets: render <= 1000 ms, first load <= 200 KiB gzipped JS+CSS)`);
    } finally {
      await browser.close();
    }
  } finally {
    for (const child of children) child.kill("SIGTERM");
    await new Promise((ok) => setTimeout(ok, 300));
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((error) => {
  console.error(`dashboard bench FAILED: ${error.stack ?? error.message}`);
  process.exit(1);
});
