// The project settings send the name and shared env with PATCH and put the API's
// error on the variable it names. fetch is replaced here only because a unit test
// has no server; the e2e run does the same against the real binary.
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import { answerWithError } from "../testFetch";
import { ProjectSettings } from "./ProjectPage";

const project = {
  id: "p1",
  name: "shop",
  env: { REGION: "eu" },
  created_by: "u1",
  created_at: "2026-12-01T10:00:00Z",
  updated_at: "2026-12-01T10:00:00Z",
  service_count: 0,
};

function renderSettings() {
  const client = new QueryClient({ defaultOptions: { queries: { retry: false }, mutations: { retry: false } } });
  render(
    <QueryClientProvider client={client}>
      <ProjectSettings project={project} />
    </QueryClientProvider>,
  );
}

describe("project settings", () => {
  it("sends the name and the variables, and shows the API's error on the variable", async () => {
    const requests = answerWithError(422, { code: "validation", message: "must be letters, digits and _", field: "env.1BAD" });
    renderSettings();
    const user = userEvent.setup();
    expect(screen.getByLabelText("Variable 1 name")).toHaveValue("REGION");
    await user.clear(screen.getByLabelText("Project name"));
    await user.type(screen.getByLabelText("Project name"), "store");
    await user.click(screen.getByRole("button", { name: "Add variable" }));
    await user.type(screen.getByLabelText("Variable 2 name"), "1BAD");
    await user.type(screen.getByLabelText("Variable 2 value"), "x");
    await user.click(screen.getByRole("button", { name: "Save project" }));
    expect(await screen.findByText("must be letters, digits and _")).toBeInTheDocument();
    expect(screen.getByLabelText("Variable 2 name")).toHaveAttribute("aria-invalid", "true");
    expect(screen.getByLabelText("Variable 1 name")).not.toHaveAttribute("aria-invalid");
    expect(screen.getByRole("alert")).toHaveTextContent("Check the highlighted field.");
    const sent = requests[0];
    expect(sent?.method).toBe("PATCH");
    expect(new URL(sent?.url ?? "", "http://x").pathname).toBe("/api/v1/projects/p1");
    expect(await sent?.json()).toEqual({ name: "store", env: { REGION: "eu", "1BAD": "x" } });
  });
});
