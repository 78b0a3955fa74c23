import { test, expect, Page, BrowserContext } from "@playwright/test";
import { AppServer } from "./server";

/**
 * Many orders, one connection per browser (spec §11): the tabs of one browser context share
 * one `/stream?order=…`, held by one tab and handed over when it closes; `/my-orders` lists
 * the browser's orders live; the home page's recent orders follow every order live.
 * Plain HTTP/1.1 throughout, where a browser opens at most six connections per site.
 */

let server: AppServer;

test.beforeAll(async () => {
  server = await AppServer.start();
});

test.afterAll(async () => {
  await server.dispose();
});

async function createOrders(count: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    const response = await server.post("/api/orders");
    expect(response.status).toBe(201);
    ids.push((await response.json()).id);
  }
  return ids;
}

async function openStreams(): Promise<number> {
  const text = await (await fetch(`${server.baseURL}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith("order_tracking_open_streams "));
  return Number(line?.split(" ")[1] ?? NaN);
}

/** Samples the server's open streams every 25 ms until stopped; returns the largest seen. */
function sampleOpenStreams(): { stop: () => Promise<number> } {
  let max = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      max = Math.max(max, await openStreams());
      await new Promise((r) => setTimeout(r, 25));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return max;
    },
  };
}

async function openOrderTabs(context: BrowserContext, ids: string[]): Promise<Page[]> {
  const pages: Page[] = [];
  for (const id of ids) {
    const page = await context.newPage();
    await page.goto(`${server.baseURL}/orders/${id}`);
    await page.locator("body[data-hydrated]").waitFor();
    pages.push(page);
  }
  return pages;
}

/** Records what the page announces to screen readers, from now on. */
async function recordAnnouncements(page: Page): Promise<void> {
  await page.evaluate(() => {
    const w = window as any;
    w.__announced = [];
    const announcer = document.querySelector("[data-testid=announcer]")!;
    new MutationObserver(() => w.__announced.push(announcer.textContent)).observe(announcer, {
      childList: true,
      characterData: true,
      subtree: true,
    });
  });
}

async function announcedStatuses(page: Page): Promise<string[]> {
  const texts: string[] = await page.evaluate(() => (window as any).__announced);
  const labels = ["Created", ...AFTER_CREATED];
  return texts
    .filter((t) => t)
    .map((t) => labels.find((label) => t.startsWith(label + " at")) ?? t);
}

/** What a page opened at `Created` announces, once each, in order. */
const AFTER_CREATED = ["Payment confirmed", "Packed", "Shipped", "Out for delivery", "Delivered"];

async function expectCompleted(page: Page): Promise<void> {
  await expect(page.getByTestId("connection")).toHaveText("Completed");
  await expect(page.locator("[data-testid=step][data-state=done]")).toHaveCount(6);
  await expect(page.locator("[data-testid=step] time")).toHaveCount(6);
}

async function roles(pages: Page[]): Promise<(string | null)[]> {
  return Promise.all(pages.map((p) => p.locator("body").getAttribute("data-stream-role")));
}

test("eight order tabs and /my-orders share one connection, and every timeline completes live", async ({
  browser,
}) => {
  const context = await browser.newContext();
  const ids = await createOrders(8);
  const sampler = sampleOpenStreams();
  const pages = await openOrderTabs(context, ids);
  for (const page of pages) {
    await expect(page.getByTestId("connection")).toHaveText("Live");
    await recordAnnouncements(page);
  }
  // One tab holds the stream, the others follow it.
  const held = await roles(pages);
  expect(held.filter((r) => r === "holder")).toHaveLength(1);
  expect(held.filter((r) => r === "follower")).toHaveLength(7);

  const mine = await context.newPage();
  await mine.goto(`${server.baseURL}/my-orders`);
  const rows = mine.getByTestId("my-order");
  await expect(rows).toHaveCount(8);
  // Most recently opened first.
  expect(await rows.evaluateAll((r) => r.map((e) => e.getAttribute("data-order")))).toEqual(
    [...ids].reverse(),
  );
  for (const row of await rows.all()) await expect(row).toHaveAttribute("data-status", "Created");

  for (const id of ids) {
    expect((await server.post(`/orders/${id}/simulate?interval_ms=150`)).status).toBe(202);
  }
  for (const page of pages) await expectCompleted(page);
  for (const row of await rows.all()) {
    await expect(row).toHaveAttribute("data-status", "Delivered");
    await expect(row).toContainText("Delivered");
  }
  const max = await sampler.stop();
  console.log(`largest number of open streams for 9 tabs: ${max}`);
  expect(max).toBe(1);
  // Each tab announced every new status once, in order.
  for (const page of pages) expect(await announcedStatuses(page)).toEqual(AFTER_CREATED);
  await context.close();
});

test("closing the holder tab hands the stream over with nothing missed or repeated", async ({
  browser,
}) => {
  const context = await browser.newContext();
  const ids = await createOrders(8);
  const pages = await openOrderTabs(context, ids);
  for (const page of pages) {
    await expect(page.getByTestId("connection")).toHaveText("Live");
    await recordAnnouncements(page);
  }
  const holderAt = (await roles(pages)).indexOf("holder");
  expect(holderAt).toBeGreaterThanOrEqual(0);
  for (const id of ids) {
    expect((await server.post(`/orders/${id}/simulate?interval_ms=700`)).status).toBe(202);
  }
  // Part-way through, the holder goes away.
  const others = pages.filter((_, i) => i !== holderAt);
  await expect(others[0].locator("[data-testid=step][data-status=Packed]")).toHaveAttribute(
    "data-state",
    /current|done/,
  );
  const closedAt = Date.now();
  await pages[holderAt].close();
  // Another tab takes the lock and opens the stream again from the last id it saw.
  let newHolder: Page | undefined;
  await expect
    .poll(
      async () => {
        const now = await roles(others);
        newHolder = others[now.indexOf("holder")];
        return newHolder ? await newHolder.getByTestId("connection").textContent() : null;
      },
      { intervals: [10], timeout: 10_000 },
    )
    .toMatch(/Live|Completed/);
  const handover = Date.now() - closedAt;
  console.log(`handover: the other tabs were live again ${handover} ms after the holder closed`);
  expect(await openStreams()).toBeLessThanOrEqual(1);

  for (const page of others) await expectCompleted(page);
  for (const page of others) expect(await announcedStatuses(page)).toEqual(AFTER_CREATED);
  await context.close();
});

test("where Web Locks are missing, each tab opens its own stream", async ({ browser }) => {
  const context = await browser.newContext();
  await context.addInitScript(() => {
    Object.defineProperty(Navigator.prototype, "locks", { get: () => undefined });
  });
  const ids = await createOrders(2);
  const pages = await openOrderTabs(context, ids);
  for (const page of pages) await expect(page.getByTestId("connection")).toHaveText("Live");
  expect(await roles(pages)).toEqual(["own", "own"]);
  await expect.poll(openStreams).toBe(2);
  for (const id of ids) {
    expect((await server.post(`/orders/${id}/simulate?interval_ms=0`)).status).toBe(202);
  }
  for (const page of pages) await expectCompleted(page);
  await expect.poll(openStreams).toBe(0);
  await context.close();
});

test("/my-orders says so when this browser has opened no order", async ({ page }) => {
  await page.goto(`${server.baseURL}/my-orders`);
  await expect(page.getByTestId("my-orders-empty")).toContainText("not opened any order");
  await expect(page.getByRole("link", { name: "Track an order" })).toBeVisible();
});

test("the home page's recent orders follow every order live", async ({ page }) => {
  await page.goto(`${server.baseURL}/`);
  await page.locator("body[data-hydrated]").waitFor();
  const [id] = await createOrders(1);
  const row = page.locator(`[data-testid=recent-order][data-order="${id}"]`);
  await expect(row).toHaveAttribute("data-status", "Created");
  await expect(page.getByTestId("recent-order").first()).toHaveAttribute("data-order", id);
  expect((await server.post(`/orders/${id}/simulate?interval_ms=0`)).status).toBe(202);
  await expect(row).toHaveAttribute("data-status", "Delivered");
  await expect(row.locator(".pill")).toHaveText("Delivered");
});

test.describe("without JavaScript", () => {
  test.use({ javaScriptEnabled: false });

  test("/my-orders explains that the list lives in the browser", async ({ page }) => {
    const response = await page.goto(`${server.baseURL}/my-orders`);
    expect(response?.status()).toBe(200);
    await expect(page.getByRole("heading", { name: "Your orders" })).toBeVisible();
    await expect(page.getByTestId("my-orders-waiting")).toContainText("order's own page works");
  });
});
