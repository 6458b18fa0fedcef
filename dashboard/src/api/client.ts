// The one way the dashboard talks to the control plane: the public /api/v1 API,
// typed from the OpenAPI document the server serves (src/api/schema.d.ts is
// generated from docs/openapi.json by `npm run gen:api`).
import createClient, { type Middleware } from "openapi-fetch";
import type { components, paths } from "./schema";

export type Schemas = components["schemas"];

/** An answer of the API that is not 2xx, with the field the server named. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly field: string | undefined;
  readonly requestId: string | undefined;

  constructor(status: number, code: string, message: string, field?: string, requestId?: string) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.field = field ?? undefined;
    this.requestId = requestId ?? undefined;
  }

  /** What a person reads: the server's message, with the request id of a 5xx. */
  get human(): string {
    if (this.status === 0) return "the control plane cannot be reached; check your connection";
    if (this.requestId) return `${this.message} (request ${this.requestId})`;
    return this.message;
  }
}

let csrfToken: string | undefined;

/** Remembered from login or /me; sent on every mutation of a cookie session. */
export function setCsrfToken(token: string | null | undefined): void {
  csrfToken = token ?? undefined;
}

const csrf: Middleware = {
  onRequest({ request }) {
    if (csrfToken && request.method !== "GET" && request.method !== "HEAD") {
      request.headers.set("X-CSRF-Token", csrfToken);
    }
    return request;
  },
};

// fetch is looked up at call time (not captured once) so tests can stand in for the server.
export const api = createClient<paths>({ baseUrl: window.location.origin, credentials: "same-origin", fetch: (request) => globalThis.fetch(request) });
api.use(csrf);

interface Outcome<T> {
  data?: T;
  error?: unknown;
  response: Response;
}

function errorFrom(response: Response, body: unknown): ApiError {
  const detail =
    typeof body === "object" && body !== null && "error" in body
      ? (body as { error: Partial<Schemas["ErrorDetail"]> }).error
      : undefined;
  return new ApiError(
    response.status,
    detail?.code ?? "http_" + String(response.status),
    detail?.message ?? `the control plane answered ${String(response.status)} ${response.statusText}`,
    detail?.field ?? undefined,
    detail?.request_id ?? undefined,
  );
}

/** Data of a 2xx answer, or an ApiError carrying the server's message and field. */
export async function unwrap<T>(call: Promise<Outcome<T>>): Promise<T> {
  let outcome: Outcome<T>;
  try {
    outcome = await call;
  } catch {
    throw new ApiError(0, "network", "network error");
  }
  if (!outcome.response.ok) throw errorFrom(outcome.response, outcome.error);
  return outcome.data as T;
}
