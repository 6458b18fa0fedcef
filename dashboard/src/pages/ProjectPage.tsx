import { useMutation, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { Link, useLocation } from "wouter";
import { api, type Schemas, unwrap } from "../api/client";
import { keys, useProject, useServices } from "../api/queries";
import { Button, ConfirmButton, Field, Notice, QueryState, Section, StatusBadge } from "../components/ui";
import { ProjectAccess } from "../components/Access";
import { fieldError, isFormLevel } from "../forms";
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
      {canEdit ? <ProjectSettings key={project.data.id} project={project.data} /> : null}
      {canEdit ? <ProjectAccess projectId={props.id} admin={allows(role, "admin")} /> : null}
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

interface EnvRow {
  name: string;
  value: string;
}

/**
 * The project's name and the variables every service of it gets (a service's own
 * win). Starts from the project as it was when the page opened.
 */
export function ProjectSettings(props: { project: Schemas["Project"] }) {
  const client = useQueryClient();
  const [name, setName] = useState(props.project.name);
  const [rows, setRows] = useState<EnvRow[]>(() => Object.entries(props.project.env).map(([n, value]) => ({ name: n, value })));
  const [saved, setSaved] = useState<string | null>(null);
  const save = useMutation({
    mutationFn: () => {
      const env: Record<string, string> = {};
      for (const row of rows) if (row.name.trim() !== "") env[row.name.trim()] = row.value;
      return unwrap(api.PATCH("/api/v1/projects/{id}", { params: { path: { id: props.project.id } }, body: { name: name.trim(), env } }));
    },
    onSuccess: async () => {
      setSaved("Saved; services get the variables with their next deploy");
      await client.invalidateQueries({ queryKey: keys.project(props.project.id) });
      await client.invalidateQueries({ queryKey: keys.projects });
    },
  });
  const fields = ["name", ...rows.map((r) => `env.${r.name.trim()}`)];
  const setRow = (i: number, change: Partial<EnvRow>) => {
    setRows(rows.map((r, j) => (j === i ? { ...r, ...change } : r)));
  };
  return (
    <Section title="Project settings">
      <form
        onSubmit={(e) => {
          e.preventDefault();
          setSaved(null);
          save.mutate();
        }}
      >
        <Field label="Project name" name="project-name" value={name} onChange={setName} required error={fieldError(save.error, "name")} />
        <h3>Shared environment</h3>
        {rows.length === 0 ? <p className="muted">No shared variables.</p> : null}
        {rows.map((row, i) => (
          <div className="row" key={i}>
            <Field
              label={`Variable ${String(i + 1)} name`}
              name={`project-env-${String(i)}-name`}
              value={row.name}
              onChange={(v) => {
                setRow(i, { name: v });
              }}
              error={row.name.trim() ? fieldError(save.error, `env.${row.name.trim()}`) : undefined}
            />
            <Field
              label={`Variable ${String(i + 1)} value`}
              name={`project-env-${String(i)}-value`}
              value={row.value}
              onChange={(v) => {
                setRow(i, { value: v });
              }}
            />
            <Button
              label={`Remove variable ${String(i + 1)}`}
              onClick={() => {
                setRows(rows.filter((_, j) => j !== i));
              }}
            >
              Remove
            </Button>
          </div>
        ))}
        <div className="row">
          <Button
            onClick={() => {
              setRows([...rows, { name: "", value: "" }]);
            }}
          >
            Add variable
          </Button>
          <Button type="submit" kind="primary" busy={save.isPending}>
            Save project
          </Button>
        </div>
        <Notice error={isFormLevel(save.error, fields) ? save.error : undefined} success={saved} />
        {save.error && !isFormLevel(save.error, fields) ? (
          <p className="notice notice-error" role="alert">
            Check the highlighted field.
          </p>
        ) : null}
      </form>
    </Section>
  );
}
