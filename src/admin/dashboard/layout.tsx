/** @jsxImportSource hono/jsx */
/** The dashboard's page frame: inline style sheet, navigation; no scripts, no external resources. */

import type { Child } from "hono/jsx";

const STYLE = `
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{background:#1d3557;color:#fff;padding:10px 20px;display:flex;gap:24px;align-items:center}
header a{color:#fff;text-decoration:none}header strong{font-size:16px;margin-right:12px}
main{padding:20px;max-width:1200px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #dde1e7;padding:6px 8px;text-align:left;vertical-align:top}
pre{background:#fff;border:1px solid #dde1e7;padding:8px;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
th{background:#eef1f5}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:20px}
.card{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:12px 18px;min-width:110px}
.card b{display:block;font-size:26px}
.state{display:inline-block;padding:1px 8px;border-radius:10px;background:#e3e7ee}
.state-hold{background:#ffe8a3}.state-deferred{background:#ffd3c2}.state-corrupt{background:#f7b6b6}
.btn{display:inline-block;padding:3px 10px;border:1px solid #1d3557;border-radius:4px;color:#1d3557;
text-decoration:none;background:#fff;margin-right:4px;cursor:pointer;font-size:13px}
.btn.danger{border-color:#b00020;color:#b00020}
form.inline{display:inline}.muted{color:#667}.err{color:#b00020}
.notice{background:#e6f4ea;border:1px solid #9ccfa9;border-radius:4px;padding:8px 12px}
`;

/** A whole page. */
export function Layout(props: { title: string; hostname: string; children?: Child }) {
  return (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <title>{props.title} — Ferry {props.hostname}</title>
        <style>{STYLE}</style>
      </head>
      <body>
        <header>
          <strong>Ferry {props.hostname}</strong>
          <a href="/dashboard">Overview</a>
          <a href="/dashboard/messages">Messages</a>
          <a href="/dashboard/tls">TLS by destination</a>
        </header>
        <main>
          <h1>{props.title}</h1>
          {props.children}
        </main>
      </body>
    </html>
  );
}

/** Formats a time for tables (UTC, to the second). */
export function when(ms?: number): string {
  return ms === undefined ? "—" : new Date(ms).toISOString().replace("T", " ").slice(0, 19) + "Z";
}
