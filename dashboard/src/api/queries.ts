// Server state, through TanStack Query only. Query keys are the resource paths,
// so a live event can invalidate exactly what it changes (see live.ts).
import { queryOptions, useQuery } from "@tanstack/react-query";
import { api, unwrap } from "./client";

export const keys = {
  me: ["me"] as const,
  setup: ["setup"] as const,
  settings: ["settings"] as const,
  nodes: ["nodes"] as const,
  projects: ["projects"] as const,
  project: (id: string) => ["projects", id] as const,
  services: ["services"] as const,
  service: (id: string) => ["services", id] as const,
  releases: (id: string) => ["services", id, "releases"] as const,
  instances: (id: string) => ["services", id, "instances"] as const,
  env: (id: string) => ["services", id, "env"] as const,
  events: (filter: EventQuery) => ["events", filter] as const,
  audit: (filter: AuditQuery) => ["audit", filter] as const,
  tokens: ["tokens"] as const,
  users: ["users"] as const,
  teams: ["teams"] as const,
  grants: (projectId: string) => ["projects", projectId, "grants"] as const,
};

export interface EventQuery {
  service_id?: string;
  project_id?: string;
  node_id?: string;
  kind?: string;
  limit?: number;
}

export interface AuditQuery {
  action?: string;
  resource_type?: string;
  limit?: number;
}

export const meQuery = queryOptions({
  queryKey: keys.me,
  queryFn: () => unwrap(api.GET("/api/v1/me")),
  retry: false,
  staleTime: 60_000,
});

export const useSetup = () =>
  useQuery({ queryKey: keys.setup, queryFn: () => unwrap(api.GET("/api/v1/setup")), retry: false });

export const useSettings = () =>
  useQuery({
    queryKey: keys.settings,
    queryFn: () => unwrap(api.GET("/api/v1/settings")),
    staleTime: 5 * 60_000,
  });

/** Usage arrives with heartbeats (every 10 s), which are not events: poll as often. */
export const useNodes = () =>
  useQuery({
    queryKey: keys.nodes,
    queryFn: () => unwrap(api.GET("/api/v1/nodes")),
    refetchInterval: 10_000,
  });

export const useProjects = () =>
  useQuery({ queryKey: keys.projects, queryFn: () => unwrap(api.GET("/api/v1/projects")) });

export const useProject = (id: string, enabled = true) =>
  useQuery({
    queryKey: keys.project(id),
    queryFn: () => unwrap(api.GET("/api/v1/projects/{id}", { params: { path: { id } } })),
    enabled,
  });

export const useServices = () =>
  useQuery({ queryKey: keys.services, queryFn: () => unwrap(api.GET("/api/v1/services")) });

export const useService = (id: string) =>
  useQuery({
    queryKey: keys.service(id),
    queryFn: () => unwrap(api.GET("/api/v1/services/{id}", { params: { path: { id } } })),
  });

export const useReleases = (id: string) =>
  useQuery({
    queryKey: keys.releases(id),
    queryFn: () =>
      unwrap(api.GET("/api/v1/services/{id}/releases", { params: { path: { id } } })),
  });

export const useInstances = (id: string) =>
  useQuery({
    queryKey: keys.instances(id),
    queryFn: () =>
      unwrap(api.GET("/api/v1/services/{id}/instances", { params: { path: { id } } })),
  });

export const useEnv = (id: string) =>
  useQuery({
    queryKey: keys.env(id),
    queryFn: () => unwrap(api.GET("/api/v1/services/{id}/env", { params: { path: { id } } })),
  });

export const useEvents = (filter: EventQuery) =>
  useQuery({
    queryKey: keys.events(filter),
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/events", {
          params: {
            query: {
              ...filter,
              limit: filter.limit ?? 100,
            },
          },
        }),
      ),
  });

export const useAudit = (filter: AuditQuery) =>
  useQuery({
    queryKey: keys.audit(filter),
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/audit", {
          params: {
            query: {
              ...filter,
              limit: filter.limit ?? 200,
            },
          },
        }),
      ),
  });

export const useTokens = () =>
  useQuery({ queryKey: keys.tokens, queryFn: () => unwrap(api.GET("/api/v1/tokens")) });

/** Admins only (the API refuses others): pass `enabled` false for them. */
export const useUsers = (enabled = true) => useQuery({ queryKey: keys.users, queryFn: () => unwrap(api.GET("/api/v1/users")), enabled });

export const useTeams = () => useQuery({ queryKey: keys.teams, queryFn: () => unwrap(api.GET("/api/v1/teams")) });

export const useGrants = (projectId: string) =>
  useQuery({
    queryKey: keys.grants(projectId),
    queryFn: () => unwrap(api.GET("/api/v1/projects/{id}/grants", { params: { path: { id: projectId } } })),
  });

/** Points arrive with heartbeats (every 10 s). */
export const useServiceMetrics = (id: string) =>
  useQuery({
    queryKey: ["services", id, "metrics"],
    queryFn: () => unwrap(api.GET("/api/v1/services/{id}/metrics", { params: { path: { id } } })),
    refetchInterval: 10_000,
  });
