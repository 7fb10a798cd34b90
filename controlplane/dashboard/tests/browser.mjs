// Drives headless Chromium against a running querier with data from three
// environments: overview, environment switch, compare, data planes,
// explore (incl. an inline error), cardinality and Strata health. Screenshots go to OUT_DIR.
//
//   node tests/browser.mjs http://127.0.0.1:9090 ./test-output/dashboard
//   node tests/browser.mjs http://127.0.0.1:9090 ./test-output/dashboard alerts
// The second form checks only that prod's HighRequestLatency alert is firing
// on the Alerts page and the overview (the demo's prod-latency incident).
import { chromium } from "playwright-core";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";

const [base, outDir = "test-output/dashboard", mode = "all"] = process.argv.slice(2);
if (!base) {
  console.error("usage: node tests/browser.mjs BASE_URL [OUT_DIR]");
  process.exit(2);
}
mkdirSync(outDir, { recursive: true });
const exe =
  process.env.CHROMIUM ||
  ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"].find((p) => existsSync(p));
if (!exe) {
  console.error("no Chromium found (apt-get install chromium, or set CHROMIUM)");
  process.exit(3);
}

const browser = await chromium.launch({ executablePath: exe, args: ["--no-sandbox", "--disable-gpu"] });
const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
const errors = [];
page.on("pageerror", (e) => errors.push(String(e)));
const shot = (name) => page.screenshot({ path: join(outDir, `${name}.png`), fullPage: true });
const step = (msg) => console.log(`- ${msg}`);
const T = { timeout: 60_000 };

