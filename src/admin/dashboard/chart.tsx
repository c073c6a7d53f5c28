/** @jsxImportSource hono/jsx */
/** A server-drawn SVG bar chart of deliveries and deferrals per 10 minutes. */

import type { ActivityBucket } from "../activity.ts";

/** Stacked bars: delivered (green), deferred (orange), bounced (red). */
export function ActivityChart(props: { buckets: ActivityBucket[] }) {
  const w = 900, h = 160, pad = 24;
  const max = Math.max(1, ...props.buckets.map((b) => b.delivered + b.deferred + b.bounced));
  const bw = (w - pad) / props.buckets.length;
  const y = (n: number) => ((h - pad) * n) / max;
  return (
    <svg width={w} height={h} viewBox={`0 0 ${w} ${h}`} role="img" aria-label="Deliveries and deferrals">
      <rect x="0" y="0" width={w} height={h} fill="#fff" />
      <text x="2" y="12" font-size="11" fill="#667">{max}</text>
      {props.buckets.map((b, i) => {
        const x = pad + i * bw;
        const d = y(b.delivered), f = y(b.deferred), x2 = y(b.bounced);
        return (
          <g>
            <title>
              {`${
                new Date(b.start).toISOString().slice(11, 16)
              }Z delivered ${b.delivered}, deferred ${b.deferred}, bounced ${b.bounced}`}
            </title>
            <rect x={x} y={h - pad - d} width={bw - 1} height={d} fill="#2a9d8f" />
            <rect x={x} y={h - pad - d - f} width={bw - 1} height={f} fill="#f4a261" />
            <rect x={x} y={h - pad - d - f - x2} width={bw - 1} height={x2} fill="#e63946" />
          </g>
        );
      })}
      <text x={pad} y={h - 6} font-size="11" fill="#667">
        {props.buckets.length ? new Date(props.buckets[0].start).toISOString().slice(11, 16) + "Z" : ""}
      </text>
      <text x={w - 40} y={h - 6} font-size="11" fill="#667">now</text>
    </svg>
  );
}
