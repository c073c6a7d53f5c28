/** @jsxImportSource hono/jsx */
/**
 * `GET /dashboard/messages/:id`: envelope, per-recipient attempts with the TLS decision and the peer's reply,
 * the header section, history.
 */

import type { Hono } from "hono";
import type { AdminDeps } from "../deps.ts";
import { Layout, when } from "../dashboard/layout.tsx";
import { ActionLinks } from "./dashboard_messages.tsx";
import type { RecipientExtra, RecipientTls } from "../../outbound/outcome.ts";

const text = (v: unknown) => (typeof v === "string" ? v : v === undefined ? "" : JSON.stringify(v));

/** The TLS decision of a recipient's last attempt: `pkix CV=yes TLS1.3 TLS_AES_256_GCM_SHA384`. */
function tlsText(tls: RecipientTls | undefined): string {
  if (!tls) return "";
  return [tls.policy, `CV=${tls.cv}`, tls.version, tls.cipher].filter(Boolean).join(" ");
}

/** Registers the route. */
export function dashboardMessageRoute(app: Hono, deps: AdminDeps): void {
  app.get("/dashboard/messages/:id", async (c) => {
    const found = await deps.queue.show(c.req.param("id"), { headers: true });
    if (!found) {
      return c.html(
        <Layout title="No such message" hostname={deps.hostname}>
          <p>It may have been delivered or deleted.</p>
        </Layout>,
        404,
      );
    }
    const { item, envelope: e, history, headers, headersError } = found;
    return c.html(
      <Layout title={`Message ${item.id}`} hostname={deps.hostname}>
        <p>
          State <span class={`state state-${item.state}`} id="message-state">{item.state}</span>{" "}
          <ActionLinks item={item} enabled={deps.queue.actions} />
        </p>
        <table>
          <tbody>
            <tr>
              <th>sender</th>
              <td>{e.sender || "<>"}</td>
            </tr>
            <tr>
              <th>received</th>
              <td>{when(e.receivedAt)} from {e.client.helo ?? ""} [{e.client.ip}] ({e.protocol})</td>
            </tr>
            <tr>
              <th>size</th>
              <td>{e.size} octets</td>
            </tr>
            <tr>
              <th>TLS in</th>
              <td>{e.tls ? `${e.tls.version} ${e.tls.cipher}` : "none"}</td>
            </tr>
            <tr>
              <th>AUTH</th>
              <td>{e.auth ? `${e.auth.mechanism} ${e.auth.user}` : "none"}</td>
            </tr>
            <tr>
              <th>DSN</th>
              <td>
                {[e.ret && `RET=${e.ret}`, e.envid && `ENVID=${e.envid}`].filter(Boolean).join(" ") || "—"}
              </td>
            </tr>
          </tbody>
        </table>
        <h2>Recipients</h2>
        <table id="recipients">
          <thead>
            <tr>
              <th>recipient</th>
              <th>status</th>
              <th>attempts</th>
              <th>next attempt</th>
              <th>TLS decision</th>
              <th>host</th>
              <th>peer's reply or error</th>
            </tr>
          </thead>
          <tbody>
            {e.recipients.map((r) => {
              const x = (r.extra ?? {}) as RecipientExtra;
              return (
                <tr>
                  <td>{r.address}</td>
                  <td>{r.status}</td>
                  <td>{r.attempts ?? 0}</td>
                  <td>{when(r.nextAttempt)}</td>
                  <td class="tls">{tlsText(x.tls) || "—"}</td>
                  <td>{x.remoteMta ?? "—"}</td>
                  <td class="reply">{x.reply ?? r.lastError ?? text(x.diagnostic)}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
        <h2>Header</h2>
        {headers === undefined
          ? <p class="muted">{headersError ?? "Not available."}</p>
          : <pre id="headers">{headers}</pre>}
        <h2>History</h2>
        {history.length === 0 ? <p class="muted">No history recorded.</p> : (
          <ul id="history">
            {history.map((h, i) => <li key={i}>{when(h.at)} {h.text}</li>)}
          </ul>
        )}
      </Layout>,
    );
  });
}
