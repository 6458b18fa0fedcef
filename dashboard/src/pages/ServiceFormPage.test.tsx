// The form shows the API's validation message next to the input of the field the
// API names. fetch is replaced here only because a unit test has no server; the
// e2e run (e2e/run.mjs) does the same against the real binary.
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it, vi } from "vitest";
import { answerWithError } from "../testFetch";
import { Router } from "wouter";
import { memoryLocation } from "wouter/memory-location";
import { ServiceFormPage } from "./ServiceFormPage";

function renderForm() {
  const client = new QueryClient({ defaultOptions: { queries: { retry: false }, mutations: { retry: false } } });
  const location = memoryLocation({ path: "/projects/p1/services/new", record: true });
  render(
    <QueryClientProvider client={client}>
      <Router hook={location.hook}>
        <ServiceFormPage projectId="p1" />
      </Router>
    </QueryClientProvider>,
  );
  return location;
}

describe("service form", () => {
  it("puts the API's error on the field it names and keeps what was typed", async () => {
    const requests = answerWithError(400, { code: "validation", message: "scheme ext:: is not allowed", field: "source.git" });
    renderForm();
    const user = userEvent.setup();
    await user.type(screen.getByLabelText("Name"), "web");
    await user.type(screen.getByLabelText("Repository URL"), "ext::sh -c evil");
    await user.click(screen.getByRole("button", { name: "Create service" }));
    const git = screen.getByLabelText("Repository URL");
    expect(await screen.findByText("scheme ext:: is not allowed")).toBeInTheDocument();
    expect(git).toHaveAttribute("aria-invalid", "true");
    expect(git).toHaveValue("ext::sh -c evil");
    expect(screen.getByLabelText("Name")).not.toHaveAttribute("aria-invalid");
    expect(screen.getByRole("alert")).toHaveTextContent("Check the highlighted field.");
    const sent = requests[0];
    expect(sent?.method).toBe("POST");
    expect(new URL(sent?.url ?? "", "http://x").pathname).toBe("/api/v1/projects/p1/services");
    const body = (await sent?.json()) as { name: string; source: { git: string } };
    expect(body.name).toBe("web");
    expect(body.source.git).toBe("ext::sh -c evil");
  });

  it("goes to the new service when the API accepts it", async () => {
    vi.stubGlobal(
      "fetch",
      vi.fn(() =>
        Promise.resolve(
          new Response(JSON.stringify({ id: "s9", project_id: "p1", spec: {} }), { status: 201, headers: { "content-type": "application/json" } }),
        ),
      ),
    );
    const location = renderForm();
    const user = userEvent.setup();
    await user.type(screen.getByLabelText("Name"), "web");
    await user.click(screen.getByRole("button", { name: "Create service" }));
    await vi.waitFor(() => {
      expect(location.history.at(-1)).toBe("/services/s9");
    });
  });
});
