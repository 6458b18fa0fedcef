import { useEffect, useRef, useState } from "react";
import type { Schemas } from "../api/client";
import { useLogStream } from "../api/logStream";
import { StatusBadge } from "./ui";

type Line = Schemas["LogEntry"];

/** Lines kept on the page; the full output stays on the server (`nanoscale logs --build N`). */
const KEEP = 5000;

/**
 * A release's build output, streamed while it builds (the stream ends with the
 * build). The parent keys it by release number, so another release starts afresh.
 */
export function BuildLog(props: { serviceId: string; release: Schemas["Release"] }) {
  const [lines, setLines] = useState<Line[]>([]);
  const stream = useLogStream(props.serviceId, { build: props.release.number, tail: 2000, enabled: true }, (fresh) => {
    setLines((old) => [...old, ...fresh].slice(-KEEP));
  });
  const following = stream.state === "live";
  const end = useRef<HTMLPreElement>(null);
  // Keep the newest line in view while the build writes (a DOM effect, not data fetching).
  useEffect(() => {
    if (following && end.current) end.current.scrollTop = end.current.scrollHeight;
  }, [lines.length, following]);
  return (
    <div>
      <p>
        <StatusBadge status={props.release.status} /> {following ? <span className="muted">following…</span> : null}
      </p>
      {stream.state === "offline" ? (
        <p className="error-text" role="alert">
          The build log is not available; reload the page to try again.
        </p>
      ) : null}
      <pre className="log" ref={end} data-testid="build-log" tabIndex={0} aria-label={`build log of release ${String(props.release.number)}`}>
        {lines.length === 0
          ? stream.state === "ended"
            ? "(no build output: the release had nothing to build, or the build printed nothing)"
            : "(no output yet)"
          : lines.map((l) => l.text).join("\n")}
      </pre>
    </div>
  );
}
