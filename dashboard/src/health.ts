import type { Schemas } from "./api/client";
import { exposure } from "./security";

export interface Problem {
  key: string;
  text: string;
}

const FAILURE_KINDS = new Set(["build.failed", "release.failed", "instance.crash_loop", "instance.unhealthy", "instance.start_failed"]);
const RECENT_MS = 15 * 60_000;

/**
 * What needs a person now: unreachable or degraded servers, and failures of the
 * last 15 minutes that nothing has superseded (a later success of the same
 * service clears them).
 */
export function failing(nodes: Schemas["Node"][], events: Schemas["Event"][], now: number = Date.now()): Problem[] {
  const out: Problem[] = [];
  for (const node of nodes) {
    if (node.status === "unreachable") out.push({ key: `node-${node.id}`, text: `server ${node.name} is unreachable` });
    else if (node.convergence === "degraded")
      out.push({ key: `node-${node.id}`, text: `server ${node.name}: ${node.problems.join("; ") || "degraded"}` });
    const firewall = exposure(node);
    if (firewall.trouble) out.push({ key: `firewall-${node.id}`, text: `server ${node.name} firewall: ${firewall.text}` });
  }
  const settled = new Set<string>();
  // Newest first: a success seen before a failure means the failure is over.
  for (const event of events) {
    const scope = event.service_id ?? event.node_id ?? "";
    if (now - new Date(event.time).getTime() > RECENT_MS) continue;
    if (event.kind === "release.live" || event.kind === "instance.healthy" || event.kind === "build.succeeded") {
      settled.add(scope);
      continue;
    }
    if (FAILURE_KINDS.has(event.kind) && !settled.has(scope)) {
      settled.add(scope);
      out.push({ key: event.id, text: event.message });
    }
  }
  return out;
}
