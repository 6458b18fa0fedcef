import type { Schemas } from "./api/client";

/** A node's firewall as one line: the mode in force, what is open, and why it differs from the mode asked for. */
export function exposure(node: Pick<Schemas["Node"], "security_mode" | "firewall">): { mode: string; text: string; trouble: boolean } {
  const firewall = node.firewall;
  if (!firewall) return { mode: node.security_mode, text: "not reported yet", trouble: false };
  const ports = firewall.open_tcp_ports;
  let open: string;
  if (ports === undefined || ports === null) open = "every port open";
  else if (ports.length === 0) open = "nothing open inbound";
  else open = `TCP ${ports.join(", ")} open`;
  const from = firewall.ssh_from ?? [];
  if (from.length > 0 && firewall.mode === "B") open += ` (SSH from ${from.join(", ")})`;
  const trouble = firewall.status === "reverted" || firewall.status === "failed" || firewall.status === "unavailable";
  const parts = [open];
  if (firewall.status !== "applied") parts.unshift(firewall.status);
  if (firewall.mode !== node.security_mode) parts.push(`${node.security_mode} asked for`);
  if (trouble && firewall.message) parts.push(firewall.message);
  return { mode: firewall.mode, text: parts.join(" · "), trouble };
}
