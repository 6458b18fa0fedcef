import type { Schemas } from "../api/client";
import { StatusBadge, Time } from "./ui";

export function EventList(props: { events: Schemas["Event"][]; empty?: string }) {
  if (props.events.length === 0) return <p className="muted">{props.empty ?? "No events yet."}</p>;
  return (
    <ol className="timeline" aria-label="events">
      {props.events.map((event) => (
        <li key={event.id} className={`timeline-item sev-${event.severity}`}>
          <StatusBadge status={event.severity} />
          <code className="kind">{event.kind}</code>
          <span className="message">{event.message}</span>
          <Time at={event.time} />
        </li>
      ))}
    </ol>
  );
}
