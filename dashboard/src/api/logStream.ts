// A service's logs, live: one EventSource on /api/v1/services/{id}/logs/stream.
// The server sends the newest lines first, then each new one; EventSource
// reconnects by itself after a broken connection and the server then repeats the
// newest lines, so `Seen` lets each line through once. An `end` message (the build
// is over, the service was removed) closes the source for good.
import { useEffect, useRef, useState } from "react";
import type { Schemas } from "./client";

type Line = Schemas["LogEntry"];

export type LogStreamState = "connecting" | "live" | "ended" | "offline";

/**
 * What a follower has let through: the newest time and the lines at it (the
 * times are RFC 3339 UTC with milliseconds, so their text sorts as they do).
 * The same rule as `nanoscale_core::logs::Seen`.
 */
export class Seen {
  private newest = "";
  private atNewest = new Set<string>();

  admit(line: Line): boolean {
    const key = JSON.stringify([line.source, line.stream, line.text]);
    if (line.at < this.newest) return false;
    if (line.at === this.newest) {
      if (this.atNewest.has(key)) return false;
      this.atNewest.add(key);
      return true;
    }
    this.newest = line.at;
    this.atNewest = new Set([key]);
    return true;
  }
}

export function logStreamUrl(id: string, opts: { build?: number; tail: number }): string {
  const query = new URLSearchParams({ tail: String(opts.tail) });
  if (opts.build !== undefined) query.set("build", String(opts.build));
  return `/api/v1/services/${encodeURIComponent(id)}/logs/stream?${query.toString()}`;
}

/** Lines are handed over in batches at most this often, not one render per line. */
const FLUSH_MS = 50;

/**
 * Follows a service's logs (or one build's with `build`) while `enabled`, calling
 * `onLines` with each batch of new lines. Turning `enabled` off and on again
 * (pause, resume) catches up without repeating lines.
 */
export function useLogStream(
  id: string,
  opts: { build?: number; tail: number; enabled: boolean },
  onLines: (lines: Line[]) => void,
): { state: LogStreamState; endReason: string | null } {
  const [state, setState] = useState<LogStreamState>("connecting");
  const [endReason, setEndReason] = useState<string | null>(null);
  const callback = useRef(onLines);
  useEffect(() => {
    callback.current = onLines;
  });
  const seen = useRef<{ key: string; seen: Seen } | null>(null);
  const { build, tail, enabled } = opts;
  useEffect(() => {
    if (!enabled) return;
    const key = `${id}/${String(build)}`;
    if (seen.current?.key !== key) seen.current = { key, seen: new Seen() };
    const filter = seen.current.seen;
    let pending: Line[] = [];
    let timer: ReturnType<typeof setTimeout> | null = null;
    const flush = () => {
      timer = null;
      const lines = pending;
      pending = [];
      if (lines.length) callback.current(lines);
    };
    const source = new EventSource(logStreamUrl(id, { build, tail }));
    source.addEventListener("ready", () => {
      setState("live");
    });
    source.addEventListener("log", (message: MessageEvent<string>) => {
      try {
        const line = JSON.parse(message.data) as Line;
        if (!filter.admit(line)) return;
        pending.push(line);
        timer ??= setTimeout(flush, FLUSH_MS);
      } catch {
        // A message we cannot read is not shown.
      }
    });
    source.addEventListener("end", (message: MessageEvent<string>) => {
      source.close();
      flush();
      let reason = "the stream ended";
      try {
        reason = (JSON.parse(message.data) as { reason?: string }).reason ?? reason;
      } catch {
        // Keep the plain reason.
      }
      setEndReason(reason);
      setState("ended");
    });
    source.onerror = () => {
      setState(source.readyState === EventSource.CLOSED ? "offline" : "connecting");
    };
    return () => {
      source.close();
      if (timer) clearTimeout(timer);
      flush();
    };
  }, [id, build, tail, enabled]);
  return { state, endReason };
}
