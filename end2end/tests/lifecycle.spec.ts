import { test, expect, Page } from "@playwright/test";
import { createServer, Server, Socket } from "node:net";
import { AppServer } from "./server";

/**
 * A phone's page and what happens to it (issue 22, item 4): offline and back, frozen in the
 * background and shown again, restored from the back/forward cache, and a connection that
 * dies without a word. Each time the page must show the current state by itself, resuming
 * from its last id, never reloading.
 *
 * The first three tests stop the page's clock (Playwright's fake timers) once it is live, and
 * leave the page with a stream the browser gave up on (the server restarted and answered
 * 503): the page's own retry is a timer, so nothing brings it back but its answer to what
 * the browser tells it.
 */

async function createOrder(server: AppServer): Promise<string> {
  const response = await server.post("/api/orders");
  expect(response.status).toBe(201);
  return (await response.json()).id;
}

async function publish(server: AppServer, id: string, status: string): Promise<void> {
  expect((await server.post(`/api/orders/${id}/status`, { status })).status).toBe(200);
}

const streams = (url: URL) => url.pathname === "/stream";

/**
 * Opens the order's page, stops its timers, and leaves its stream given up: the server
 * restarts while every stream request is answered 503. Then publishes `Packed` (after
 * `PaymentConfirmed`, seen live) and lets streams through again.
 */
async function pageLeftBehind(page: Page, server: AppServer, id: string): Promise<void> {
  await page.clock.install();
  await page.goto(`${server.baseURL}/orders/${id}`);
  await page.locator("body[data-hydrated]").waitFor();
  await expect(page.getByTestId("connection")).toHaveText("Live");
  await publish(server, id, "PaymentConfirmed");
  await expect(page.locator("[data-testid=step][data-status=PaymentConfirmed]")).toHaveAttribute(
    "data-state",
    "current",
  );
  await page.evaluate(() => ((window as any).__sameDocument = true));
  // A little ahead of the page's clock, which keeps running until then: on a busy machine
  // 100 ms passed between reading it and pausing it ("Cannot fast-forward to the past").
  const now = await page.evaluate(() => Date.now());
  await page.clock.pauseAt(now + 500);

  let refused = 0;
  await page.route(streams, (route) => {
    refused += 1;
    return route.fulfill({ status: 503, contentType: "application/json", body: "{}" });
  });
  await server.stop();
  await server.launch();
  // The browser retried, was refused, and gave up: the page's retry waits on a stopped clock.
  await expect.poll(() => refused, { timeout: 15_000 }).toBeGreaterThan(0);
  await expect(page.getByTestId("connection")).toHaveText("Reconnecting…");
  await publish(server, id, "Packed");
  await page.unroute(streams);
  // Nothing happens by itself: the page is stuck until the browser says it is back.
  await new Promise((r) => setTimeout(r, 1_000));
  await expect(page.locator("[data-testid=step][data-status=Packed]")).toHaveAttribute(
    "data-state",
    "pending",
  );
}

/** The page shows `Packed` live, in the same document, from a stream that resumed. */
async function caughtUp(page: Page, resumes: string[]): Promise<void> {
  await expect(page.locator("[data-testid=step][data-status=Packed]")).toHaveAttribute(
    "data-state",
    "current",
    { timeout: 5_000 },
  );
  await expect(page.getByTestId("connection")).toHaveText("Live");
  await expect(page.getByTestId("step").locator("time")).toHaveCount(3);
  expect(await page.evaluate(() => (window as any).__sameDocument)).toBe(true);
  // It resumed after what it had, not from the start.
  expect(resumes.at(-1)).toMatch(/^\d+$/);
}

/** The `last_event_id` of every stream the page opens. */
function watchResumes(page: Page): string[] {
  const resumes: string[] = [];
  page.on("request", (request) => {
    const url = new URL(request.url());
    if (url.pathname === "/stream") resumes.push(url.searchParams.get("last_event_id") ?? "");
  });
  return resumes;
}

