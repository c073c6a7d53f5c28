/**
 * The admin HTTP app (Hono): health, readiness and metrics open; everything under `/api` and the dashboard
 * behind a bearer token. Errors are JSON `{ error }` with a fitting status; an unexpected error is a 500
 * whose detail goes to the log only.
 */

import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { HTTPException } from "hono/http-exception";
import type { AdminDeps } from "./deps.ts";
import { requireToken } from "./bearer.ts";
import { jsonError } from "./http_error.ts";
import { healthzRoute } from "./routes/healthz.ts";
import { readyzRoute } from "./routes/readyz.ts";
import { metricsRoute } from "./routes/metrics.ts";
import { configRoute } from "./routes/config.ts";
import { errorMessage } from "../core/error_message.ts";
import { queueSummaryRoute } from "./routes/queue_summary.ts";
import { queueListRoute } from "./routes/queue_list.ts";
import { queueShowRoute } from "./routes/queue_show.ts";
import { queueActionRoute } from "./routes/queue_action.ts";
import { queueFlushRoute } from "./routes/queue_flush.ts";
import { queueBatchRoute } from "./routes/queue_batch.ts";
import { dashboardGuard } from "./dashboard/guard.ts";
import { dashboardLoginRoute } from "./routes/dashboard_login.tsx";
import { dashboardOverviewRoute } from "./routes/dashboard_overview.tsx";
import { dashboardMessagesRoute } from "./routes/dashboard_messages.tsx";
import { dashboardMessageRoute } from "./routes/dashboard_message.tsx";
import { dashboardActionRoute } from "./routes/dashboard_action.tsx";
import { dashboardTlsRoute } from "./routes/dashboard_tls.tsx";

/**
 * Largest request body the admin listener reads, in octets: a batch action's 1,000 ids and a reason fit ten
 * times over. Checked before the token, so that nobody (the login form needs none) can make Ferry buffer more.
 */
export const ADMIN_BODY_MAX = 256 * 1024;

/** Builds the app. */
export function createAdminApp(deps: AdminDeps): Hono {
  const app = new Hono();
  app.use(
    "*",
    bodyLimit({
      maxSize: ADMIN_BODY_MAX,
      onError: (c) => {
        deps.log(`admin: ${c.req.method} ${c.req.path} refused: body over ${ADMIN_BODY_MAX} octets`);
        c.header("Connection", "close");
        return jsonError(c, 413, `request body over ${ADMIN_BODY_MAX} octets`);
      },
    }),
  );
  healthzRoute(app);
  readyzRoute(app, deps);
  metricsRoute(app, deps);
  app.use("/api/*", requireToken(deps.tokens));
  configRoute(app, deps);
  queueSummaryRoute(app, deps);
  queueListRoute(app, deps);
  queueShowRoute(app, deps);
  queueActionRoute(app, deps);
  queueFlushRoute(app, deps);
  queueBatchRoute(app, deps);
  app.use("/dashboard", dashboardGuard(deps.tokens));
  app.use("/dashboard/*", dashboardGuard(deps.tokens));
  dashboardLoginRoute(app, deps);
  dashboardOverviewRoute(app, deps);
  dashboardMessagesRoute(app, deps);
  dashboardActionRoute(app, deps);
  dashboardMessageRoute(app, deps);
  dashboardTlsRoute(app, deps);
  app.get("/", (c) => c.redirect("/dashboard", 303));
  app.notFound((c) => jsonError(c, 404, "not found"));
  app.onError((err, c) => {
    // A refusal a middleware chose (hono/csrf's 403 for a cross-origin form) is its answer, not our failure.
    if (err instanceof HTTPException) return err.getResponse();
    deps.log(`admin: ${c.req.method} ${c.req.path} failed: ${errorMessage(err)}`);
    return jsonError(c, 500, "internal error");
  });
  return app;
}
