import { useState } from "react";
import { useEvents } from "../api/queries";
import { EventList } from "../components/EventList";
import { QueryState, Section, Select } from "../components/ui";

const KINDS = ["all", "release.", "build.", "instance.", "node.", "service.", "project.", "cluster."] as const;
type Kind = (typeof KINDS)[number];

/** The cluster's timeline; new events arrive through the live stream. */
export function EventsPage() {
  const [kind, setKind] = useState<Kind>("all");
  const events = useEvents(kind === "all" ? { limit: 200 } : { kind, limit: 200 });
  return (
    <div className="page">
      <h1>Events</h1>
      <Section title="Timeline" actions={<Select label="Kind" name="kind" value={kind} options={KINDS} onChange={setKind} />}>
        {events.data ? <EventList events={events.data} empty="No events match." /> : <QueryState error={events.error} what="events" />}
      </Section>
    </div>
  );
}
