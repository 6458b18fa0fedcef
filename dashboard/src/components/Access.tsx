// Who may manage what beyond their role: teams (Settings, admins) and a project's
// grants (its page, for those who may edit it). A deployer manages the projects
// they created and those granted to them or to a team they are in.
import { useMutation, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { api, type Schemas, unwrap } from "../api/client";
import { keys, useGrants, useTeams, useUsers } from "../api/queries";
import { Button, ConfirmButton, Field, Notice, QueryState, Section, Select, Table } from "./ui";
import { fieldError, isFormLevel } from "../forms";

function nameOf(users: Schemas["User"][] | undefined, id: string): string {
  return users?.find((u) => u.id === id)?.username ?? `user ${id.slice(0, 8)}`;
}

/** A project's grants: who besides its creator and the admins may manage it. */
export function ProjectAccess(props: { projectId: string; admin: boolean }) {
  const client = useQueryClient();
  const grants = useGrants(props.projectId);
  const teams = useTeams();
  // Only admins may list users; others grant to teams.
  const users = useUsers(props.admin);
  const [choice, setChoice] = useState("");
  const invalidate = () => client.invalidateQueries({ queryKey: keys.grants(props.projectId) });
  const add = useMutation({
    mutationFn: () => {
      const [kind, id] = choice.split(":");
      const body = kind === "team" ? { team_id: id ?? null } : { user_id: id ?? null };
      return unwrap(api.POST("/api/v1/projects/{id}/grants", { params: { path: { id: props.projectId } }, body }));
    },
    onSuccess: async () => {
      setChoice("");
      await invalidate();
    },
  });
  const revoke = useMutation({
    mutationFn: (grantId: string) =>
      unwrap(api.DELETE("/api/v1/projects/{id}/grants/{grant_id}", { params: { path: { id: props.projectId, grant_id: grantId } } })),
    onSettled: invalidate,
  });
  const teamName = (id: string) => teams.data?.find((t) => t.id === id)?.name ?? `team ${id.slice(0, 8)}`;
  const label = (g: Schemas["Grant"]) => (g.team_id ? `team ${teamName(g.team_id)}` : g.user_id ? nameOf(users.data, g.user_id) : "?");
  const options = [
    "",
    ...(teams.data ?? []).map((t) => `team:${t.id}`),
    ...(users.data ?? []).filter((u) => u.role === "deployer").map((u) => `user:${u.id}`),
  ];
  const labels: Record<string, string> = { "": "choose a team or a deployer" };
  for (const t of teams.data ?? []) labels[`team:${t.id}`] = `team ${t.name}`;
  for (const u of users.data ?? []) labels[`user:${u.id}`] = `deployer ${u.username}`;
  return (
    <Section title="Access">
      {grants.data ? (
        grants.data.length === 0 ? (
          <p className="muted">Only its creator and the admins manage this project.</p>
        ) : (
          <Table columns={["Granted to", ""]}>
            {grants.data.map((g) => (
              <tr key={g.id} data-testid={`grant-${label(g)}`}>
                <th scope="row">{label(g)}</th>
                <td>
                  <ConfirmButton
                    question={`Take this project away from ${label(g)}?`}
                    confirmLabel="Revoke"
                    busy={revoke.isPending}
                    onConfirm={() => {
                      revoke.mutate(g.id);
                    }}
                  >
                    Revoke
                  </ConfirmButton>
                </td>
              </tr>
            ))}
          </Table>
        )
      ) : (
        <QueryState error={grants.error} what="the project's access" />
      )}
      <form
        className="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          if (choice) add.mutate();
        }}
      >
        <Select label="Give access to" name="grant-to" value={choice} options={options} labels={labels} onChange={setChoice} />
        <Button kind="primary" type="submit" busy={add.isPending} disabled={!choice}>
          Grant
        </Button>
      </form>
      <Notice error={add.error ?? revoke.error} />
    </Section>
  );
}

/** Teams and their members (admins). */
export function TeamsSection() {
  const client = useQueryClient();
  const teams = useTeams();
  const users = useUsers();
  const [name, setName] = useState("");
  const [adding, setAdding] = useState<Record<string, string>>({});
  const invalidate = () => client.invalidateQueries({ queryKey: keys.teams });
  const create = useMutation({
    mutationFn: () => unwrap(api.POST("/api/v1/teams", { body: { name } })),
    onSuccess: async () => {
      setName("");
      await invalidate();
    },
  });
  const remove = useMutation({
    mutationFn: (id: string) => unwrap(api.DELETE("/api/v1/teams/{id}", { params: { path: { id } } })),
    onSettled: invalidate,
  });
  const member = useMutation({
    mutationFn: (change: { team: string; user: string; add: boolean }) => {
      const params = { params: { path: { id: change.team, user_id: change.user } } };
      return unwrap(change.add ? api.PUT("/api/v1/teams/{id}/members/{user_id}", params) : api.DELETE("/api/v1/teams/{id}/members/{user_id}", params));
    },
    onSettled: invalidate,
  });
  return (
    <Section title="Teams">
      <form
        className="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          create.mutate();
        }}
      >
        <Field label="Team name" name="team-name" value={name} onChange={setName} required error={fieldError(create.error, "name")} />
        <Button kind="primary" type="submit" busy={create.isPending}>
          Create team
        </Button>
      </form>
      <Notice error={isFormLevel(create.error, ["name"]) ? create.error : (remove.error ?? member.error)} />
      {teams.data ? (
        teams.data.length === 0 ? (
          <p className="muted">No teams. A team lets a project be granted to several deployers at once.</p>
        ) : (
          <Table columns={["Team", "Members", "Add a member", ""]}>
            {teams.data.map((t) => {
              const outside = (users.data ?? []).filter((u) => !t.members.includes(u.id));
              const pick = adding[t.id] ?? "";
              return (
                <tr key={t.id} data-testid={`team-${t.name}`}>
                  <th scope="row">{t.name}</th>
                  <td>
                    {t.members.length === 0 ? <span className="muted">none</span> : null}
                    {t.members.map((m) => (
                      <span key={m} className="chip">
                        {nameOf(users.data, m)}{" "}
                        <Button
                          label={`Remove ${nameOf(users.data, m)} from ${t.name}`}
                          onClick={() => {
                            member.mutate({ team: t.id, user: m, add: false });
                          }}
                        >
                          ×
                        </Button>
                      </span>
                    ))}
                  </td>
                  <td>
                    <div className="row">
                      <Select
                        label={`Member to add to ${t.name}`}
                        name={`team-${t.id}-member`}
                        value={pick}
                        options={["", ...outside.map((u) => u.id)]}
                        labels={Object.fromEntries([["", "choose a user"], ...outside.map((u) => [u.id, u.username])]) as Record<string, string>}
                        onChange={(v) => {
                          setAdding({ ...adding, [t.id]: v });
                        }}
                      />
                      <Button
                        disabled={!pick}
                        busy={member.isPending}
                        onClick={() => {
                          member.mutate({ team: t.id, user: pick, add: true });
                          setAdding({ ...adding, [t.id]: "" });
                        }}
                      >
                        Add
                      </Button>
                    </div>
                  </td>
                  <td>
                    <ConfirmButton
                      question={`Delete team ${t.name}? Its grants go with it.`}
                      confirmLabel="Delete team"
                      busy={remove.isPending}
                      onConfirm={() => {
                        remove.mutate(t.id);
                      }}
                    >
                      Delete
                    </ConfirmButton>
                  </td>
                </tr>
              );
            })}
          </Table>
        )
      ) : (
        <QueryState error={teams.error} what="teams" />
      )}
    </Section>
  );
}
