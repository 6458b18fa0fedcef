// One Server-Sent Events connection for the whole dashboard: every event the
// control plane records invalidates the queries it can change, so every page
// updates without reloads. EventSource reconnects by itself and resends
// Last-Event-ID; on "lagged" we re-read everything.
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
