// For component tests only: a unit test has no server, so fetch answers every
// request with one API error (the e2e run talks to the real binary instead).
import { afterEach, vi } from "vitest";

afterEach(() => {
  vi.unstubAllGlobals();
});

/** Makes fetch answer `status` with the API's error shape; returns the requests sent. */
export function answerWithError(status: number, error: { code: string; message: string; field?: string }): Request[] {
  const requests: Request[] = [];
  vi.stubGlobal(
    "fetch",
    vi.fn((request: Request) => {
      requests.push(request);
      return Promise.resolve(new Response(JSON.stringify({ error }), { status, headers: { "content-type": "application/json" } }));
    }),
  );
  return requests;
}
