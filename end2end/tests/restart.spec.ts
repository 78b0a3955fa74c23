import { test, expect } from "@playwright/test";
import { AppServer, STATUSES } from "./server";

test("the page rides out a server crash and restart, showing every step once", async ({ page }) => {
  const server = await AppServer.start();
  try {
    const errors: string[] = [];
    page.on("pageerror", (error) => errors.push(error.message));

    const id = crypto.randomUUID();
    expect((await server.post(`/orders/${id}/simulate?interval_ms=1500`)).status).toBe(202);
    await page.goto(`${server.baseURL}/orders/${id}`);
    await page.evaluate(() => ((window as any).__sameDocument = true));
    await expect(page.getByTestId("connection")).toHaveText("Live");
    await expect(page.locator("[data-testid=step][data-status=Packed]")).not.toHaveAttribute(
      "data-state",
      "pending",
    );

    await server.stop("SIGKILL");
    await expect(page.getByTestId("connection")).toHaveText("Reconnecting…");
    const before = await page.locator("[data-testid=step][data-state=done], [data-testid=step][data-state=current]").count();
    expect(before).toBeLessThan(6);

    await server.launch();
    // The simulation died with the process: run it again; it continues where the order is.
    expect((await server.post(`/orders/${id}/simulate?interval_ms=100`)).status).toBe(202);

    await expect(page.getByTestId("connection")).toHaveText("Completed", { timeout: 30_000 });
    const states = await page.getByTestId("step").evaluateAll((steps) =>
      steps.map((s) => [s.getAttribute("data-status"), s.getAttribute("data-state")]),
    );
    expect(states).toEqual(STATUSES.map((status) => [status, "done"]));
    await expect(page.locator("[data-testid=step] time")).toHaveCount(6);
    expect(await page.evaluate(() => (window as any).__sameDocument)).toBe(true);
    expect(errors).toEqual([]);
  } finally {
    await server.dispose();
  }
});
