/**
 * Text from outside (an operator's reason, a scanner's reply or header value) that goes into a log line, a
 * header field, an HTTP header or an SMTP reply must stay on one line.
 */

// deno-lint-ignore no-control-regex
const CONTROLS = /[\x00-\x1f\x7f]+\s*/g;

/**
 * `s` on one line: each run of controls (CR, LF, TAB, NUL, DEL, …) with the white space after it — a folded
 * header's line break and indent — becomes one space; white space at either end is dropped.
 */
export function oneLine(s: string): string {
  return s.replace(CONTROLS, " ").trim();
}
