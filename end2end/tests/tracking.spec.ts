import { test, expect, Page, ConsoleMessage } from "@playwright/test";
import { AppServer, STATUSES } from "./server";

let server: AppServer;

test.beforeAll(async () => {
  server = await AppServer.start();
});

test.afterAll(async () => {
  await server.dispose();
});

/** Collects what the page reports as errors: console errors and uncaught exceptions. */
function watchErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on("console", (message: ConsoleMessage) => {
    if (message.type() === "error") errors.push(message.text());
  });
  page.on("pageerror", (error) => errors.push(error.message));
  return errors;
}

test("a demo order placed from the home page fills its timeline live", async ({ page }) => {
  const errors = watchErrors(page);
  await page.goto(server.baseURL + "/");
  await expect(page.getByRole("heading", { name: "Where is my order?" })).toBeVisible();
  // Wait for hydration, so the click goes through the app rather than a plain form post.
  await page.locator("body[data-hydrated]").waitFor();

  await page.getByRole("button", { name: "Place a demo order" }).click();
  await page.waitForURL(/\/orders\/[0-9a-f-]{36}$/);
  // Mark this document: a reload would lose the mark.
  await page.evaluate(() => ((window as any).__sameDocument = true));

  const steps = page.getByTestId("step");
  await expect(steps).toHaveCount(6);
  await expect(page.getByTestId("connection")).toHaveText("Live");
  // Some step becomes current while later ones are still pending: it is live, not preloaded.
  await expect(page.locator('[data-testid=step][data-state=pending]').first()).toBeVisible();
  await expect(page.locator('[data-testid=step][data-status=Packed]')).toHaveAttribute("data-state", "current");

  for (const status of STATUSES) {
    await expect(page.locator(`[data-testid=step][data-status=${status}]`)).toHaveAttribute(
      "data-state",
      "done",
    );
  }
  await expect(page.getByTestId("connection")).toHaveText("Completed");
  await expect(page.locator("[data-testid=step] time")).toHaveCount(6);
  await expect(page.getByTestId("announcer")).toContainText("Delivered");
  // The progress bar is full: its width comes from the stylesheet, not an inline style.
  await expect
    .poll(() =>
      page.locator(".progress-bar").evaluate((bar) => {
        const track = bar.parentElement!.getBoundingClientRect().width;
        return Math.round((bar.getBoundingClientRect().width / track) * 100);
      }),
    )
    .toBe(100);
  expect(await page.evaluate(() => (window as any).__sameDocument)).toBe(true);
  expect(errors).toEqual([]);
});

test("the recent orders on the home page link to their pages", async ({ page }) => {
  const errors = watchErrors(page);
  const response = await server.post("/api/orders");
  expect(response.status).toBe(201);
  const order = await response.json();
  await page.goto(server.baseURL + "/");
  const link = page.locator(`a[href="/orders/${order.id}"]`);
  await expect(link).toContainText("Created");
  await link.click();
  await expect(page.getByTestId("order-id")).toHaveText(order.id);
  await expect(page.locator("[data-testid=step][data-status=Created]")).toHaveAttribute(
    "data-state",
    "current",
  );
  expect(errors).toEqual([]);
});

test("an unknown order shows a clear message, then appears live once placed", async ({ page }) => {
  const id = crypto.randomUUID();
  const response = await page.goto(`${server.baseURL}/orders/${id}`);
  expect(response?.status()).toBe(404);
  await expect(page.getByTestId("not-found")).toContainText("can't find an order");
  await expect(page.getByTestId("connection")).toHaveText("Live");
  expect((await server.post(`/orders/${id}/simulate?interval_ms=0`)).status).toBe(202);
  await expect(page.getByTestId("connection")).toHaveText("Completed");
  await expect(page.getByTestId("not-found")).toHaveCount(0);
  await expect(page.locator("[data-testid=step][data-state=done]")).toHaveCount(6);
});

test("a malformed order id says so", async ({ page }) => {
  const response = await page.goto(`${server.baseURL}/orders/not-an-order`);
  expect(response?.status()).toBe(404);
  await expect(page.getByRole("heading", { name: "That is not an order number" })).toBeVisible();
});

test.describe("without JavaScript", () => {
  test.use({ javaScriptEnabled: false });

  test("a delivered order's page shows all six steps done", async ({ page }) => {
    const order = await (await server.post("/api/orders")).json();
    const done = await server.post(`/orders/${order.id}/simulate?interval_ms=0&wait=true`);
    expect(done.status).toBe(200);

    await page.goto(`${server.baseURL}/orders/${order.id}`);
    await expect(page.getByTestId("order-id")).toHaveText(order.id);
    const states = await page.getByTestId("step").evaluateAll((steps) =>
      steps.map((s) => [s.getAttribute("data-status"), s.getAttribute("data-state")]),
    );
    expect(states).toEqual(STATUSES.map((status) => [status, "done"]));
    await expect(page.getByTestId("connection")).toHaveText("Completed");
    await expect(page.locator("[data-testid=step] time")).toHaveCount(6);
  });

  test("an order in progress reads right: done, current, pending", async ({ page }) => {
    const order = await (await server.post("/api/orders")).json();
    await server.post(`/api/orders/${order.id}/status`, { status: "PaymentConfirmed" });
    await server.post(`/api/orders/${order.id}/status`, { status: "Packed" });
    await page.goto(`${server.baseURL}/orders/${order.id}`);
    const states = await page.getByTestId("step").evaluateAll((steps) =>
      steps.map((s) => s.getAttribute("data-state")),
    );
    expect(states).toEqual(["done", "done", "current", "pending", "pending", "pending"]);
    await expect(page.getByTestId("connection")).toHaveText("Connecting…");
  });
});
