import { useMutation, useQueryClient } from "@tanstack/react-query";
import { type ReactNode, useState } from "react";
import { Link, useLocation } from "wouter";
import { api, setCsrfToken, unwrap } from "../api/client";
import { useLiveEvents } from "../api/live";
import { useSettings } from "../api/queries";
import { useMe } from "../session";
import { applyTheme, storedTheme, type Theme } from "../theme";
import { Brand } from "./Brand";

const NAV = [
  ["/", "Overview"],
  ["/servers", "Servers"],
  ["/projects", "Projects"],
  ["/events", "Events"],
  ["/settings", "Settings"],
] as const;

export function Layout(props: { children: ReactNode }) {
  const me = useMe();
  const settings = useSettings();
  const live = useLiveEvents(me.isSuccess);
  const [location, setLocation] = useLocation();
  const client = useQueryClient();
  const [theme, setTheme] = useState<Theme>(storedTheme);
  const logout = useMutation({
    mutationFn: () => unwrap(api.POST("/api/v1/auth/logout")),
    onSettled: () => {
      setCsrfToken(undefined);
      client.clear();
      setLocation("/login");
    },
  });
  return (
    <div className="shell">
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <Brand settings={settings.data} />
        <nav aria-label="Main">
          <ul>
            {NAV.map(([href, label]) => {
              const current = href === "/" ? location === "/" : location.startsWith(href);
              return (
                <li key={href}>
                  <Link href={href} aria-current={current ? "page" : undefined}>
                    {label}
                  </Link>
                </li>
              );
            })}
          </ul>
        </nav>
        <div className="topbar-end">
          <span className={`live live-${live}`} title={`live updates: ${live}`}>
            <span aria-hidden="true">●</span> {live}
          </span>
          <label className="sr-only" htmlFor="theme">
            Theme
          </label>
          <select
            id="theme"
            value={theme}
            onChange={(e) => {
              const next = e.target.value as Theme;
              setTheme(next);
              applyTheme(next);
            }}
          >
            <option value="system">System theme</option>
            <option value="light">Light</option>
            <option value="dark">Dark</option>
          </select>
          <span className="who" data-testid="who">
            {me.data?.user.username} <span className="muted">({me.data?.role})</span>
          </span>
          <button
            type="button"
            className="btn btn-secondary"
            onClick={() => {
              logout.mutate();
            }}
            disabled={logout.isPending}
          >
            Log out
          </button>
        </div>
      </header>
      <main id="main">{props.children}</main>
    </div>
  );
}
