import { describe, expect, it, vi } from "vitest";
import { ApiError } from "./api/client";
import { withGaps } from "./chartData";
import { keysFor, refreshOlderThan } from "./api/live";
import { QueryClient, QueryObserver } from "@tanstack/react-query";
import { fieldError, isFormLevel } from "./forms";
import { failing } from "./health";
import { logStreamUrl, Seen } from "./api/logStream";
import { plainLine } from "./logText";
import { exposure } from "./security";
import { safeNext } from "./session";
import { relative } from "./components/ui";

const line = (text: string, at = "2026-12-01T10:00:00.000Z") => ({ at, stream: "stdout", source: "web-1", text });

describe("field errors", () => {
  const error = new ApiError(400, "validation", "must start with '/'", "routes[0].path");
  it("belong to the input that claims the field or its prefix", () => {
    expect(fieldError(error, "routes[0].path")).toBe("must start with '/'");
    expect(fieldError(error, "routes")).toBe("must start with '/'");
    expect(fieldError(error, "route")).toBeUndefined();
    expect(fieldError(new Error("x"), "routes")).toBeUndefined();
  });
  it("are form-level when no input claims them", () => {
    expect(isFormLevel(error, ["name", "routes"])).toBe(false);
    expect(isFormLevel(new ApiError(409, "conflict", "taken"), ["name"])).toBe(true);
    expect(isFormLevel(undefined, ["name"])).toBe(false);
  });
});

describe("log lines", () => {
  it("strips control sequences an app could use to rewrite the terminal", () => {
    const text = plainLine(line("a\u001b[2Jb\u001b]0;pwned\u0007c\rd\u0000e"));
    expect(text).toContain("abcde");
    expect(text).not.toContain("pwned");
    expect(text).not.toContain("[2J");
  });
  it("lets each line through once when a reconnect repeats the newest", () => {
    const seen = new Seen();
    const first = [line("a", "2026-12-01T10:00:00.001Z"), line("b", "2026-12-01T10:00:00.002Z")];
    expect(first.filter((l) => seen.admit(l)).map((l) => l.text)).toEqual(["a", "b"]);
    // The repeat, a new line at the same millisecond as the last, and a later one.
    const again = [...first, line("b2", "2026-12-01T10:00:00.002Z"), line("c", "2026-12-01T10:00:01.000Z")];
    expect(again.filter((l) => seen.admit(l)).map((l) => l.text)).toEqual(["b2", "c"]);
    expect(again.filter((l) => seen.admit(l))).toEqual([]);
  });
  it("asks for the stream of a service or of one build", () => {
    expect(logStreamUrl("s/1", { tail: 500 })).toBe("/api/v1/services/s%2F1/logs/stream?tail=500");
    expect(logStreamUrl("s1", { tail: 10, build: 3 })).toBe("/api/v1/services/s1/logs/stream?tail=10&build=3");
  });
});

describe("what is failing", () => {
  const now = Date.parse("2026-12-01T10:10:00Z");
  const node = (name: string, status: string, convergence: string) =>
    ({ id: name, name, status, convergence, problems: convergence === "degraded" ? ["web: build failed"] : [] }) as never;
  const event = (kind: string, minutesAgo: number, service = "s1") =>
    ({ id: `${kind}-${String(minutesAgo)}`, kind, service_id: service, node_id: null, message: kind, time: new Date(now - minutesAgo * 60_000).toISOString() }) as never;
  it("lists unreachable and degraded servers", () => {
    const out = failing([node("a", "ready", "applied"), node("b", "unreachable", "applied"), node("c", "ready", "degraded")], [], now);
    expect(out.map((p) => p.text)).toEqual(["server b is unreachable", "server c: web: build failed"]);
  });
  it("drops a failure that a later success superseded, and old ones", () => {
    expect(failing([], [event("release.live", 1), event("build.failed", 2)], now)).toEqual([]);
    expect(failing([], [event("build.failed", 1), event("release.live", 2)], now)).toHaveLength(1);
    expect(failing([], [event("build.failed", 30)], now)).toEqual([]);
  });
});

