import { useMutation, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { Link, useLocation } from "wouter";
import { api, unwrap } from "../api/client";
import { keys, useProjects } from "../api/queries";
import { Button, Field, Notice, QueryState, Section, Time, Table } from "../components/ui";
import { fieldError, isFormLevel } from "../forms";
import { allows, useRole } from "../session";

export function ProjectsPage() {
  const projects = useProjects();
  const role = useRole();
  const [name, setName] = useState("");
  const client = useQueryClient();
  const [, setLocation] = useLocation();
  const create = useMutation({
    mutationFn: () => unwrap(api.POST("/api/v1/projects", { body: { name } })),
    onSuccess: async (project) => {
      await client.invalidateQueries({ queryKey: keys.projects });
      setLocation(`/projects/${project.id}`);
    },
  });
  return (
    <div className="page">
      <h1>Projects</h1>
      {allows(role, "deployer") ? (
        <Section title="New project">
          <form
            className="inline-form"
            onSubmit={(e) => {
              e.preventDefault();
              create.mutate();
            }}
          >
            <Field label="Project name" name="name" value={name} onChange={setName} required hint="Lowercase letters, digits and dashes." error={fieldError(create.error, "name")} />
            <Button kind="primary" type="submit" busy={create.isPending}>
              Create project
            </Button>
          </form>
          <Notice error={isFormLevel(create.error, ["name"]) ? create.error : undefined} />
        </Section>
      ) : null}
      <Section title="All projects">
        {projects.data ? (
          projects.data.length === 0 ? (
            <p className="muted">No projects yet.</p>
          ) : (
            <Table columns={["Name", "Services", "Created"]}>
                  {projects.data.map((p) => (
                    <tr key={p.id}>
                      <th scope="row">
                        <Link href={`/projects/${p.id}`}>{p.name}</Link>
                      </th>
                      <td>{p.service_count}</td>
                      <td>
                        <Time at={p.created_at} />
                      </td>
                    </tr>
                  ))}
                </Table>
          )
        ) : (
          <QueryState error={projects.error} what="projects" />
        )}
      </Section>
    </div>
  );
}
