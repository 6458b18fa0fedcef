import { useMutation } from "@tanstack/react-query";
import { useState } from "react";
import { api, unwrap } from "../api/client";
import { useNodes } from "../api/queries";
import { NodeTable } from "../components/NodeTable";
import { Button, CopyButton, Notice, QueryState, Section, Time } from "../components/ui";
import { allows, useRole } from "../session";

export function ServersPage() {
  const nodes = useNodes();
  const role = useRole();
  const [known, setKnown] = useState<Set<string> | null>(null);
  const add = useMutation({
    mutationFn: () => unwrap(api.POST("/api/v1/nodes/join-tokens", { body: {} })),
    onMutate: () => {
      // The servers present when the command was made; a new id is the new server.
      setKnown(new Set((nodes.data ?? []).map((n) => n.id)));
    },
  });
  const joined = known ? (nodes.data ?? []).filter((n) => !known.has(n.id)) : [];
  return (
    <div className="page">
      <h1>Servers</h1>
      <Section
        title="Servers in this cluster"
        actions={
          allows(role, "admin") ? (
            <Button
              kind="primary"
              busy={add.isPending}
              onClick={() => {
                add.mutate();
              }}
            >
              Add server
            </Button>
          ) : null
        }
      >
        {add.data ? (
          <div className="join" aria-live="polite">
            <p>
              Run this as root on the new server. It works once, until <Time at={add.data.expires_at} /> (
              {new Date(add.data.expires_at).toLocaleTimeString()}).
            </p>
            <pre className="command" data-testid="join-command">
              {add.data.command}
            </pre>
            <div className="row">
              <CopyButton text={add.data.command} label="Copy command" />
            </div>
            {joined.length > 0 ? (
              <p className="notice notice-success" role="status">
                {joined.map((n) => n.name).join(", ")} joined and {joined.length === 1 ? "is" : "are"} online.
              </p>
            ) : (
              <p className="muted" role="status">
                <span className="spinner" aria-hidden="true" /> Waiting for the new server to come online…
              </p>
            )}
          </div>
        ) : null}
        <Notice error={add.error} />
        {nodes.data ? <NodeTable nodes={nodes.data} /> : <QueryState error={nodes.error} what="servers" />}
      </Section>
    </div>
  );
}
