import { test, expect, Page, Route } from "@playwright/test";
import { AppServer } from "./server";

/**
 * Retention as a customer meets it (spec §12): an old order's page shows where it got to and
 * when, and a page left open while its orders are compacted ends up showing their final
 * state, whether the server answers its stream with `204` (every order delivered and
 * compacted) or with `reset` first (events it missed are gone).
 */

async function createOrder(server: AppServer): Promise<string> {
  const response = await server.post("/api/orders");
  expect(response.status).toBe(201);
  return (await response.json()).id;
}

async function waitUntilExpired(server: AppServer, id: string): Promise<void> {
  await expect
    .poll(
      async () => (await (await fetch(`${server.baseURL}/api/orders/${id}`)).json()).expired,
      { timeout: 30_000 },
    )
    .toBe(true);
}

/** Opens the order's page (so this browser remembers it), then /my-orders. */
async function myOrdersWith(page: Page, server: AppServer, id: string): Promise<void> {
  await page.goto(`${server.baseURL}/orders/${id}`);
  await expect(page.getByTestId("connection")).toHaveText("Live");
  await page.goto(`${server.baseURL}/my-orders`);
  await expect(page.getByTestId("my-order")).toHaveAttribute("data-status", "Created");
}

/** The browser's shared stream of listed orders. */
const streams = (url: URL) => url.pathname === "/stream";

/** Cuts the page's streams off and makes it lose the one it has: the server restarts. */
async function cutStreams(page: Page, server: AppServer): Promise<void> {
  await page.route(streams, (route) => route.abort());
  await server.stop();
  await server.launch();
}

/**
 * Holds the page's stream requests (the browser keeps waiting, as on a slow network, and
 * never gives up) and makes it lose the one it has: the server restarts. Returns what lets
 * them through, each with the `Last-Event-ID` the browser sent.
 */
async function holdStreams(page: Page, server: AppServer): Promise<() => Promise<void>> {
  const held: Route[] = [];
  await page.route(streams, (route) => {
    held.push(route);
  });
  await server.stop();
  await server.launch();
  return async () => {
    for (const route of held.splice(0)) await route.continue();
    await page.unroute(streams);
  };
}

test.describe("delivered orders compacted after 3 s", () => {
  let server: AppServer;
  test.beforeAll(async () => {
    server = await AppServer.start({ RETAIN_DELIVERED: "3s", RETAIN_IDLE: "off" });
  });
  test.afterAll(async () => server.dispose());

  test("an old order's link shows its final status and its time, without the steps", async ({
    page,
  }) => {
    const id = await createOrder(server);
    expect((await server.post(`/orders/${id}/simulate?interval_ms=0&wait=true`)).status).toBe(200);
    await waitUntilExpired(server, id);
    await page.goto(`${server.baseURL}/orders/${id}`);
    await expect(page.getByTestId("final-status")).toHaveText(/^Delivered on .+/);
    await expect(page.getByTestId("history-gone")).toContainText("no longer kept");
    await expect(page.getByTestId("step")).toHaveCount(0);
  });

  test("/my-orders shows the final state of an order delivered and compacted while it was cut off", async ({
    page,
  }) => {
    const id = await createOrder(server);
    await myOrdersWith(page, server, id);
    await cutStreams(page, server);
    expect((await server.post(`/orders/${id}/simulate?interval_ms=0&wait=true`)).status).toBe(200);
    await waitUntilExpired(server, id);
    // Back: the stream resumes after Created and the server answers 204.
    await page.unroute(streams);
    const row = page.getByTestId("my-order");
    await expect(row).toHaveAttribute("data-status", "Delivered", { timeout: 30_000 });
    await expect(row).toContainText("Delivered");
  });
});

test.describe("idle orders compacted after 12 s", () => {
  let server: AppServer;
  test.beforeAll(async () => {
    server = await AppServer.start({ RETAIN_DELIVERED: "off", RETAIN_IDLE: "12s" });
  });
  test.afterAll(async () => server.dispose());

  test("/my-orders keeps showing an order's final state after a reset", async ({ page }) => {
    const id = await createOrder(server);
    await myOrdersWith(page, server, id);
    // Held, not failed: the browser does not give up (which reads the orders again by
    // itself), so only the `reset` can tell it what it missed.
    const release = await holdStreams(page, server);
    expect((await server.post(`/api/orders/${id}/status`, { status: "PaymentConfirmed" })).status).toBe(200);
    await waitUntilExpired(server, id);
    // Back: the stream resumes after Created, before the compacted PaymentConfirmed, and
    // starts with `reset`; the page reads the order again.
    const reset = page.waitForEvent("requestfinished", {
      predicate: (request) => new URL(request.url()).pathname === `/api/orders/${id}`,
      timeout: 30_000,
    });
    await release();
    await reset;
    const row = page.getByTestId("my-order");
    await expect(row).toHaveAttribute("data-status", "PaymentConfirmed");
    // And keeps it: nothing replaces it with an empty timeline.
    await page.waitForTimeout(1_000);
    await expect(row).toHaveAttribute("data-status", "PaymentConfirmed");
  });
});