describe("live updates", () => {
  it("refresh what an event changes", () => {
    const k = keysFor({ kind: "release.live", service_id: "s1", project_id: "p1" });
    expect(k).toContainEqual(["services", "s1"]);
    expect(k).toContainEqual(["events"]);
    expect(keysFor({ kind: "node.joined", service_id: null, project_id: null })).toContainEqual(["nodes"]);
  });
  it("re-read what was fetched before the stream was ready, and only that", async () => {
    const client = new QueryClient();
    client.setQueryData(["services", "s1", "releases"], ["building"], { updatedAt: 1_000 });
    client.setQueryData(["services", "s1", "env"], ["A"], { updatedAt: 3_000 });
    await refreshOlderThan(client, 2_000);
    expect(client.getQueryState(["services", "s1", "releases"])?.isInvalidated).toBe(true);
    expect(client.getQueryState(["services", "s1", "env"])?.isInvalidated).toBe(false);
  });
  it("read again a query whose fetch was under way when the stream became ready", async () => {
    const client = new QueryClient();
    let release: (() => void) | undefined;
    let calls = 0;
    const observer = new QueryObserver(client, {
      queryKey: ["services", "s1", "releases"],
      queryFn: () => {
        calls += 1;
        if (calls > 1) return Promise.resolve("failed");
        // The first answer is held until the stream is ready, as in the race.
        return new Promise<string>((resolve) => {
          release = () => {
            resolve("building");
          };
        });
      },
    });
    const unsubscribe = observer.subscribe(() => undefined);
    await vi.waitFor(() => {
      expect(calls).toBe(1);
    });
    void refreshOlderThan(client, Date.now() + 1);
    release?.();
    await vi.waitFor(() => {
      expect(client.getQueryData(["services", "s1", "releases"])).toBe("failed");
    });
    expect(calls).toBe(2);
    unsubscribe();
  });
});

describe("login return path", () => {
  it("only returns to a path of ours", () => {
    expect(safeNext("/services/1?x=2")).toBe("/services/1?x=2");
    expect(safeNext("//evil.example")).toBe("/");
    expect(safeNext("/\\evil.example")).toBe("/");
    expect(safeNext("https://evil.example")).toBe("/");
    expect(safeNext("/login?next=/x")).toBe("/");
    expect(safeNext(null)).toBe("/");
  });
});

describe("relative time", () => {
  it("reads like a person would say it", () => {
    const now = Date.parse("2026-12-01T10:00:00Z");
    expect(relative(new Date(now - 2000), now)).toBe("just now");
    expect(relative(new Date(now - 90_000), now)).toBe("1 min ago");
    expect(relative(new Date(now + 7_200_000), now)).toBe("in 2 h");
  });
});

describe("chart data", () => {
  it("puts a gap where no interval was reported", () => {
    const point = (at: string, requests_per_second: number) =>
      ({ at, requests: 0, requests_per_second, server_errors: 0, mean_latency_ms: null, memory_bytes: null }) as const;
    const [xs, ys] = withGaps(
      [point("2026-12-01T10:00:00Z", 1), point("2026-12-01T10:00:10Z", 2), point("2026-12-01T10:00:40Z", 3)],
      { value: (p) => p.requests_per_second },
    );
    const start = Date.parse("2026-12-01T10:00:00Z") / 1000;
    expect(xs.map((x) => x - start)).toEqual([0, 10, 20, 30, 40]);
    expect(ys).toEqual([1, 2, null, null, 3]);
  });
});

describe("firewall exposure", () => {
  const firewall = (mode: "A" | "B" | "C", status: string, ports: number[] | null, extra: object = {}) => ({ mode, status, open_tcp_ports: ports, ...extra });
  it("says what is open in each mode", () => {
    expect(exposure({ security_mode: "A", firewall: firewall("A", "applied", null) }).text).toBe("every port open");
    expect(exposure({ security_mode: "B", firewall: firewall("B", "applied", [22, 8080], { ssh_from: ["10.0.0.0/8"] }) }).text).toBe(
      "TCP 22, 8080 open (SSH from 10.0.0.0/8)",
    );
    expect(exposure({ security_mode: "C", firewall: firewall("C", "applied", []) }).text).toBe("nothing open inbound");
    expect(exposure({ security_mode: "B", firewall: null }).text).toBe("not reported yet");
  });
  it("flags a reverted change with the mode asked for and the reason", () => {
    const shown = exposure({
      security_mode: "C",
      firewall: firewall("B", "reverted", [22], { message: "could not reach the control plane" }),
    });
    expect(shown).toEqual({ mode: "B", trouble: true, text: "reverted · TCP 22 open · C asked for · could not reach the control plane" });
  });
});
