import { useMutation, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { Redirect, useLocation } from "wouter";
import { ApiError, api, setCsrfToken, unwrap } from "../api/client";
import { keys, useSetup } from "../api/queries";
import { AuthCard } from "../components/AuthCard";
import { Button, Field, Notice } from "../components/ui";
import { fieldError } from "../forms";

export function SetupPage() {
  const setup = useSetup();
  const [username, setUsername] = useState("admin");
  const [password, setPassword] = useState("");
  const [, setLocation] = useLocation();
  const client = useQueryClient();
  const create = useMutation({
    mutationFn: async () => {
      await unwrap(api.POST("/api/v1/setup", { body: { username, password } }));
      const login = await unwrap(api.POST("/api/v1/auth/login", { body: { username, password } }));
      setCsrfToken(login.csrf_token);
    },
    onSuccess: async () => {
      await client.invalidateQueries({ queryKey: keys.setup });
      await client.invalidateQueries({ queryKey: keys.me });
      setLocation("/");
    },
  });
  if (setup.data?.needed === false && !create.isPending && !create.isSuccess) return <Redirect to="/login" />;
  const error = create.error instanceof ApiError && create.error.field ? undefined : create.error;
  return (
    <AuthCard
      title="Create the first admin"
      onSubmit={() => {
        create.mutate();
      }}
    >
        <p className="muted">This account can add servers, users and everything else. Only the first visitor sees this page.</p>
        <Field label="Username" name="username" value={username} onChange={setUsername} autoComplete="username" required error={fieldError(create.error, "username")} />
        <Field
          label="Password"
          name="password"
          type="password"
          value={password}
          onChange={setPassword}
          autoComplete="new-password"
          required
          hint="At least 12 characters."
          error={fieldError(create.error, "password")}
        />
        <Notice error={error} />
        <Button kind="primary" type="submit" busy={create.isPending}>
          Create admin and log in
        </Button>
    </AuthCard>
  );
}
