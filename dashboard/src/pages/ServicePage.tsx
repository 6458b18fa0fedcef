import { useMutation, useQueryClient } from "@tanstack/react-query";
import { lazy, Suspense, useState } from "react";
import { Link, useLocation } from "wouter";
import { api, type Schemas, unwrap } from "../api/client";
import { keys, useEvents, useInstances, useProject, useReleases, useService } from "../api/queries";
import { BuildLog } from "../components/BuildLog";
import { EnvEditor } from "../components/EnvEditor";
import { EventList } from "../components/EventList";
import { Button, ConfirmButton, Loading, Notice, QueryState, Section, StatusBadge, Time, Table } from "../components/ui";
import { allows, useRole } from "../session";

// xterm.js is large: it loads with the first service page, not with the dashboard.
const LogTerminal = lazy(() => import("../components/LogTerminal"));
const MetricsCharts = lazy(() => import("../components/MetricsCharts"));

export function ServicePage(props: { id: string }) {
  const service = useService(props.id);
  const project = useProject(service.data?.project_id ?? "", service.isSuccess);
  const releases = useReleases(props.id);
  const instances = useInstances(props.id);
  const events = useEvents({ service_id: props.id, limit: 30 });
  const role = useRole();
  const canEdit = allows(role, "deployer");
  const client = useQueryClient();
  const [, setLocation] = useLocation();
  const [shownBuild, setShownBuild] = useState<number | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const refresh = async () => {
    await client.invalidateQueries({ queryKey: keys.service(props.id) });
  };
  const deploy = useMutation({
    mutationFn: () => unwrap(api.POST("/api/v1/services/{id}/deploy", { params: { path: { id: props.id } }, body: {} })),
    onMutate: () => {
      setDone(null);
      rollback.reset();
    },
    onSuccess: async (release) => {
      setShownBuild(release.number);
      setDone(`Release ${String(release.number)} queued`);
      await refresh();
    },
  });
  const rollback = useMutation({
    mutationFn: (number: number) =>
      unwrap(api.POST("/api/v1/services/{id}/rollback", { params: { path: { id: props.id } }, body: { release: number } })),
    onMutate: () => {
      setDone(null);
      deploy.reset();
    },
    onSuccess: async (release) => {
      setShownBuild(release.number);
      setDone(`Rollback queued as release ${String(release.number)}`);
      await refresh();
    },
  });
  const remove = useMutation({
    mutationFn: () => unwrap(api.DELETE("/api/v1/services/{id}", { params: { path: { id: props.id } } })),
    onSuccess: async () => {
      await client.invalidateQueries({ queryKey: keys.services });
      setLocation(service.data ? `/projects/${service.data.project_id}` : "/projects");
    },
  });
  if (!service.data) return <QueryState error={service.error} what="the service" />;
  const spec = service.data;
  const list = releases.data ?? [];
  const current = list.find((r) => r.id === service.data.current_release);
  const latest = list[0];
  const build = shownBuild ?? latest?.number ?? null;
  const buildRelease = list.find((r) => r.number === build);
  return (
    <div className="page">
      <nav aria-label="Breadcrumb" className="crumbs">
        <Link href="/projects">Projects</Link> / <Link href={`/projects/${service.data.project_id}`}>{project.data?.name ?? "project"}</Link> /{" "}
        <span>{spec.name}</span>
      </nav>
      <div className="title-row">
        <h1>{spec.name}</h1>
        <StatusBadge status={current ? "live" : releases.isPending ? "loading" : (latest?.status ?? "not deployed")} />
        {canEdit ? (
          <div className="row">
            <Button
              kind="primary"
              busy={deploy.isPending}
              onClick={() => {
                deploy.mutate();
              }}
            >
              Deploy
            </Button>
            <Link className="btn btn-secondary" href={`/services/${props.id}/edit`}>
              Edit
            </Link>
          </div>
        ) : null}
      </div>
      <p className="muted">
        {spec.source.git} @ {spec.source.ref}
        {(spec.routes ?? []).length > 0 ? " · routes: " : ""}
        {(spec.routes ?? []).map((r) => `${r.host ?? ""}${r.path ?? ""}`).join(", ")}
      </p>
      <Notice error={deploy.error ?? rollback.error} success={done} />
      <div className="grid-2">
        <Section title="Releases">
          {releases.data ? (
            <ReleaseTable
              releases={list}
              current={service.data.current_release ?? null}
              canRollback={canEdit}
              busy={rollback.isPending}
              onShow={setShownBuild}
              onRollback={(n) => {
                rollback.mutate(n);
              }}
            />
          ) : (
            <QueryState error={releases.error} what="releases" />
          )}
        </Section>
        <Section title={build ? `Build log of release ${String(build)}` : "Build log"}>
          {build && buildRelease ? <BuildLog key={buildRelease.number} serviceId={props.id} release={buildRelease} /> : <p className="muted">No release yet. Deploy to build one.</p>}
        </Section>
      </div>
      <Section title="Traffic and memory (last hour)">
        <Suspense fallback={<Loading what="the charts" />}>
          <MetricsCharts serviceId={props.id} />
        </Suspense>
      </Section>
      <Section title="Instances">
        {instances.data ? <InstanceTable instances={instances.data} /> : <QueryState error={instances.error} what="instances" />}
      </Section>
      {canEdit ? <EnvEditor serviceId={props.id} /> : null}
      <Section title="Logs">
        <Suspense fallback={<Loading what="the terminal" />}>
          <LogTerminal serviceId={props.id} />
        </Suspense>
      </Section>
      <Section title="Events">{events.data ? <EventList events={events.data} /> : <QueryState error={events.error} what="events" />}</Section>
      {canEdit ? (
        <Section title="Danger zone">
          <Notice error={remove.error} />
          <ConfirmButton
            question={`Delete service ${spec.name}? Its instances stop on every server.`}
            confirmLabel="Delete service"
            busy={remove.isPending}
            onConfirm={() => {
              remove.mutate();
            }}
          >
            Delete service
          </ConfirmButton>
        </Section>
      ) : null}
    </div>
  );
}

