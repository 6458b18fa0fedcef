import type { Schemas } from "./api/client";

type Line = Schemas["LogEntry"];

// ESC/CSI/OSC sequences and other C0 controls except tab.
// eslint-disable-next-line no-control-regex
const CONTROL = /\u001b\[[0-?]*[ -/]*[@-~]|\u001b\][^\u0007\u001b]*(\u0007|\u001b\\)?|\u001b[@-_]?|[\u0000-\u0008\u000b-\u001f\u007f\u009b]/g;

/** One log line as plain terminal text: time, source, then the app's text without control sequences. */
export function plainLine(line: Line): string {
  const time = line.at.length >= 19 ? line.at.slice(11, 19) : line.at;
  const text = line.text.replace(CONTROL, "");
  const dim = "\u001b[2m";
  const reset = "\u001b[0m";
  const tone = line.stream === "stderr" ? "\u001b[33m" : "";
  return `${dim}${time} ${line.source}${reset} ${tone}${text}${reset}`;
}

function same(a: Line, b: Line): boolean {
  return a.at === b.at && a.source === b.source && a.text === b.text && a.stream === b.stream;
}

/**
 * The lines of `next` that were not in `previous`. Both are the newest tail of the
 * same logs, oldest first, so the overlap is a suffix of `previous` that is a
 * prefix of `next`.
 */
export function newLines(previous: Line[], next: Line[]): Line[] {
  if (previous.length === 0) return next;
  const last = previous[previous.length - 1];
  if (!last) return next;
  for (let i = next.length - 1; i >= 0; i--) {
    const candidate = next[i];
    if (candidate && same(candidate, last)) {
      // Confirm the overlap backwards, so a repeated line does not fool us.
      let ok = true;
      for (let k = 1; k <= Math.min(i, previous.length - 1); k++) {
        const a = next[i - k];
        const b = previous[previous.length - 1 - k];
        if (!a || !b || !same(a, b)) {
          ok = false;
          break;
        }
      }
      if (ok) return next.slice(i + 1);
    }
  }
  return next;
}
