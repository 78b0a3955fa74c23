import { spawn, ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

/** The repository's root, where `cargo leptos build` leaves target/site and the binary. */
const ROOT = resolve(__dirname, "..", "..");
const BINARY = process.env.SERVER_BINARY ?? join(ROOT, "target", "debug", "order-tracking");

async function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const probe = createServer();
    probe.once("error", fail);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      const port = typeof address === "object" && address ? address.port : 0;
      probe.close(() => done(port));
    });
  });
}

/** The real server binary on a free loopback port with its own database file. */
export class AppServer {
  readonly baseURL: string;
  private child?: ChildProcess;
  private readonly dir: string;
  public logs = "";

  private constructor(private readonly port: number, env: Record<string, string>) {
    this.baseURL = `http://127.0.0.1:${port}`;
    this.dir = mkdtempSync(join(tmpdir(), "order-tracking-e2e-"));
    this.env = env;
  }
  private env: Record<string, string>;

  static async start(env: Record<string, string> = {}): Promise<AppServer> {
    const server = new AppServer(await freePort(), env);
    await server.launch();
    return server;
  }

  /** Starts (or restarts) the process on the same port and database. */
  async launch(): Promise<void> {
    this.child = spawn(BINARY, [], {
      cwd: ROOT,
      env: {
        ...process.env,
        LEPTOS_SITE_ADDR: `127.0.0.1:${this.port}`,
        LEPTOS_SITE_ROOT: join(ROOT, "target", "site"),
        LEPTOS_OUTPUT_NAME: "order-tracking",
        DATABASE_URL: `sqlite://${join(this.dir, "orders.db")}`,
        RUST_LOG: "warn",
        ...this.env,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child.stdout?.on("data", (chunk) => (this.logs += chunk));
    this.child.stderr?.on("data", (chunk) => (this.logs += chunk));
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      try {
        const response = await fetch(`${this.baseURL}/healthz`);
        if (response.ok) return;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`server did not start:\n${this.logs}`);
  }

  /** Stops the process with `signal` and waits for it to exit. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill(signal);
    await exited;
  }

  async dispose(): Promise<void> {
    await this.stop("SIGKILL");
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** A POST as a back-office system sends it: with the bearer token when the server has one. */
  async post(path: string, body?: unknown): Promise<Response> {
    const headers: Record<string, string> = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    if (this.env.ADMIN_TOKEN) headers["authorization"] = `Bearer ${this.env.ADMIN_TOKEN}`;
    return fetch(`${this.baseURL}${path}`, {
      method: "POST",
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  }
}

export const STATUSES = [
  "Created",
  "PaymentConfirmed",
  "Packed",
  "Shipped",
  "OutForDelivery",
  "Delivered",
];
