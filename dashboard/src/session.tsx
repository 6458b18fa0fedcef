// Who is logged in, and what that role may do. A 401 anywhere (the session
// expired or was revoked) sends the user to the login page, which returns them
// to where they were.
import { useQuery } from "@tanstack/react-query";
import { navigate } from "wouter/use-browser-location";
import { ApiError, type Schemas, setCsrfToken } from "./api/client";
import { meQuery } from "./api/queries";

export type Role = Schemas["Role"];
const ORDER: Record<Role, number> = { viewer: 0, deployer: 1, admin: 2 };

export function allows(role: Role | undefined, needed: Role): boolean {
  return role !== undefined && ORDER[role] >= ORDER[needed];
}

export function useMe() {
  const me = useQuery(meQuery);
  if (me.data) setCsrfToken(me.data.csrf_token);
  return me;
}

/** The role of the current user, or undefined while unknown. */
export function useRole(): Role | undefined {
  return useMe().data?.role;
}

const PUBLIC = ["/login", "/setup"];

/** Where the login page should send the user back to; only a path of ours. */
export function safeNext(value: string | null): string {
  if (!value?.startsWith("/") || value.startsWith("//") || value.startsWith("/\\")) return "/";
  if (PUBLIC.some((p) => value.startsWith(p))) return "/";
  return value;
}

export function onUnauthorized(error: unknown): void {
  if (!(error instanceof ApiError) || error.status !== 401) return;
  const here = window.location.pathname + window.location.search;
  if (PUBLIC.some((p) => window.location.pathname.startsWith(p))) return;
  setCsrfToken(undefined);
  navigate(`/login?next=${encodeURIComponent(here)}&expired=1`, { replace: true });
}
