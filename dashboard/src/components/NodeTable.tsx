import type { Schemas } from "../api/client";
import { exposure } from "../security";
import { StatusBadge, Time, bytes } from "./ui";

function percent(used: number, total: number): string {
  return total > 0 ? `${String(Math.round((used / total) * 100))}%` : "–";
}

export function NodeTable(props: { nodes: Schemas["Node"][]; compact?: boolean }) {
  return (
    <div className="table-wrap">
      <table>
        <thead>
          <tr>
            <th scope="col">Name</th>
            {props.compact === true ? null : <th scope="col">Address</th>}
            <th scope="col">Status</th>
            <th scope="col">CPU</th>
            <th scope="col">RAM</th>
            {props.compact === true ? null : <th scope="col">Disk</th>}
            <th scope="col">Applied / desired</th>
            {props.compact === true ? null : <th scope="col">Security mode</th>}
            {props.compact === true ? null : <th scope="col">Last seen</th>}
          </tr>
        </thead>
        <tbody>
          {props.nodes.map((node) => {
            const usage = node.usage ?? undefined;
            return (
              <tr key={node.id} data-testid={`node-${node.name}`}>
                <th scope="row">{node.name}</th>
                {props.compact === true ? null : <td>{node.address}</td>}
                <td>
                  <StatusBadge status={node.status} /> <StatusBadge status={node.convergence} />
                  {node.problems.length > 0 ? <span className="muted"> {node.problems.join("; ")}</span> : null}
                </td>
                <td>{usage ? `${usage.cpu_percent.toFixed(0)}%` : "–"}</td>
                <td title={usage ? `${bytes(usage.memory_used_bytes)} of ${bytes(usage.memory_total_bytes)}` : undefined}>
                  {usage ? `${bytes(usage.memory_used_bytes)} (${percent(usage.memory_used_bytes, usage.memory_total_bytes)})` : "–"}
                </td>
                {props.compact === true ? null : (
                  <td>{usage ? percent(usage.disk_used_bytes, usage.disk_total_bytes) : "–"}</td>
                )}
                <td>
                  {node.applied_version} / {node.desired_version}
                </td>
                {props.compact === true ? null : <SecurityCell node={node} />}
                {props.compact === true ? null : (
                  <td>
                    <Time at={node.last_seen_at} />
                  </td>
                )}
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}

function SecurityCell(props: { node: Schemas["Node"] }) {
  const shown = exposure(props.node);
  return (
    <td data-testid={`security-${props.node.name}`}>
      <strong>{shown.mode}</strong> <span className={shown.trouble ? "error-text" : "muted"}>{shown.text}</span>
    </td>
  );
}
