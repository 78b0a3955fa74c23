// `make bench`: how long a customer on a slow phone waits, after tapping the link, before
// the order's page says "Live" (issue 22, item 3). The release server (hashed, precompressed
// bundle) on a free port with a throw-away database; Debian's Chromium with Chrome DevTools'
// throttling: 150 ms round trip, 1.6 Mbps down, 750 kbps up, the CPU 4x slower. Each run is
// a new browser context (nothing cached), navigating to an order that is on its way; the
// page records when its badge first reads "Live". Prints the median and the spread of RUNS.
//   node end2end/bench/time-to-live.mjs [server binary]   (RUNS, default 7)
//   BASE_URL=http://… node end2end/bench/time-to-live.mjs   (a server already running)
import { chromium } from "@playwright/test";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dirname, "..", "..");
const binary = process.argv[2] ? resolve(process.argv[2]) : join(root, "target", "release", "order-tracking");
const runs = Number(process.env.RUNS ?? 7);

const port = await new Promise((done, fail) => {
  const probe = createServer();
  probe.once("error", fail);
  probe.listen(0, "127.0.0.1", () => {
    const { port } = probe.address();
    probe.close(() => done(port));
  });
});
const base = process.env.BASE_URL ?? `http://127.0.0.1:${port}`;
const dir = mkdtempSync(join(tmpdir(), "time-to-live-"));
const server = process.env.BASE_URL ? null : spawn(binary, [], {
  cwd: root,
  env: {
    ...process.env,
    LEPTOS_SITE_ADDR: `127.0.0.1:${port}`,
    LEPTOS_SITE_ROOT: join(root, "target", "site"),
    LEPTOS_OUTPUT_NAME: "order-tracking",
    DATABASE_URL: `sqlite://${join(dir, "orders.db")}`,
    RUST_LOG: "warn",
  },
  stdio: "ignore",
});
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});

try {
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${base}/healthz`)).ok) break;
    } catch {}
    if (i > 200) throw new Error("the server did not start");
    await new Promise((r) => setTimeout(r, 100));
  }
  const times = [];
  for (let run = 0; run < runs; run++) {
    const order = await (await fetch(`${base}/api/orders`, { method: "POST" })).json();
    const context = await browser.newContext();
    const page = await context.newPage();
    const cdp = await context.newCDPSession(page);
    await cdp.send("Network.enable");
    await cdp.send("Network.setCacheDisabled", { cacheDisabled: true });
    await cdp.send("Network.emulateNetworkConditions", {
      offline: false,
      latency: 150,
      downloadThroughput: (1.6 * 1024 * 1024) / 8,
      uploadThroughput: (750 * 1024) / 8,
    });
    await cdp.send("Emulation.setCPUThrottlingRate", { rate: 4 });
    // The moment the badge first reads "Live", in the page's own clock (0: navigation).
    await page.addInitScript(() => {
      const seen = () => {
        const badge = document.querySelector("[data-testid=connection]");
        if (badge && badge.textContent === "Live" && window.__live === undefined) {
          window.__live = performance.now();
        }
      };
      new MutationObserver(seen).observe(document, {
        subtree: true,
        childList: true,
        characterData: true,
      });
    });
    await page.goto(`${base}/orders/${order.id}`, { waitUntil: "commit" });
    await page.waitForFunction(() => window.__live !== undefined, null, { timeout: 60_000 });
    times.push(await page.evaluate(() => window.__live));
    await context.close();
  }
  times.sort((a, b) => a - b);
  const ms = (t) => `${(t / 1000).toFixed(2)} s`;
  console.log(
    `time to "Live" on a slow phone (150 ms RTT, 1.6 Mbps, CPU x4), order page, ${runs} runs: ` +
      `median ${ms(times[Math.floor(runs / 2)])} (min ${ms(times[0])}, max ${ms(times.at(-1))}; target <= 1.50 s)`,
  );
} finally {
  await browser.close();
  server?.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
}