test.describe("a page that was away", () => {
  let server: AppServer;
  test.beforeAll(async () => {
    server = await AppServer.start();
  });
  test.afterAll(async () => server.dispose());

  test("back online, it resumes by itself", async ({ page, context }) => {
    const id = await createOrder(server);
    const resumes = watchResumes(page);
    await pageLeftBehind(page, server, id);
    await context.setOffline(true);
    await expect(page.getByTestId("connection")).toHaveText(/Reconnecting…|Offline/);
    await context.setOffline(false);
    await caughtUp(page, resumes);
  });

  test("shown again after being frozen in the background, it resumes by itself", async ({
    page,
  }) => {
    const id = await createOrder(server);
    const resumes = watchResumes(page);
    await pageLeftBehind(page, server, id);
    await page.evaluate(() => document.dispatchEvent(new Event("visibilitychange")));
    await caughtUp(page, resumes);
  });

  test("restored from the back/forward cache, it resumes by itself", async ({ page }) => {
    const id = await createOrder(server);
    const resumes = watchResumes(page);
    await pageLeftBehind(page, server, id);
    await page.evaluate(() =>
      window.dispatchEvent(new PageTransitionEvent("pageshow", { persisted: true })),
    );
    await caughtUp(page, resumes);
  });
});

/**
 * A TCP relay to the server whose stream connections can be frozen: no byte passes either
 * way and neither side is told, as when a NAT forgets a connection or a phone's radio drops
 * it. Other connections, and those made after a freeze, pass.
 */
class Relay {
  private readonly pairs: { client: Socket; upstream: Socket; stream: boolean }[] = [];
  private readonly server: Server;
  baseURL = "";

  private constructor(port: number) {
    this.server = createServer((client) => {
      const upstream = new Socket();
      upstream.connect(port, "127.0.0.1");
      const pair = { client, upstream, stream: false };
      this.pairs.push(pair);
      // What the connection carries now: a stream, or plain requests.
      client.on("data", (chunk: Buffer) => {
        const head = chunk.subarray(0, 16).toString("latin1");
        if (/^[A-Z]+ \//.test(head)) pair.stream = head.startsWith("GET /stream");
      });
      client.pipe(upstream);
      upstream.pipe(client);
      const close = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on("error", close).on("close", close);
      upstream.on("error", close).on("close", close);
    });
  }

  static async to(target: AppServer): Promise<Relay> {
    const relay = new Relay(Number(new URL(target.baseURL).port));
    await new Promise<void>((done) => relay.server.listen(0, "127.0.0.1", done));
    const address = relay.server.address();
    relay.baseURL = `http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}`;
    return relay;
  }

  /** Every open stream connection goes silent, both ways, and stays open. Returns how many. */
  freeze(): number {
    const streams = this.pairs.filter((pair) => pair.stream && !pair.client.destroyed);
    for (const { client, upstream } of streams) {
      client.unpipe(upstream);
      upstream.unpipe(client);
      client.pause();
      upstream.pause();
      client.removeAllListeners("close");
      upstream.removeAllListeners("close");
      client.removeAllListeners("data");
    }
    return streams.length;
  }

  async close(): Promise<void> {
    for (const { client, upstream } of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
    await new Promise((done) => this.server.close(done));
  }
}

test("a stream that died silently is noticed and reopened from the last id", async ({ page }) => {
  // Keep-alives every second: a silence of two is a dead stream.
  const server = await AppServer.start({ KEEPALIVE_SECS: "1" });
  const relay = await Relay.to(server);
  try {
    const id = await createOrder(server);
    const resumes = watchResumes(page);
    await page.goto(`${relay.baseURL}/orders/${id}`);
    await page.evaluate(() => ((window as any).__sameDocument = true));
    await expect(page.getByTestId("connection")).toHaveText("Live");
    await publish(server, id, "PaymentConfirmed");
    await expect(page.locator("[data-testid=step][data-status=PaymentConfirmed]")).toHaveAttribute(
      "data-state",
      "current",
    );
    const opened = resumes.length;

    expect(relay.freeze()).toBe(1);
    await publish(server, id, "Packed");
    await expect(page.locator("[data-testid=step][data-status=Packed]")).toHaveAttribute(
      "data-state",
      "current",
      { timeout: 10_000 },
    );
    await expect(page.getByTestId("connection")).toHaveText("Live");
    expect(resumes.length).toBe(opened + 1);
    expect(resumes.at(-1)).toMatch(/^\d+$/);
    expect(await page.evaluate(() => (window as any).__sameDocument)).toBe(true);
  } finally {
    await relay.close();
    await server.dispose();
  }
});
