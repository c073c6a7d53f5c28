/** @jsxImportSource hono/jsx */
/**
 * `GET/POST /dashboard/login`: a token form; a good token is kept in an HttpOnly, SameSite=Strict cookie
 * scoped to `/dashboard`.
 */

import type { Hono } from "hono";
import { setCookie } from "hono/cookie";
import { csrf } from "hono/csrf";
import type { AdminDeps } from "../deps.ts";
import { TOKEN_COOKIE, tokenMatches } from "../bearer.ts";
import { Layout } from "../dashboard/layout.tsx";
import { readForm } from "../http_error.ts";

function LoginPage(props: { hostname: string; error?: string }) {
  return (
    <Layout title="Sign in" hostname={props.hostname}>
      {props.error ? <p class="err">{props.error}</p> : null}
      <form method="post" action="/dashboard/login">
        <label>
          Admin token <input type="password" name="token" autocomplete="off" size={50} />
        </label>{" "}
        <button class="btn" type="submit">Sign in</button>
      </form>
      <p class="muted">The token is in admin.tokens, or in the spool directory's admin.token file.</p>
    </Layout>
  );
}

/** Registers the routes. */
export function dashboardLoginRoute(app: Hono, deps: AdminDeps): void {
  // The sign-in form is a form like the actions: posts from other origins are refused (403).
  app.use("/dashboard/login", csrf());
  app.get("/dashboard/login", (c) => c.html(<LoginPage hostname={deps.hostname} />));
  app.post("/dashboard/login", async (c) => {
    const form = await readForm(c);
    if (form === undefined) {
      deps.log(`admin: POST /dashboard/login refused: the body is not a form`);
      return c.html(<LoginPage hostname={deps.hostname} error="The form could not be read." />, 400);
    }
    const token = form.token?.trim() ?? "";
    if (!token || !tokenMatches(token, deps.tokens)) {
      return c.html(<LoginPage hostname={deps.hostname} error="That token is not valid." />, 401);
    }
    setCookie(c, TOKEN_COOKIE, token, {
      httpOnly: true,
      sameSite: "Strict",
      // Only the dashboard reads it; /api wants the Authorization header and never sees this cookie.
      path: "/dashboard",
      secure: new URL(c.req.url).protocol === "https:",
    });
    return c.redirect("/dashboard", 303);
  });
}
