import { test, expect, Page } from "@playwright/test";
import { AppServer } from "./server";

// A server as it runs in production: with an admin token, so nothing public lists orders.
let server: AppServer;

test.beforeAll(async () => {
  server = await AppServer.start({ ADMIN_TOKEN: "e2e-secret" });
});

test.afterAll(async () => {
  await server.dispose();
});

function watchErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(message.text());
  });
  page.on("pageerror", (error) => errors.push(error.message));
  return errors;
}

async function placeOrder(): Promise<string> {
  const response = await server.post("/api/orders");
  expect(response.status).toBe(201);
  return (await response.json()).id;
}

test("the home page lists no order; a pasted link leads to the order's live page", async ({ page }) => {
  const errors = watchErrors(page);
  const id = await placeOrder();
  const listing = await fetch(`${server.baseURL}/api/orders`);
  expect(listing.status).toBe(401);

  await page.goto(server.baseURL + "/");
  await page.locator("body[data-hydrated]").waitFor();
  await expect(page.getByRole("heading", { name: "Where is my order?" })).toBeVisible();
  await expect(page.getByRole("button", { name: "Place a demo order" })).toHaveCount(0);
  await expect(page.getByText("Recent orders")).toHaveCount(0);
  expect(await page.content()).not.toContain(id.slice(0, 8));

  await page.getByLabel("Track an order").fill(`  ${server.baseURL}/orders/${id}?from=mail `);
  await page.getByRole("button", { name: "Track" }).click();
  await page.waitForURL(`${server.baseURL}/orders/${id}`);
  await expect(page.getByTestId("order-id")).toHaveText(id);
  // Hydrated under the page's Content-Security-Policy, and live.
  await expect(page.getByTestId("connection")).toHaveText("Live");
  expect((await server.post(`/orders/${id}/simulate?interval_ms=0`)).status).toBe(202);
  await expect(page.getByTestId("connection")).toHaveText("Completed");
  await expect(page.locator("[data-testid=step][data-state=done]")).toHaveCount(6);
  expect(errors).toEqual([]);
});

test("a bare order number works too, and a malformed one says so", async ({ page }) => {
  const errors = watchErrors(page);
  const id = await placeOrder();
  await page.goto(server.baseURL + "/");
  await page.getByLabel("Track an order").fill("order 42");
  await page.getByRole("button", { name: "Track" }).click();
  await expect(page.getByTestId("track-error")).toContainText("That is not an order number");
  await expect(page.getByLabel("Track an order")).toHaveValue("order 42");

  await page.getByLabel("Track an order").fill(id.toUpperCase());
  await page.getByRole("button", { name: "Track" }).click();
  await page.waitForURL(`${server.baseURL}/orders/${id}`);
  await expect(page.getByTestId("order-id")).toHaveText(id);
  expect(errors).toEqual([]);
});
