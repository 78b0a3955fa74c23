import { test, expect, Page, Route } from "@playwright/test";
import { AppServer } from "./server";

/**
 * The order page starts its own stream while the bundle is on its way (issue 22,
 * `pages/head_start.rs`): the bundle then adopts it, hearing every frame it delivered before,
 * and it stays one connection per browser (spec §11). Each test holds the bundle's
 * WebAssembly back, so that what happens before the bundle runs can be seen.
 */

let server: AppServer;

test.beforeAll(async () => {
  server = await AppServer.start();
});

test.afterAll(async () => {
  await server.dispose();
});

async function createOrder(): Promise<string> {
  const response = await server.post("/api/orders");
  expect(response.status).toBe(201);
  return (await response.json()).id;
}

async function publish(id: string, status: string): Promise<void> {
  expect((await server.post(`/api/orders/${id}/status`, { status })).status).toBe(200);
}

async function openStreams(): Promise<number> {
  const text = await (await fetch(`${server.baseURL}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith("order_tracking_open_streams "));
  return Number(line?.split(" ")[1] ?? NaN);
}

const isStream = (url: string) => new URL(url).pathname === "/stream";

/** Holds the page's WebAssembly back until `release` is called (or aborts it). */
async function holdBundle(page: Page): Promise<{ release: () => void; released: () => boolean }> {
  let release!: () => void;
  let done = false;
  const gate = new Promise<void>((r) => (release = r));
  await page.route(
    (url) => url.pathname.endsWith(".wasm"),
    async (route: Route) => {
      await gate;
      await route.continue();
    },
  );
  return {
    release: () => {
      done = true;
      release();
    },
    released: () => done,
  };
}

/** Every `/stream` request the page makes, from now on. */
function recordStreams(page: Page): string[] {
  const urls: string[] = [];
  page.on("request", (request) => {
    if (isStream(request.url())) urls.push(request.url());
  });
  return urls;
}

test("the page opens its stream before the bundle runs, and the bundle adopts it with what it delivered", async ({
  page,
}) => {
  const id = await createOrder();
  const bundle = await holdBundle(page);
  const streams = recordStreams(page);
  // What the browser's stream receives, seen from outside the page (CDP).
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Network.enable");
  const received: string[] = [];
  cdp.on("Network.eventSourceMessageReceived", (message) => {
    if (message.eventName === "order-update") received.push(message.data);
  });

  await page.goto(`${server.baseURL}/orders/${id}`, { waitUntil: "commit" });
  // The stream opens while the bundle is held back: only the page's own script can open it.
  await expect.poll(() => streams.length).toBe(1);
  expect(bundle.released()).toBe(false);
  expect(streams[0]).toContain(`order=${id}`);
  expect(streams[0]).toContain("heartbeat");
  // An event reaches the browser before the bundle runs…
  await publish(id, "PaymentConfirmed");
  await expect.poll(() => received.some((data) => data.includes("PaymentConfirmed"))).toBe(true);
  await expect(page.getByTestId("connection")).toHaveText("Connecting…");

  // …and once the bundle runs, the page shows it, live, from the same stream.
  bundle.release();
  await page.locator("body[data-hydrated]").waitFor();
  await expect(page.getByTestId("connection")).toHaveText("Live");
  await expect(page.locator("[data-testid=step][data-status=PaymentConfirmed]")).toHaveAttribute(
    "data-state",
    "current",
  );
  await expect(page.locator("body")).toHaveAttribute("data-stream-role", "holder");
  await publish(id, "Packed");
  await expect(page.locator("[data-testid=step][data-status=Packed]")).toHaveAttribute(
    "data-state",
    "current",
  );
  // One stream all along: adopted, never reopened.
  expect(streams).toHaveLength(1);
  await expect.poll(openStreams).toBe(1);
});

test("a second tab opens no stream of its own: it follows the tab that holds it", async ({
  context,
}) => {
  const first = await context.newPage();
  const id = await createOrder();
  await first.goto(`${server.baseURL}/orders/${id}`);
  await expect(first.getByTestId("connection")).toHaveText("Live");

  const second = await context.newPage();
  const bundle = await holdBundle(second);
  const streams = recordStreams(second);
  await second.goto(`${server.baseURL}/orders/${id}`, { waitUntil: "commit" });
  await second.locator("[data-testid=connection]").waitFor();
  bundle.release();
  await second.locator("body[data-hydrated]").waitFor();
  await expect(second.getByTestId("connection")).toHaveText("Live");
  await expect(second.locator("body")).toHaveAttribute("data-stream-role", "follower");
  await publish(id, "PaymentConfirmed");
  await expect(second.locator("[data-testid=step][data-status=PaymentConfirmed]")).toHaveAttribute(
    "data-state",
    "current",
  );
  expect(streams).toHaveLength(0);
  await expect.poll(openStreams).toBe(1);
});

test("a page whose bundle never comes lets the stream and the lock go", async ({ context }) => {
  const stuck = await context.newPage();
  await stuck.clock.install();
  await stuck.route(
    (url) => url.pathname.endsWith(".wasm"),
    (route) => route.abort(),
  );
  const id = await createOrder();
  await stuck.goto(`${server.baseURL}/orders/${id}`);
  await expect.poll(openStreams).toBe(1);

  // While it holds the lock, another tab only follows (and no one relays to it)…
  const other = await context.newPage();
  await other.goto(`${server.baseURL}/orders/${id}`);
  await other.locator("body[data-hydrated]").waitFor();
  await expect(other.locator("body")).toHaveAttribute("data-stream-role", "follower");
  // …until the stuck page gives up on its bundle: then the other tab holds the stream.
  await stuck.clock.runFor(16_000);
  await expect(other.locator("body")).toHaveAttribute("data-stream-role", "holder");
  await expect(other.getByTestId("connection")).toHaveText("Live");
  await expect.poll(openStreams).toBe(1);
});
