// The service form's state and its two pure conversions, to and from the API's
// ServiceSpec. Kept apart from the page so it is unit-tested.
import type { Schemas } from "./api/client";

export type Spec = Schemas["ServiceSpec"];

export interface EnvRow {
  name: string;
  value: string;
  secret: boolean;
}

type RouteSpec = Schemas["RouteSpec"];
export type Balance = Schemas["Balance"];

export interface RouteRow {
  host: string;
  path: string;
  strip: boolean;
  /** Largest request body in MiB; empty for the default (64). */
  maxBodyMb: string;
  /** Empty for the default (round robin). */
  balance: Balance | "";
  /** The route's other policy fields, set through the API: kept as they are. */
  keep: Pick<RouteSpec, "connect_timeout_ms" | "response_timeout_secs" | "retries">;
}

export const newRoute = (): RouteRow => ({ host: "", path: "", strip: false, maxBodyMb: "", balance: "", keep: {} });

function routeToSpec(row: RouteRow): RouteSpec {
  const route: RouteSpec = { host: optionalText(row.host), path: optionalText(row.path), strip_prefix: row.strip, ...row.keep };
  const maxBody = optionalNumber(row.maxBodyMb);
  if (maxBody !== null) route.max_body_mb = maxBody;
  if (row.balance !== "") route.balance = row.balance;
  return route;
}

function routeFromSpec(route: RouteSpec): RouteRow {
  const keep: RouteRow["keep"] = {};
  if (route.connect_timeout_ms != null) keep.connect_timeout_ms = route.connect_timeout_ms;
  if (route.response_timeout_secs != null) keep.response_timeout_secs = route.response_timeout_secs;
  if (route.retries != null) keep.retries = route.retries;
  return {
    host: route.host ?? "",
    path: route.path ?? "",
    strip: route.strip_prefix ?? false,
    maxBodyMb: route.max_body_mb == null ? "" : String(route.max_body_mb),
    balance: route.balance ?? "",
    keep,
  };
}

export interface ServiceForm {
  name: string;
  git: string;
  ref: string;
  build: string;
  run: string;
  routes: RouteRow[];
  env: EnvRow[];
  healthPath: string;
  healthCommand: string;
  interval: string;
  timeout: string;
  retries: string;
  startPeriod: string;
  memoryMb: string;
  cpuMillis: string;
  pids: string;
  replicas: string;
  nodes: string;
  labels: string;
  everyNode: boolean;
  reschedule: boolean;
  volumes: string;
}

export const emptyForm: ServiceForm = {
  name: "",
  git: "",
  ref: "main",
  build: "",
  run: "",
  routes: [newRoute()],
  env: [],
  healthPath: "",
  healthCommand: "",
  interval: "5",
  timeout: "2",
  retries: "3",
  startPeriod: "30",
  memoryMb: "",
  cpuMillis: "",
  pids: "",
  replicas: "1",
  nodes: "",
  labels: "",
  everyNode: false,
  reschedule: false,
  volumes: "",
};

/** Text to an optional number; a field that is not a number is sent as typed so the API names it. */
function optionalNumber(text: string): number | null {
  const t = text.trim();
  if (t === "") return null;
  return Number(t);
}

function number(text: string, fallback: number): number {
  return optionalNumber(text) ?? fallback;
}

function optionalText(text: string): string | null {
  const t = text.trim();
  return t === "" ? null : t;
}

/** `k=v, k2=v2` → map; an entry without `=` keeps an empty value so the API can say why. */
export function parseLabels(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of text.split(",")) {
    const item = part.trim();
    if (item === "") continue;
    const at = item.indexOf("=");
    if (at < 0) out[item] = "";
    else out[item.slice(0, at).trim()] = item.slice(at + 1).trim();
  }
  return out;
}

/** `data, uploads:storage/app` → volumes; a name alone is also its path (as the CLI's `--volume`). */
export function parseVolumes(text: string): { name: string; path: string }[] {
  return text
    .split(",")
    .map((part) => part.trim())
    .filter((part) => part !== "")
    .map((part) => {
      const at = part.indexOf(":");
      return at < 0 ? { name: part, path: part } : { name: part.slice(0, at).trim(), path: part.slice(at + 1).trim() };
    });
}

export function toSpec(form: ServiceForm): Spec {
  const env: Record<string, string> = {};
  const secrets: string[] = [];
  for (const row of form.env) {
    if (row.name.trim() === "") continue;
    env[row.name.trim()] = row.value;
    if (row.secret) secrets.push(row.name.trim());
  }
  return {
    name: form.name.trim(),
    source: { git: form.git.trim(), ref: form.ref.trim() || "main" },
    build: optionalText(form.build),
    run: optionalText(form.run),
    env,
    secrets,
    routes: form.routes
      .filter((r) => r.host.trim() !== "" || r.path.trim() !== "")
      .map(routeToSpec),
    health: {
      path: optionalText(form.healthPath),
      command: optionalText(form.healthCommand),
      interval_secs: number(form.interval, 5),
      timeout_secs: number(form.timeout, 2),
      retries: number(form.retries, 3),
      start_period_secs: number(form.startPeriod, 30),
    },
    resources: {
      memory_mb: optionalNumber(form.memoryMb),
      cpu_millis: optionalNumber(form.cpuMillis),
      pids: optionalNumber(form.pids),
    },
    replicas: number(form.replicas, 1),
    placement: {
      nodes: form.nodes
        .split(",")
        .map((n) => n.trim())
        .filter((n) => n !== ""),
      labels: parseLabels(form.labels),
      every_node: form.everyNode,
      reschedule: form.reschedule,
    },
    runtime: "process",
    volumes: parseVolumes(form.volumes),
  };
}

export function fromSpec(spec: Spec): ServiceForm {
  const secrets = new Set(spec.secrets ?? []);
  const routes = (spec.routes ?? []).map(routeFromSpec);
  const health = spec.health;
  const resources = spec.resources;
  const placement = spec.placement;
  return {
    name: spec.name,
    git: spec.source.git,
    ref: spec.source.ref ?? "main",
    build: spec.build ?? "",
    run: spec.run ?? "",
    routes: routes.length > 0 ? routes : [newRoute()],
    env: Object.entries(spec.env ?? {}).map(([name, value]) => ({ name, value, secret: secrets.has(name) })),
    healthPath: health?.path ?? "",
    healthCommand: health?.command ?? "",
    interval: String(health?.interval_secs ?? 5),
    timeout: String(health?.timeout_secs ?? 2),
    retries: String(health?.retries ?? 3),
    startPeriod: String(health?.start_period_secs ?? 30),
    memoryMb: resources?.memory_mb == null ? "" : String(resources.memory_mb),
    cpuMillis: resources?.cpu_millis == null ? "" : String(resources.cpu_millis),
    pids: resources?.pids == null ? "" : String(resources.pids),
    replicas: String(spec.replicas ?? 1),
    nodes: (placement?.nodes ?? []).join(", "),
    labels: Object.entries(placement?.labels ?? {})
      .map(([k, v]) => `${k}=${v}`)
      .join(", "),
    everyNode: placement?.every_node ?? false,
    reschedule: placement?.reschedule ?? false,
    volumes: (spec.volumes ?? []).map((v) => (v.name === v.path ? v.name : `${v.name}:${v.path}`)).join(", "),
  };
}
