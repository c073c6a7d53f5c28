/** @jsxImportSource hono/jsx */
/** `GET /dashboard/tls`: the last TLS outcome per destination domain since start. */

import type { Hono } from "hono";
import type { AdminDeps } from "../deps.ts";
import { Layout, when } from "../dashboard/layout.tsx";

/** Registers the route. */
export function dashboardTlsRoute(app: Hono, deps: AdminDeps): void {
  app.get("/dashboard/tls", (c) => {
    const rows = deps.activity.destinations();
    return c.html(
      <Layout title="TLS by destination" hostname={deps.hostname}>
        <p class="muted">
          Last attempt per recipient domain since start. Policy: the security decision (dane,
          mta-sts(enforce), pkix, opportunistic, none, …). CV: yes (PKIX), dane, no (unverified), none
          (cleartext).
        </p>
        <table id="tls">
          <thead>
            <tr>
              <th>destination</th>
              <th>host</th>
              <th>policy</th>
              <th>CV</th>
              <th>TLS</th>
              <th>last seen</th>
              <th>attempts by CV</th>
              <th>last reply</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((d) => (
              <tr>
                <td>{d.destination}</td>
                <td>{d.host ?? "—"}</td>
                <td>{d.policy ?? "—"}</td>
                <td>
                  <span class={`state state-cv-${d.cv}`}>{d.cv}</span>
                </td>
                <td>{d.version ? `${d.version} ${d.cipher ?? ""}` : "none"}</td>
                <td>{when(d.at)}</td>
                <td>{Object.entries(d.counts).map(([k, n]) => `${k} ${n}`).join(", ")}</td>
                <td>{d.text}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </Layout>,
    );
  });
}
