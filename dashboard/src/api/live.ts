// One Server-Sent Events connection for the whole dashboard: every event the
// control plane records invalidates the queries it can change, so every page
// updates without reloads. EventSource reconnects by itself and resends
// Last-Event-ID; on "lagged" we re-read everything.
//
// The stream only carries events from the moment the server subscribed it, which
// it marks with "ready". A query answered before that may predate an event the
// stream will never carry (a build that fails between a page's first fetch and
// its stream opening left the release "building" on screen for good): on every
// "ready", what was fetched before it is read again.
import { type QueryClient, useQueryClient } from "@tanstack/react-query";
import { useEffect, useState } from "react";
import type { Schemas } from "./client";
import { keys } from "./queries";

export type LiveState = "connecting" | "live" | "offline";

/** The query keys an event can change; exported for its unit test. */
export function keysFor(event: Pick<Schemas["Event"], "kind" | "service_id" | "project_id">): readonly (readonly unknown[])[] {
  const out: (readonly unknown[])[] = [["events"]];
  const kind = event.kind;
  if (kind.startsWith("node.")) out.push(keys.nodes);
  if (kind.startsWith("project.")) out.push(keys.projects);
  if (event.service_id) out.push(keys.service(event.service_id));
  if (kind.startsWith("service.")) {
    out.push(keys.services, keys.projects);
  }
  if (kind.startsWith("release.") || kind.startsWith("build.") || kind.startsWith("instance.")) {
    out.push(keys.services, keys.nodes);
  }
  return out;
}

/**
 * Re-reads every query whose data is older than `at` (ms since the epoch). A
 * query still being fetched is read again once that fetch ends: invalidating it
 * now would only join the fetch under way, whose answer may be the stale one.
 */
export function refreshOlderThan(client: QueryClient, at: number): Promise<void> {
  const cache = client.getQueryCache();
  const waiting = new Set(cache.findAll({ fetchStatus: "fetching" }).map((query) => query.queryHash));
  if (waiting.size > 0) {
    const unsubscribe = cache.subscribe((event) => {
      if (!waiting.has(event.query.queryHash)) return;
      const ended = event.type === "removed" || event.query.state.fetchStatus === "idle";
      if (!ended) return;
      waiting.delete(event.query.queryHash);
      if (event.type !== "removed") void client.invalidateQueries({ queryKey: event.query.queryKey as readonly unknown[], exact: true });
      if (waiting.size === 0) unsubscribe();
    });
  }
  return client.invalidateQueries({
    predicate: (query) => !waiting.has(query.queryHash) && query.state.dataUpdatedAt < at,
  });
}

function invalidate(client: QueryClient, list: readonly (readonly unknown[])[]): void {
  for (const queryKey of list) void client.invalidateQueries({ queryKey });
}

export function useLiveEvents(enabled: boolean): LiveState {
  const client = useQueryClient();
  const [state, setState] = useState<LiveState>("connecting");
  useEffect(() => {
    if (!enabled) return;
    const source = new EventSource("/api/v1/events/stream");
    source.addEventListener("ready", () => {
      setState("live");
      // Whatever was read or in flight until now may have been read before the
      // server subscribed; what is fetched from here on is covered by the stream.
      void refreshOlderThan(client, Date.now());
    });
    source.addEventListener("event", (message: MessageEvent<string>) => {
      try {
        const event = JSON.parse(message.data) as Schemas["Event"];
        invalidate(client, keysFor(event));
      } catch {
        // A line we cannot read changes nothing we show.
      }
    });
    source.addEventListener("lagged", () => {
      void client.invalidateQueries();
    });
    source.onerror = () => {
      setState(source.readyState === EventSource.CLOSED ? "offline" : "connecting");
    };
    return () => {
      source.close();
    };
  }, [client, enabled]);
  return state;
}
