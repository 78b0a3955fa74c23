import { test, expect } from "@playwright/test";
import { spawn, ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

// Several instances, as `make cluster` runs them: scripts/cluster.sh starts a throw-away
// Postgres, Redis, two instances and nginx with deploy/nginx.conf in front of both.
const ROOT = resolve(__dirname, "..", "..");

function portIsFree(port: number): Promise<boolean> {
  return new Promise((done) => {
    const probe = createServer();
    probe.once("error", () => done(false));
    probe.listen(port, "127.0.0.1", () => probe.close(() => done(true)));
  });
}

/** A base port whose neighbours the script uses (+11, +12, +13) are free too. */
async function clusterPort(): Promise<number> {
  for (;;) {
    const base = 20000 + Math.floor(Math.random() * 20000);
    const ports = [base, base + 11, base + 12, base + 13];
    if ((await Promise.all(ports.map(portIsFree))).every(Boolean)) return base;
  }
}

class Cluster {
  child?: ChildProcess;
  logs = "";
  constructor(readonly dir: string, readonly port: number) {}

  read(name: string): number {
    return Number(readFileSync(join(this.dir, name), "utf8").trim());
  }

  get baseURL(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  instanceURL(name: "a" | "b"): string {
    return `http://127.0.0.1:${this.read(`${name}.instance.port`)}`;
  }

  async start(): Promise<void> {
    this.child = spawn(join(ROOT, "scripts", "cluster.sh"), [], {
      cwd: ROOT,
      env: { ...process.env, CLUSTER_PORT: String(this.port), CLUSTER_DIR: this.dir, RUST_LOG: "warn" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child.stdout?.on("data", (chunk) => (this.logs += chunk));
    this.child.stderr?.on("data", (chunk) => (this.logs += chunk));
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      if (existsSync(join(this.dir, "nginx.port"))) return;
      if (this.child.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`the cluster did not start:\n${this.logs}`);
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    if (existsSync(join(this.dir, "cluster.pid"))) {
      process.kill(this.read("cluster.pid"), "SIGTERM");
    } else {
      child.kill("SIGTERM");
    }
    await exited;
    rmSync(this.dir, { recursive: true, force: true });
  }
}

async function openStreams(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith("order_tracking_open_streams "));
  return Number(line?.split(" ")[1]);
}

test("through the cluster's nginx, a page keeps a complete timeline while its instance is killed", async ({
  page,
}) => {
  test.setTimeout(120_000);
  const cluster = new Cluster(mkdtempSync(join(tmpdir(), "order-tracking-cluster-")), await clusterPort());
  await cluster.start();
  try {
    const errors: string[] = [];
    page.on("pageerror", (error) => errors.push(error.message));
    const id = crypto.randomUUID();
    await page.goto(`${cluster.baseURL}/orders/${id}`);
    await expect(page.getByTestId("connection")).toHaveText("Live");

    // Which instance holds the page's stream? The simulation runs on the other one, so that
    // killing the holder loses the connection, not the producer.
    const [a, b] = [cluster.instanceURL("a"), cluster.instanceURL("b")];
    const holder = (await openStreams(a)) === 1 ? "a" : "b";
    const other = holder === "a" ? b : a;
    expect(await openStreams(holder === "a" ? a : b)).toBe(1);
    const simulate = await fetch(`${other}/orders/${id}/simulate?interval_ms=1200`, { method: "POST" });
    expect(simulate.status).toBe(202);
    await expect(page.locator("[data-testid=step][data-status=PaymentConfirmed]")).toHaveAttribute(
      "data-state",
      "current",
    );

    process.kill(cluster.read(`${holder}.instance.pid`), "SIGKILL");
    // The EventSource reconnects through nginx to the live instance with its Last-Event-ID.
    await expect(page.getByTestId("connection")).toHaveText("Completed", { timeout: 30_000 });
    await expect(page.locator("[data-testid=step][data-state=done]")).toHaveCount(6);
    // Each step once, with its time.
    await expect(page.locator("[data-testid=step] time")).toHaveCount(6);
    expect(await openStreams(other)).toBe(0);
    expect(errors).toEqual([]);
  } finally {
    await cluster.stop();
  }
});
