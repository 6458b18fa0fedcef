import { useEffect, useRef } from "react";
import type { Schemas } from "../api/client";
import { useLogs } from "../api/queries";
import { QueryState, StatusBadge } from "./ui";

const IN_PROGRESS = new Set(["queued", "building", "starting"]);

/** A release's build output, re-read every second while it builds. */
export function BuildLog(props: { serviceId: string; release: Schemas["Release"] }) {
  const follow = IN_PROGRESS.has(props.release.status);
  const logs = useLogs(props.serviceId, { build: props.release.number, follow, tail: 2000 });
  const end = useRef<HTMLPreElement>(null);
  const count = logs.data?.length ?? 0;
  // Keep the newest line in view while the build writes (a DOM effect, not data fetching).
  useEffect(() => {
    if (follow && end.current) end.current.scrollTop = end.current.scrollHeight;
  }, [count, follow]);
  if (!logs.data) {
    // Before the agent starts the build there is no log file yet: that is not an error.
    if (logs.error && follow) return <p className="muted">Waiting for the build to start…</p>;
    return <QueryState error={logs.error} what="the build log" />;
  }
  return (
    <div>
      <p>
        <StatusBadge status={props.release.status} /> {follow ? <span className="muted">following…</span> : null}
      </p>
      <pre className="log" ref={end} data-testid="build-log" tabIndex={0} aria-label={`build log of release ${String(props.release.number)}`}>
        {logs.data.length === 0
          ? follow
            ? "(no output yet)"
            : "(no build output: the release had nothing to build, or the build printed nothing)"
          : logs.data.map((l) => l.text).join("\n")}
      </pre>
    </div>
  );
}
