import { useMutation, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { Link, useLocation } from "wouter";
import { api, unwrap } from "../api/client";
import { keys, useService } from "../api/queries";
import { Button, Checkbox, Field, Notice, QueryState, Section, Select } from "../components/ui";
import { fieldError, isFormLevel } from "../forms";
import { type Balance, emptyForm, fromSpec, newRoute, type ServiceForm, toSpec } from "../serviceForm";

/** Create (with projectId) or edit (with serviceId) a service. */
export function ServiceFormPage(props: { projectId?: string; serviceId?: string }) {
  if (props.serviceId) return <EditService id={props.serviceId} />;
  return <ServiceEditor projectId={props.projectId ?? ""} initial={emptyForm} />;
}

function EditService(props: { id: string }) {
  const service = useService(props.id);
  if (!service.data) return <QueryState error={service.error} what="the service" />;
  return <ServiceEditor serviceId={props.id} projectId={service.data.project_id} initial={fromSpec(service.data)} />;
}

const BALANCE: readonly (Balance | "")[] = ["", "round_robin", "least_connections"];
const BALANCE_LABELS = { "": "round robin (default)", round_robin: "round robin", least_connections: "least connections" } as const;

const FIELDS = ["name", "source", "build", "run", "routes", "env", "secrets", "health", "resources", "replicas", "placement", "volumes"];

function ServiceEditor(props: { projectId: string; serviceId?: string; initial: ServiceForm }) {
  const [form, setForm] = useState<ServiceForm>(props.initial);
  const [, setLocation] = useLocation();
  const client = useQueryClient();
  const editing = props.serviceId !== undefined;
  const save = useMutation({
    mutationFn: () => {
      const spec = toSpec(form);
      if (props.serviceId) {
        return unwrap(api.PATCH("/api/v1/services/{id}", { params: { path: { id: props.serviceId } }, body: spec }));
      }
      return unwrap(
        api.POST("/api/v1/projects/{project_id}/services", { params: { path: { project_id: props.projectId } }, body: spec }),
      );
    },
    onSuccess: async (service) => {
      await client.invalidateQueries({ queryKey: keys.services });
      setLocation(`/services/${service.id}`);
    },
  });
  const set = <K extends keyof ServiceForm>(key: K) => (value: ServiceForm[K]) => {
    setForm((f) => ({ ...f, [key]: value }));
  };
  const err = (...names: string[]) => fieldError(save.error, ...names);
  return (
    <div className="page">
      <nav aria-label="Breadcrumb" className="crumbs">
        <Link href={`/projects/${props.projectId}`}>Project</Link> / <span>{editing ? `Edit ${props.initial.name}` : "New service"}</span>
      </nav>
      <h1>{editing ? `Edit ${props.initial.name}` : "New service"}</h1>
      <form
        className="form"
        noValidate
        onSubmit={(e) => {
          e.preventDefault();
          save.mutate();
        }}
      >
        <Section title="Source">
          <Field label="Name" name="name" value={form.name} onChange={set("name")} required error={err("name")} hint="A DNS label: it becomes <name>.svc.internal." />
          <Field label="Repository URL" name="git" value={form.git} onChange={set("git")} required error={err("source.git", "source")} placeholder="https://git.example.com/me/app.git" />
          <Field label="Branch, tag or commit" name="ref" value={form.ref} onChange={set("ref")} error={err("source.ref")} />
          <Field label="Build command" name="build" value={form.build} onChange={set("build")} error={err("build")} hint="Empty: nanoscale.toml, Procfile or detection by language." />
          <Field label="Run command" name="run" value={form.run} onChange={set("run")} error={err("run")} hint="The app listens on $PORT, which NanoScale chooses." />
        </Section>
        <Section title="Routes">
          {form.routes.map((route, i) => (
            <div className="row route-row" key={i}>
              <Field
                label="Domain"
                name={`routes.${String(i)}.host`}
                value={route.host}
                placeholder="app.example.com"
                onChange={(v) => {
                  set("routes")(form.routes.map((r, j) => (j === i ? { ...r, host: v } : r)));
                }}
                error={err(`routes[${String(i)}].host`, `routes[${String(i)}]`)}
              />
              <Field
                label="Path prefix"
                name={`routes.${String(i)}.path`}
                value={route.path}
                placeholder="/"
                onChange={(v) => {
                  set("routes")(form.routes.map((r, j) => (j === i ? { ...r, path: v } : r)));
                }}
                error={err(`routes[${String(i)}].path`)}
              />
              <Checkbox
                label="Strip prefix"
                checked={route.strip}
                onChange={(v) => {
                  set("routes")(form.routes.map((r, j) => (j === i ? { ...r, strip: v } : r)));
                }}
              />
              <Field
                label="Max body (MB)"
                name={`routes.${String(i)}.max_body_mb`}
                value={route.maxBodyMb}
                placeholder="64"
                onChange={(v) => {
                  set("routes")(form.routes.map((r, j) => (j === i ? { ...r, maxBodyMb: v } : r)));
                }}
                error={err(`routes[${String(i)}].max_body_mb`)}
              />
              <Select
                label="Balancing"
                name={`routes.${String(i)}.balance`}
                value={route.balance}
                options={BALANCE}
                labels={BALANCE_LABELS}
                onChange={(v) => {
                  set("routes")(form.routes.map((r, j) => (j === i ? { ...r, balance: v } : r)));
                }}
              />
              <Button
                label={`Remove route ${String(i + 1)}`}
                onClick={() => {
                  set("routes")(form.routes.filter((_, j) => j !== i));
                }}
              >
                Remove
              </Button>
            </div>
          ))}
          {err("routes") && !form.routes.some((_, i) => err(`routes[${String(i)}]`)) ? <p className="error-text">{err("routes")}</p> : null}
          <Button
            onClick={() => {
              set("routes")([...form.routes, newRoute()]);
            }}
          >
            Add route
          </Button>
        </Section>
        <Section title="Environment">
          {form.env.length === 0 ? <p className="muted">No variables. Project variables apply too.</p> : null}
          {form.env.map((row, i) => (
            <div className="row env-row" key={i}>
              <Field
                label="Name"
                name={`env.${String(i)}.name`}
                value={row.name}
                onChange={(v) => {
                  set("env")(form.env.map((r, j) => (j === i ? { ...r, name: v } : r)));
                }}
                error={err(`env.${row.name}`, `secrets.${row.name}`)}
              />
              <Field
                label="Value"
                name={`env.${String(i)}.value`}
                type={row.secret ? "password" : "text"}
                value={row.value}
                onChange={(v) => {
                  set("env")(form.env.map((r, j) => (j === i ? { ...r, value: v } : r)));
                }}
              />
              <Checkbox
                label="Secret"
                checked={row.secret}
                onChange={(v) => {
                  set("env")(form.env.map((r, j) => (j === i ? { ...r, secret: v } : r)));
                }}
              />
              <Button
                label={`Remove variable ${row.name}`}
                onClick={() => {
                  set("env")(form.env.filter((_, j) => j !== i));
                }}
              >
                Remove
              </Button>
            </div>
          ))}
          {err("env") ?? err("secrets") ? <p className="error-text">{err("env") ?? err("secrets")}</p> : null}
          <Button
            onClick={() => {
              set("env")([...form.env, { name: "", value: "", secret: false }]);
            }}
          >
            Add variable
          </Button>
        </Section>
        <Section title="Health check">
          <div className="grid-3">
            <Field label="HTTP path" name="health.path" value={form.healthPath} onChange={set("healthPath")} placeholder="/healthz" error={err("health.path")} hint="Empty: a command, or a TCP connect to $PORT." />
            <Field label="Command" name="health.command" value={form.healthCommand} onChange={set("healthCommand")} error={err("health.command")} />
            <Field label="Interval (s)" name="health.interval_secs" type="number" value={form.interval} onChange={set("interval")} error={err("health.interval_secs")} />
            <Field label="Timeout (s)" name="health.timeout_secs" type="number" value={form.timeout} onChange={set("timeout")} error={err("health.timeout_secs")} />
            <Field label="Retries" name="health.retries" type="number" value={form.retries} onChange={set("retries")} error={err("health.retries")} />
            <Field label="Start period (s)" name="health.start_period_secs" type="number" value={form.startPeriod} onChange={set("startPeriod")} error={err("health.start_period_secs")} />
          </div>
          {err("health") && !err("health.path", "health.command", "health.interval_secs", "health.timeout_secs", "health.retries", "health.start_period_secs") ? <p className="error-text">{err("health")}</p> : null}
        </Section>
        <Section title="Resources and placement">
          <div className="grid-3">
            <Field label="Memory (MiB)" name="resources.memory_mb" type="number" value={form.memoryMb} onChange={set("memoryMb")} error={err("resources.memory_mb")} />
            <Field label="CPU (millicores)" name="resources.cpu_millis" type="number" value={form.cpuMillis} onChange={set("cpuMillis")} error={err("resources.cpu_millis")} />
            <Field label="Processes (pids)" name="resources.pids" type="number" value={form.pids} onChange={set("pids")} error={err("resources.pids")} />
            <Field label="Replicas" name="replicas" type="number" value={form.replicas} onChange={set("replicas")} error={err("replicas")} />
            <Field label="Servers (names, comma-separated)" name="placement.nodes" value={form.nodes} onChange={set("nodes")} error={err("placement.nodes")} />
            <Field label="Server labels (k=v, comma-separated)" name="placement.labels" value={form.labels} onChange={set("labels")} error={err("placement.labels")} />
          </div>
          <Checkbox label="One replica on every matching server" checked={form.everyNode} onChange={set("everyNode")} />
          <Checkbox label="Move replicas off a server that stays unreachable" checked={form.reschedule} onChange={set("reschedule")} />
          {err("placement") && !err("placement.nodes", "placement.labels") ? <p className="error-text">{err("placement")}</p> : null}
          <Field
            label="Volumes (name or name:path in the app's directory, comma-separated; they outlive releases)"
            name="volumes"
            value={form.volumes}
            onChange={set("volumes")}
            error={err("volumes")}
          />
        </Section>
        <Notice error={isFormLevel(save.error, FIELDS) ? save.error : undefined} />
        {save.error && !isFormLevel(save.error, FIELDS) ? (
          <p className="notice notice-error" role="alert">
            Check the highlighted field.
          </p>
        ) : null}
        <div className="row">
          <Button kind="primary" type="submit" busy={save.isPending}>
            {editing ? "Save changes" : "Create service"}
          </Button>
          <Link href={editing && props.serviceId ? `/services/${props.serviceId}` : `/projects/${props.projectId}`}>Cancel</Link>
        </div>
      </form>
    </div>
  );
}