function ReleaseTable(props: {
  releases: Schemas["Release"][];
  current: string | null;
  canRollback: boolean;
  busy: boolean;
  onShow: (n: number) => void;
  onRollback: (n: number) => void;
}) {
  if (props.releases.length === 0) return <p className="muted">No releases yet.</p>;
  return (
    <Table columns={["#", "Status", "Commit and author", "Created", ""]}>
          {props.releases.map((r) => {
            const isCurrent = r.id === props.current;
            return (
              <tr key={r.id} data-testid={`release-${String(r.number)}`} aria-current={isCurrent ? "true" : undefined}>
                <th scope="row">{r.number}</th>
                <td>
                  <StatusBadge status={r.status} />
                  {/* The deploy target is "current" once it serves; one that failed is not (the
                      release before it, if any, still serves and says live). */}
                  {isCurrent && r.status === "live" ? <span className="badge badge-current">current</span> : null}
                  {isCurrent && (r.status === "queued" || r.status === "building" || r.status === "starting") ? (
                    <span className="badge badge-target">target</span>
                  ) : null}
                  {r.reason ? <span className="muted"> {r.reason}</span> : null}
                </td>
                <td>
                  <code title={r.commit}>{r.commit.slice(0, 12)}</code> <span className="muted">{r.ref}</span>
                  {r.rollback_of ? <span className="muted"> (rollback)</span> : null}
                  {r.commit_message ? (
                    <div className="commit" data-testid={`commit-${String(r.number)}`}>
                      {r.commit_message} <span className="muted">— {r.commit_author}</span>
                    </div>
                  ) : null}
                </td>
                <td>
                  <Time at={r.created_at} />
                </td>
                <td className="row">
                  <Button
                    onClick={() => {
                      props.onShow(r.number);
                    }}
                    label={`Show build log of release ${String(r.number)}`}
                  >
                    Log
                  </Button>
                  {props.canRollback && !isCurrent && (r.status === "live" || r.status === "retired") ? (
                    <ConfirmButton
                      question={`Roll back to release ${String(r.number)} (${r.commit.slice(0, 12)})?`}
                      confirmLabel="Roll back"
                      busy={props.busy}
                      onConfirm={() => {
                        props.onRollback(r.number);
                      }}
                    >
                      Roll back
                    </ConfirmButton>
                  ) : null}
                </td>
              </tr>
            );
          })}
        </Table>
  );
}

function InstanceTable(props: { instances: Schemas["Instance"][] }) {
  if (props.instances.length === 0) return <p className="muted">No instances run.</p>;
  return (
    <Table columns={["Instance", "Server", "Release", "Status", "Port", "Restarts", "Started"]}>
          {props.instances.map((i) => (
            <tr key={i.id}>
              <th scope="row">
                <code>{i.id}</code>
              </th>
              <td>{i.node}</td>
              <td>{i.release_number}</td>
              <td>
                {i.node_reachable ? (
                  <StatusBadge status={i.status} />
                ) : (
                  <span title={`its server stopped answering; last reported ${i.status}`}>
                    <StatusBadge status="unknown" /> <span className="muted">server unreachable, was {i.status}</span>
                  </span>
                )}
              </td>
              <td>{i.port}</td>
              <td>{i.restarts}</td>
              <td>
                <Time at={i.started_at} />
              </td>
            </tr>
          ))}
        </Table>
  );
}
