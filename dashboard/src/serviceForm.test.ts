import { describe, expect, it } from "vitest";
import { emptyForm, fromSpec, newRoute, parseLabels, parseVolumes, toSpec } from "./serviceForm";

describe("service form", () => {
  it("turns a filled form into the API's spec", () => {
    const spec = toSpec({
      ...emptyForm,
      name: " web ",
      git: "file:///srv/app.git",
      ref: "",
      build: "  ",
      run: "python3 app.py",
      routes: [
        { ...newRoute(), host: "web.localhost" },
        newRoute(),
        { ...newRoute(), path: "/web", strip: true, maxBodyMb: "512", balance: "least_connections" },
      ],
      env: [
        { name: "GREETING", value: "hi", secret: false },
        { name: "TOKEN", value: "s3cret", secret: true },
        { name: " ", value: "ignored", secret: false },
      ],
      healthPath: "/healthz",
      memoryMb: "256",
      replicas: "3",
      nodes: "a, b,,",
      labels: "role=worker, zone = x",
      reschedule: true,
    });
    expect(spec.name).toBe("web");
    expect(spec.source).toEqual({ git: "file:///srv/app.git", ref: "main" });
    expect(spec.build).toBeNull();
    expect(spec.run).toBe("python3 app.py");
    expect(spec.routes).toEqual([
      { host: "web.localhost", path: null, strip_prefix: false },
      { host: null, path: "/web", strip_prefix: true, max_body_mb: 512, balance: "least_connections" },
    ]);
    expect(spec.env).toEqual({ GREETING: "hi", TOKEN: "s3cret" });
    expect(spec.secrets).toEqual(["TOKEN"]);
    expect(spec.health?.path).toBe("/healthz");
    expect(spec.resources?.memory_mb).toBe(256);
    expect(spec.resources?.cpu_millis).toBeNull();
    expect(spec.replicas).toBe(3);
    expect(spec.placement).toEqual({ nodes: ["a", "b"], labels: { role: "worker", zone: "x" }, every_node: false, reschedule: true });
  });

  it("sends a non-number as NaN so the API, not the form, names the field", () => {
    expect(Number.isNaN(toSpec({ ...emptyForm, replicas: "many" }).replicas)).toBe(true);
  });

  it("round-trips a spec through the form", () => {
    const form = {
      ...emptyForm,
      name: "api",
      git: "https://example.com/a.git",
      ref: "v1",
      routes: [{ ...newRoute(), host: "a.example.com", path: "/x", strip: true, maxBodyMb: "8", keep: { retries: 0, response_timeout_secs: 300 } }],
      env: [{ name: "A", value: "********", secret: true }],
      memoryMb: "128",
      labels: "role=web",
    };
    expect(fromSpec(toSpec(form))).toEqual(form);
  });

  it("keeps the route policy it does not show", () => {
    const spec = toSpec(fromSpec({ name: "a", source: { git: "https://example.com/a.git" }, routes: [{ path: "/api", connect_timeout_ms: 500, retries: 1 }] }));
    expect(spec.routes).toEqual([{ host: null, path: "/api", strip_prefix: false, connect_timeout_ms: 500, retries: 1 }]);
  });

  it("keeps a label without a value so the API can say what is wrong", () => {
    expect(parseLabels("a=1,b, c=")).toEqual({ a: "1", b: "", c: "" });
  });
});

describe("volumes", () => {
  it("are names, or name:path, and come back as written", () => {
    expect(parseVolumes(" data, uploads:storage/app ,, ")).toEqual([
      { name: "data", path: "data" },
      { name: "uploads", path: "storage/app" },
    ]);
    const form = { ...emptyForm, name: "web", git: "https://example.com/web.git", volumes: "data, uploads:storage/app" };
    expect(toSpec(form).volumes).toEqual(parseVolumes(form.volumes));
    expect(fromSpec(toSpec(form)).volumes).toBe("data, uploads:storage/app");
    expect(toSpec(emptyForm).volumes).toEqual([]);
  });
});
