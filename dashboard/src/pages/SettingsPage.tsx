import { useMutation, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { useLocation } from "wouter";
import { api, type Schemas, unwrap } from "../api/client";
import { TeamsSection } from "../components/Access";
import { keys, useAudit, useSettings, useTokens, useUsers } from "../api/queries";
import { Button, ConfirmButton, CopyButton, Field, Notice, QueryState, Section, Select, Time, Table } from "../components/ui";
import { fieldError, isFormLevel } from "../forms";
import { allows, useMe, useRole } from "../session";

const ROLES = ["viewer", "deployer", "admin"] as const;

export function SettingsPage() {
  const role = useRole();
  const admin = allows(role, "admin");
  return (
    <div className="page">
      <h1>Settings</h1>
      <PasswordSection />
      <TokensSection />
      {admin ? <UsersSection /> : null}
      {admin ? <TeamsSection /> : null}
      {admin ? <BrandingSection /> : null}
      {admin ? <AuditSection /> : null}
    </div>
  );
}

/**
 * Changing one's own password: the API asks for the current one (and a login
 * session, not a token) and ends every session, so the login page follows.
 */
export function PasswordSection() {
  const me = useMe();
  const client = useQueryClient();
  const [, setLocation] = useLocation();
  const [current, setCurrent] = useState("");
  const [next, setNext] = useState("");
  const [again, setAgain] = useState("");
  const [mismatch, setMismatch] = useState(false);
  const save = useMutation({
    mutationFn: () =>
      unwrap(
        api.PATCH("/api/v1/users/{id}", {
          params: { path: { id: me.data?.user.id ?? "" } },
          body: { password: next, current_password: current },
        }),
      ),
    onSuccess: () => {
      client.clear();
      setLocation("/login?changed=1", { replace: true });
    },
  });
  return (
    <Section title="Your password">
      <form
        className="form"
        onSubmit={(e) => {
          e.preventDefault();
          setMismatch(next !== again);
          if (next === again) save.mutate();
        }}
      >
        <Field label="Current password" name="current_password" type="password" autoComplete="current-password" value={current} onChange={setCurrent} required error={fieldError(save.error, "current_password")} />
        <Field label="New password" name="new_password" type="password" autoComplete="new-password" value={next} onChange={setNext} required error={fieldError(save.error, "password")} />
        <Field
          label="New password again"
          name="new_password_again"
          type="password"
          autoComplete="new-password"
          value={again}
          onChange={setAgain}
          required
          error={mismatch ? "does not match the new password" : undefined}
        />
        <Notice error={isFormLevel(save.error, ["current_password", "password"]) ? save.error : undefined} />
        <Button kind="primary" type="submit" busy={save.isPending || !me.data}>
          Change password
        </Button>
      </form>
    </Section>
  );
}

function TokensSection() {
  const tokens = useTokens();
  const me = useMe();
  const client = useQueryClient();
  const [name, setName] = useState("");
  const [role, setRole] = useState<Schemas["Role"]>("viewer");
  const create = useMutation({
    mutationFn: () => unwrap(api.POST("/api/v1/tokens", { body: { name, role } })),
    onSuccess: async () => {
      setName("");
      await client.invalidateQueries({ queryKey: keys.tokens });
    },
  });
  const revoke = useMutation({
    mutationFn: (id: string) => unwrap(api.DELETE("/api/v1/tokens/{id}", { params: { path: { id } } })),
    onSuccess: async () => {
      await client.invalidateQueries({ queryKey: keys.tokens });
    },
  });
  const myRole = me.data?.role ?? "viewer";
  const canCreate = allows(myRole, "deployer");
  return (
    <Section title="API tokens">
      {canCreate ? (
        <form
          className="inline-form"
          onSubmit={(e) => {
            e.preventDefault();
            create.mutate();
          }}
        >
          <Field label="Token name" name="token-name" value={name} onChange={setName} required error={fieldError(create.error, "name")} />
          <Select label="Role" name="token-role" value={role} options={ROLES.filter((r) => allows(myRole, r))} onChange={setRole} />
          <Button kind="primary" type="submit" busy={create.isPending}>
            Create token
          </Button>
        </form>
      ) : null}
      <Notice error={isFormLevel(create.error, ["name"]) ? create.error : undefined} />
      {create.data ? (
        <div className="notice notice-success" role="status" data-testid="new-token">
          <p>Token {create.data.name} created. Copy it now: it is shown only once.</p>
          <pre className="command">{create.data.token}</pre>
          <CopyButton text={create.data.token} label="Copy token" />
        </div>
      ) : null}
      <Notice error={revoke.error} success={revoke.isSuccess ? "Token revoked" : null} />
      {tokens.data ? (
        tokens.data.length === 0 ? (
          <p className="muted">No tokens.</p>
        ) : (
          <Table columns={["Name", "Role", "Created", "Last used", ""]}>
                {tokens.data.map((t) => (
                  <tr key={t.id} data-testid={`token-${t.name}`}>
                    <th scope="row">{t.name}</th>
                    <td>{t.role}</td>
                    <td>
                      <Time at={t.created_at} />
                    </td>
                    <td>
                      <Time at={t.last_used_at} />
                    </td>
                    <td>
                      <ConfirmButton
                        question={`Revoke token ${t.name}? Scripts using it stop working at once.`}
                        confirmLabel="Revoke"
                        busy={revoke.isPending}
                        onConfirm={() => {
                          revoke.mutate(t.id);
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
        <QueryState error={tokens.error} what="tokens" />
      )}
    </Section>
  );
}

function UsersSection() {
  const users = useUsers();
  const client = useQueryClient();
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [role, setRole] = useState<Schemas["Role"]>("viewer");
  const create = useMutation({
    mutationFn: () => unwrap(api.POST("/api/v1/users", { body: { username, password, role } })),
    onSuccess: async () => {
      setUsername("");
      setPassword("");
      await client.invalidateQueries({ queryKey: keys.users });
    },
  });
  const update = useMutation({
    mutationFn: (change: { id: string; role: Schemas["Role"] }) =>
      unwrap(api.PATCH("/api/v1/users/{id}", { params: { path: { id: change.id } }, body: { role: change.role } })),
    onSettled: async () => {
      await client.invalidateQueries({ queryKey: keys.users });
      // Changing one's own role changes what this page may show.
      await client.invalidateQueries({ queryKey: keys.me });
    },
  });
  const remove = useMutation({
    mutationFn: (id: string) => unwrap(api.DELETE("/api/v1/users/{id}", { params: { path: { id } } })),
    onSettled: async () => {
      await client.invalidateQueries({ queryKey: keys.users });
    },
  });
  return (
    <Section title="Users and roles">
      <form
        className="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          create.mutate();
        }}
      >
        <Field label="Username" name="new-username" value={username} onChange={setUsername} required error={fieldError(create.error, "username")} autoComplete="off" />
        <Field label="Password" name="new-password" type="password" value={password} onChange={setPassword} required error={fieldError(create.error, "password")} autoComplete="new-password" />
        <Select label="Role" name="new-role" value={role} options={ROLES} onChange={setRole} />
        <Button kind="primary" type="submit" busy={create.isPending}>
          Add user
        </Button>
      </form>
      <Notice
        error={isFormLevel(create.error, ["username", "password"]) ? create.error : (update.error ?? remove.error)}
        success={create.isSuccess ? `User ${create.data.username} added` : null}
      />
      {users.data ? (
        <Table columns={["User", "Role", "Created", ""]}>
              {users.data.map((u) => (
                <tr key={u.id} data-testid={`user-${u.username}`}>
                  <th scope="row">{u.username}</th>
                  <td>
                    <Select
                      label={`Role of ${u.username}`}
                      value={u.role}
                      options={ROLES}
                      onChange={(r) => {
                        update.mutate({ id: u.id, role: r });
                      }}
                    />
                  </td>
                  <td>
                    <Time at={u.created_at} />
                  </td>
                  <td>
                    <ConfirmButton
                      question={`Delete user ${u.username}? Their sessions and tokens end.`}
                      confirmLabel="Delete user"
                      busy={remove.isPending}
                      onConfirm={() => {
                        remove.mutate(u.id);
                      }}
                    >
                      Delete
                    </ConfirmButton>
                  </td>
                </tr>
              ))}
            </Table>
      ) : (
        <QueryState error={users.error} what="users" />
      )}
    </Section>
  );
}

function BrandingSection() {
  const settings = useSettings();
  if (!settings.data) return <QueryState error={settings.error} what="settings" />;
  return <BrandingForm initial={settings.data} />;
}

function BrandingForm(props: { initial: Schemas["Settings"] }) {
  const client = useQueryClient();
  const [name, setName] = useState(props.initial.product_name);
  const [logo, setLogo] = useState(props.initial.logo_url ?? "");
  const save = useMutation({
    mutationFn: () => unwrap(api.PATCH("/api/v1/settings", { body: { product_name: name, logo_url: logo } })),
    onSuccess: (settings) => {
      client.setQueryData(keys.settings, settings);
    },
  });
  return (
    <Section title="White-labelling">
      <form
        className="form"
        onSubmit={(e) => {
          e.preventDefault();
          save.mutate();
        }}
      >
        <Field label="Product name" name="product_name" value={name} onChange={setName} error={fieldError(save.error, "product_name")} hint="Shown in the header and on the login page. Empty restores NanoScale." />
        <Field label="Logo URL" name="logo_url" value={logo} onChange={setLogo} error={fieldError(save.error, "logo_url")} hint="An https:// URL or a path on this server. Empty restores the default." />
        <Notice error={isFormLevel(save.error, ["product_name", "logo_url"]) ? save.error : undefined} success={save.isSuccess ? "Saved" : null} />
        <Button kind="primary" type="submit" busy={save.isPending}>
          Save
        </Button>
      </form>
    </Section>
  );
}

function AuditSection() {
  const [action, setAction] = useState("");
  const [applied, setApplied] = useState("");
  const audit = useAudit(applied ? { action: applied } : {});
  return (
    <Section title="Audit log">
      <form
        className="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          setApplied(action.trim());
        }}
      >
        <Field label="Action" name="audit-action" value={action} onChange={setAction} placeholder="service.deploy" hint="Exact action; empty shows all." />
        <Button type="submit">Filter</Button>
      </form>
      {audit.data ? (
        <Table columns={["When", "Who", "Action", "Resource", "Details"]} testId="audit-table">
              {audit.data.map((a) => (
                <tr key={a.id}>
                  <td>
                    <Time at={a.time} />
                  </td>
                  <td>{a.actor_name}</td>
                  <td>
                    <code>{a.action}</code>
                  </td>
                  <td>
                    {a.resource_type} <span className="muted">{a.resource_id ?? ""}</span>
                  </td>
                  <td>
                    <code className="summary">{JSON.stringify(a.summary)}</code>
                  </td>
                </tr>
              ))}
            </Table>
      ) : (
        <QueryState error={audit.error} what="the audit log" />
      )}
    </Section>
  );
}
