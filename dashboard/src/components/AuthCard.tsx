import type { ReactNode } from "react";
import { useSettings } from "../api/queries";
import { Brand } from "./Brand";

/** The centred, branded form of the setup and login pages. */
export function AuthCard(props: { title: string; onSubmit: () => void; children: ReactNode }) {
  const settings = useSettings();
  return (
    <div className="auth-page">
      <form
        className="card auth-card"
        onSubmit={(e) => {
          e.preventDefault();
          props.onSubmit();
        }}
      >
        <Brand settings={settings.data} />
        <h1>{props.title}</h1>
        {props.children}
      </form>
    </div>
  );
}
