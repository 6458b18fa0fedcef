// Changing one's password: a mismatch never reaches the API, and the API's
// refusal of the current password lands on that field.
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import { Router } from "wouter";
import { memoryLocation } from "wouter/memory-location";
import { answerWithError } from "../testFetch";
import { PasswordSection } from "./SettingsPage";

function renderSection() {
  const client = new QueryClient({ defaultOptions: { queries: { retry: false }, mutations: { retry: false } } });
  client.setQueryData(["me"], { auth: "session", role: "viewer", csrf_token: "t", user: { id: "u1", username: "ada", role: "viewer", created_at: "2026-12-01T10:00:00Z" } });
  render(
    <QueryClientProvider client={client}>
      <Router hook={memoryLocation({ path: "/settings" }).hook}>
        <PasswordSection />
      </Router>
    </QueryClientProvider>,
  );
}

describe("password change", () => {
  it("checks the repeat itself and shows the API's error on the current password", async () => {
    const requests = answerWithError(422, { code: "validation", message: "is missing or wrong", field: "current_password" });
    renderSection();
    const user = userEvent.setup();
    await user.type(screen.getByLabelText("Current password"), "old-password");
    await user.type(screen.getByLabelText("New password"), "a-new-long-password");
    await user.type(screen.getByLabelText("New password again"), "a-new-long-passwort");
    await user.click(screen.getByRole("button", { name: "Change password" }));
    expect(await screen.findByText("does not match the new password")).toBeInTheDocument();
    expect(requests).toHaveLength(0);
    await user.clear(screen.getByLabelText("New password again"));
    await user.type(screen.getByLabelText("New password again"), "a-new-long-password");
    await user.click(screen.getByRole("button", { name: "Change password" }));
    expect(await screen.findByText("is missing or wrong")).toBeInTheDocument();
    expect(screen.getByLabelText("Current password")).toHaveAttribute("aria-invalid", "true");
    const sent = requests[0];
    expect(sent?.method).toBe("PATCH");
    expect(new URL(sent?.url ?? "", "http://x").pathname).toBe("/api/v1/users/u1");
    expect(await sent?.json()).toEqual({ password: "a-new-long-password", current_password: "old-password" });
  });
});
