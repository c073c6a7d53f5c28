/** @jsxImportSource hono/jsx */
/** `GET /dashboard`: counts by queue state and deliveries/deferrals over the last six hours. */

import type { Hono } from "hono";
import type { AdminDeps } from "../deps.ts";
import { Layout } from "../dashboard/layout.tsx";
import { ActivityChart } from "../dashboard/chart.tsx";

/** Registers the route. */
export function dashboardOverviewRoute(app: Hono, deps: AdminDeps): void {
  app.get("/dashboard", async (c) => {
    const { byState: counts, byDomain } = await deps.queue.summary();
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    const series = deps.activity.series(6);
    const sum = (k: "delivered" | "deferred" | "bounced") => series.reduce((a, b) => a + b[k], 0);
    return c.html(
      <Layout title="Queue overview" hostname={deps.hostname}>
        <div class="cards">
          <div class="card" id="count-total">
            <b>{total}</b>messages queued
          </div>
          {Object.entries(counts).map(([state, n]) => (
            <a class="card" id={`count-${state}`} href={`/dashboard/messages?state=${state}`}>
              <b>{n}</b>
              {state}
            </a>
          ))}
        </div>
        <h2>Queued by destination</h2>
        {byDomain.length === 0 ? <p class="muted">No recipient is pending.</p> : (
          <table id="by-domain">
            <thead>
              <tr>
                <th>domain</th>
                <th>messages</th>
                <th>recipients</th>
              </tr>
            </thead>
            <tbody>
              {byDomain.slice(0, 20).map((d) => (
                <tr>
                  <td>
                    <a href={`/dashboard/messages?domain=${encodeURIComponent(d.domain)}`}>{d.domain}</a>
                  </td>
                  <td>{d.messages}</td>
                  <td>{d.recipients}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
        <h2>Last six hours</h2>
        <p>
          delivered <b id="sum-delivered">{sum("delivered")}</b>, deferred{" "}
          <b id="sum-deferred">{sum("deferred")}</b>, bounced <b id="sum-bounced">{sum("bounced")}</b>{" "}
          (recipient attempts, 10-minute bars)
        </p>
        <ActivityChart buckets={series} />
      </Layout>,
    );
  });
}
