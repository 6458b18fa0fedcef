import { useMutation, useQueryClient } from "@tanstack/react-query";
import { Link, useLocation } from "wouter";
import { api, unwrap } from "../api/client";
import { keys, useProject, useServices } from "../api/queries";
import { ConfirmButton, Notice, QueryState, Section, StatusBadge } from "../components/ui";
import { allows, useRole } from "../session";

export function ProjectPage(props: { id: string }) {
  const project = useProject(props.id);
  const services = useServices();
  const role = useRole();
  const client = useQueryClient();
  const [, setLocation] = useLocation();
  const remove = useMutation({
    mutationFn: () => unwrap(api.DELETE("/api/v1/projects/{id}", { params: { path: { id: props.id } } })),
    onSuccess: async () => {
      await client.invalidateQueries({ queryKey: keys.projects });
      setLocation("/projects");
    },
  });
  if (!project.data) return <QueryState error={project.error} what="the project" />;
  const own = (services.data ?? []).filter((s) => s.project_id === props.id);
  const canEdit = allows(role, "deployer");
  return (
    <div className="page">
      <nav aria-label="Breadcrumb" className="crumbs">
        <Link href="/projects">Projects</Link> / <span>{project.data.name}</span>
      </nav>
      <h1>{project.data.name}</h1>
      <Section
        title="Services"
        actions={
          canEdit ? (
            <Link className="btn btn-primary" href={`/projects/${props.id}/services/new`}>
              New service
            </Link>
          ) : null
        }
      >
        {own.length === 0 ? (
          <p className="muted">No services in this project yet.</p>
        ) : (
          <ul className="list">
            {own.map((s) => (
              <li key={s.id}>
                <Link href={`/services/${s.id}`}>{s.name}</Link>{" "}
                <StatusBadge status={s.current_release ? "live" : "queued"} />{" "}
                <span className="muted">{s.source.git}</span>
              </li>
            ))}
          </ul>
        )}
      </Section>
      {canEdit ? (
        <Section title="Danger zone">
          <Notice error={remove.error} />
          <ConfirmButton
            question={`Delete project ${project.data.name}? Its services must be deleted first.`}
            confirmLabel="Delete project"
            busy={remove.isPending}
            onConfirm={() => {
              remove.mutate();
            }}
          >
            Delete project
          </ConfirmButton>
        </Section>
      ) : null}
    </div>
  );
}
