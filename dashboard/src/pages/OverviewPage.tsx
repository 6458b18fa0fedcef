import { Link } from "wouter";
import { useEvents, useNodes, useProjects, useServices } from "../api/queries";
import { EventList } from "../components/EventList";
import { NodeTable } from "../components/NodeTable";
import { QueryState, Section, StatusBadge } from "../components/ui";
import { failing } from "../health";

export function OverviewPage() {
  const nodes = useNodes();
  const projects = useProjects();
  const services = useServices();
  // Enough events to cover the 15 minutes "failing right now" looks at.
  const events = useEvents({ limit: 200 });
  const problems = nodes.data && events.data ? failing(nodes.data, events.data) : null;
  return (
    <div className="page">
      <h1>Overview</h1>
      <Section title="Failing right now">
        {problems === null ? (
          <QueryState error={nodes.error ?? events.error} what="the cluster's state" />
        ) : problems.length === 0 ? (
          <p className="good-text">Nothing is failing.</p>
        ) : (
          <ul className="problems">
            {problems.map((p) => (
              <li key={p.key}>
                <StatusBadge status="error" /> {p.text}
              </li>
            ))}
          </ul>
        )}
      </Section>
      <div className="grid-2">
        <Section title="Servers" actions={<Link href="/servers">All servers</Link>}>
          {nodes.data ? <NodeTable nodes={nodes.data} compact /> : <QueryState error={nodes.error} what="servers" />}
        </Section>
        <Section title="Projects" actions={<Link href="/projects">All projects</Link>}>
          {projects.data && services.data ? (
            projects.data.length === 0 ? (
              <p className="muted">
                No projects yet. <Link href="/projects">Create one</Link>.
              </p>
            ) : (
              <ul className="list">
                {projects.data.map((project) => {
                  const own = services.data.filter((s) => s.project_id === project.id);
                  const live = own.filter((s) => s.current_release).length;
                  return (
                    <li key={project.id}>
                      <Link href={`/projects/${project.id}`}>{project.name}</Link>{" "}
                      <StatusBadge status={own.length === live ? "healthy" : "warning"} />{" "}
                      <span className="muted">
                        {live} of {own.length} services live
                      </span>
                    </li>
                  );
                })}
              </ul>
            )
          ) : (
            <QueryState error={projects.error ?? services.error} what="projects" />
          )}
        </Section>
      </div>
      <Section title="Recent events" actions={<Link href="/events">Timeline</Link>}>
        {events.data ? <EventList events={events.data.slice(0, 15)} /> : <QueryState error={events.error} what="events" />}
      </Section>
    </div>
  );
}