try {
  if (mode === "alerts") {
    // The incident's alert, firing, with its summary and runbook link.
    await page.goto(`${base}/#/alerts`);
    const row = "[data-testid=alert-row][data-alertname=HighRequestLatency][data-environment=prod][data-state=firing]";
    await page.waitForSelector(row, T);
    const summary = await page.textContent(`${row} [data-testid=alert-summary]`);
    if (!summary.startsWith("prod: p95 latency")) throw new Error(`alert summary: ${summary}`);
    const runbook = await page.getAttribute(`${row} [data-testid=alert-runbook]`, "href");
    if (!runbook?.endsWith("#highrequestlatency")) throw new Error(`runbook link: ${runbook}`);
    await shot("alerts");
    step(`alerts page: HighRequestLatency firing for prod (${summary})`);
    // The overview's prod card carries the alert state.
    await page.goto(`${base}/#/overview`);
    await page.waitForFunction(
      () =>
        [...document.querySelectorAll("[data-testid=dp-card]")].some(
          (c) =>
            c.querySelector("[data-testid=dp-env]")?.textContent === "prod" &&
            c.querySelector("[data-testid=dp-alerts]")?.getAttribute("data-state") === "firing",
        ),
      null,
      T,
    );
    await shot("overview-alert");
    step("the overview shows prod's alert as firing");
  } else {
    // Overview: three environments, each with a request rate.
    await page.goto(`${base}/#/overview`);
    await page.waitForFunction(() => {
      const cards = [...document.querySelectorAll("[data-testid=dp-card]")];
      return cards.length >= 3 && cards.every((c) => c.querySelector("[data-testid=dp-rate]")?.textContent !== "–");
    }, null, T);
    const envs = await page.$$eval("[data-testid=dp-env]", (els) => els.map((e) => e.textContent));
    for (const e of ["prod", "dev", "qa"]) if (!envs.includes(e)) throw new Error(`overview lacks ${e}: ${envs}`);
    await shot("overview");
    step(`overview lists ${envs.join(", ")} with request rates`);

    // Environment: charts for prod, then switch to qa.
    await page.goto(`${base}/#/env/prod`);
    await page.waitForFunction(() => document.querySelectorAll("[data-testid=plot]").length >= 3, null, T);
    await page.click("[data-testid=panel] button.link");
    const prodQuery = await page.textContent("[data-testid=panel-query]");
    if (!prodQuery.includes('environment="prod"')) throw new Error(`prod panel query: ${prodQuery}`);
    await shot("environment-prod");
    await page.selectOption("[data-testid=env-select]", "qa");
    await page.waitForSelector("[data-testid=env-panels][data-env=qa]", T);
    await page.waitForFunction(() => document.querySelectorAll("[data-testid=plot]").length >= 3, null, T);
    await page.click("[data-testid=panel] button.link");
    const qaQuery = await page.textContent("[data-testid=panel-query]");
    if (!qaQuery.includes('environment="qa"')) throw new Error(`qa panel query: ${qaQuery}`);
    const titles = await page.$$eval("[data-testid=panel] h3", (els) => els.map((e) => e.textContent));
    if (!titles.every((t) => t.includes("qa"))) throw new Error(`panels not switched: ${titles}`);
    await shot("environment-qa");
    step("switching the environment switches every chart and its query");

    // Compare: panels for all three environments.
    await page.goto(`${base}/#/compare`);
    await page.waitForFunction(() => document.querySelectorAll("[data-testid=plot]").length >= 6, null, T);
    await shot("compare");
    step("compare shows the environments side by side");

    // Data planes.
    await page.goto(`${base}/#/dataplanes`);
    await page.waitForFunction(() => document.querySelectorAll("[data-testid=dataplanes] tbody tr").length >= 3, null, T);
    // The agents' own metrics arrive (self-monitoring): every row shows its queue depth.
    await page.waitForFunction(
      () => [...document.querySelectorAll("[data-testid=dataplanes] tbody tr td:last-child")].every((td) => td.textContent.endsWith("B")),
      null,
      T,
    );
    await shot("dataplanes");
    step("data planes list three rows");

    // Alerts: the ruler's groups are loaded (Strata's own alerts and the RED
    // rules) and healthy; active alerts (if any) are listed.
    await page.goto(`${base}/#/alerts`);
    await page.waitForFunction(
      () => {
        const t = document.querySelector("[data-testid=rules-summary]")?.textContent ?? "";
        return /^\d+ groups/.test(t) && Number(t.split(" ")[0]) >= 2 && t.includes("recording");
      },
      null,
      T,
    );
    await page.waitForSelector("[data-testid=alerts], [data-testid=alerts-none]", T);
    const summary = await page.textContent("[data-testid=rules-summary]");
    await shot("alerts-page");
    step(`alerts page: ${summary.trim()}`);

    // Explore: a query with results, then a syntax error shown inline.
    await page.goto(`${base}/#/explore`);
    await page.fill("[data-testid=explore-input]", "sum by (environment) (rate(http_server_request_duration_seconds_count[1m]))");
    await page.click("[data-testid=explore-run]");
    await page.waitForFunction(() => document.querySelectorAll("[data-testid=explore-table] tbody tr").length >= 3, null, T);
    await page.waitForSelector("[data-testid=plot]", T);
    await shot("explore");
    await page.fill("[data-testid=explore-input]", "sum(rate(");
    await page.click("[data-testid=explore-run]");
    const err = await page.waitForSelector("[data-testid=explore-error]", T);
    const errText = await err.textContent();
    if (!errText.includes("bad_data")) throw new Error(`explore error: ${errText}`);
    await shot("explore-error");
    step("explore runs a query (graph + table) and shows errors inline");

    // Tenant picker: another tenant (no data) empties the overview, and every
    // API call carries it; clearing it brings the default tenant's data back.
    const tenants = new Set();
    page.on("request", (r) => {
      if (r.url().includes("/api/v1/")) tenants.add(r.headers()["x-scope-orgid"] ?? "");
    });
    await page.goto(`${base}/#/overview`);
    await page.waitForFunction(() => document.querySelectorAll("[data-testid=dp-card]").length >= 3, null, T);
    await page.fill("[data-testid=tenant]", "no-such-tenant");
    await page.press("[data-testid=tenant]", "Enter");
    await page.waitForFunction(() => document.querySelectorAll("[data-testid=dp-card]").length === 0, null, T);
    if (!tenants.has("no-such-tenant")) throw new Error(`API calls without the picked tenant: ${[...tenants]}`);
    await shot("tenant-picker");
    await page.fill("[data-testid=tenant]", "");
    await page.press("[data-testid=tenant]", "Enter");
    await page.waitForFunction(() => document.querySelectorAll("[data-testid=dp-card]").length >= 3, null, T);
    step("the tenant picker switches every API call's X-Scope-OrgID");

    // Cardinality.
    await page.goto(`${base}/#/cardinality`);
    await page.waitForFunction(() => document.querySelectorAll("[data-testid=card-metrics] tr").length >= 3, null, T);
    await shot("cardinality");
    step("cardinality lists the top metrics");

    // Strata health: the control plane's own metrics (the demo's self-monitoring agent).
    await page.goto(`${base}/#/health`);
    await page.waitForFunction(
      () => {
        const leader = document.querySelector("[data-testid=health-leader-instance]")?.textContent ?? "";
        const term = Number(document.querySelector("[data-testid=health-term]")?.textContent);
        return leader !== "" && leader !== "none" && term >= 1;
      },
      null,
      T,
    );
    // Every ingester, the store, the compactor and the querier scraped and up.
    await page.waitForFunction(
      () => /^(\d+) \/ \1$/.test(document.querySelector("[data-testid=health-targets]")?.textContent ?? "")
        && Number(document.querySelector("[data-testid=health-targets]").textContent.split(" / ")[1]) >= 6,
      null,
      T,
    );
    // Every chart but "rejected samples" has data in a healthy demo (rejections may be none).
    await page.waitForFunction(
      () => document.querySelectorAll("[data-testid=health-panels] [data-testid=plot]").length >= 7,
      null,
      T,
    );
    const leader = await page.textContent("[data-testid=health-leader-instance]");
    const targets = await page.textContent("[data-testid=health-targets]");
    await shot("health");
    step(`Strata health: leader ${leader}, targets up ${targets}, charts drawn`);

  }
  if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
  console.log(`ok: screenshots in ${outDir}`);
} catch (e) {
  await shot("failure").catch(() => {});
  console.error(`FAIL: ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
