import { useMutation, useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { useLocation, useSearch } from "wouter";
import { api, setCsrfToken, unwrap } from "../api/client";
import { keys } from "../api/queries";
import { AuthCard } from "../components/AuthCard";
import { Button, Field, Notice } from "../components/ui";
import { safeNext } from "../session";

export function LoginPage() {
  const search = new URLSearchParams(useSearch());
  const next = safeNext(search.get("next"));
  const expired = search.get("expired") === "1";
  const changed = search.get("changed") === "1";
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [, setLocation] = useLocation();
  const client = useQueryClient();
  const login = useMutation({
    mutationFn: () => unwrap(api.POST("/api/v1/auth/login", { body: { username, password } })),
    onSuccess: (answer) => {
      setCsrfToken(answer.csrf_token);
      client.clear();
      void client.invalidateQueries({ queryKey: keys.me });
      setLocation(next);
    },
  });
  return (
    <AuthCard
      title="Log in"
      onSubmit={() => {
        login.mutate();
      }}
    >
        {expired && !login.error ? <p className="notice notice-warn" role="status">Your session ended. Log in again to go back where you were.</p> : null}
        {changed && !login.error ? <p className="notice notice-success" role="status">Your password was changed and every session ended. Log in with the new one.</p> : null}
        <Field label="Username" name="username" value={username} onChange={setUsername} autoComplete="username" required />
        <Field label="Password" name="password" type="password" value={password} onChange={setPassword} autoComplete="current-password" required />
        <Notice error={login.error} />
        <Button kind="primary" type="submit" busy={login.isPending}>
          Log in
        </Button>
    </AuthCard>
  );
}
