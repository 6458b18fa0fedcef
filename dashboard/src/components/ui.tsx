// Small building blocks named after what the user sees. Everything renders user
// text as text (React escapes it); nothing here sets HTML.
import { type ReactNode, useId, useRef, useState } from "react";
import { ApiError } from "../api/client";

export function humanError(error: unknown): string {
  if (error instanceof ApiError) return error.human;
  if (error instanceof Error) return error.message;
  return "something went wrong";
}

export function Button(props: {
  children: ReactNode;
  onClick?: () => void;
  busy?: boolean;
  kind?: "primary" | "secondary" | "danger";
  type?: "button" | "submit";
  disabled?: boolean;
  label?: string;
}) {
  return (
    <button
      type={props.type ?? "button"}
      className={`btn btn-${props.kind ?? "secondary"}`}
      onClick={props.onClick}
      disabled={props.disabled === true || props.busy === true}
      aria-busy={props.busy === true}
      aria-label={props.label}
    >
      {props.busy === true ? <span className="spinner" aria-hidden="true" /> : null}
      {props.children}
    </button>
  );
}

/** A labelled input whose error (from the API's `field`) is announced with it. */
export function Field(props: {
  label: string;
  name: string;
  value: string;
  onChange: (value: string) => void;
  error?: string | undefined;
  hint?: string;
  type?: string;
  required?: boolean;
  placeholder?: string;
  autoComplete?: string;
  multiline?: boolean;
}) {
  const id = useId();
  const describedBy = props.error ? `${id}-error` : props.hint ? `${id}-hint` : undefined;
  const common = {
    id,
    name: props.name,
    value: props.value,
    required: props.required,
    placeholder: props.placeholder,
    "aria-invalid": props.error ? true : undefined,
    "aria-describedby": describedBy,
  };
  return (
    <div className={`field${props.error ? " field-error" : ""}`}>
      <label htmlFor={id}>{props.label}</label>
      {props.multiline === true ? (
        <textarea
          {...common}
          rows={3}
          onChange={(e) => {
            props.onChange(e.target.value);
          }}
        />
      ) : (
        <input
          {...common}
          type={props.type ?? "text"}
          autoComplete={props.autoComplete}
          onChange={(e) => {
            props.onChange(e.target.value);
          }}
        />
      )}
      {props.error ? (
        <p className="error-text" id={`${id}-error`}>
          {props.error}
        </p>
      ) : props.hint ? (
        <p className="hint" id={`${id}-hint`}>
          {props.hint}
        </p>
      ) : null}
    </div>
  );
}

export function Checkbox(props: { label: string; checked: boolean; onChange: (v: boolean) => void; name?: string }) {
  const id = useId();
  return (
    <div className="checkbox">
      <input
        id={id}
        type="checkbox"
        name={props.name}
        checked={props.checked}
        onChange={(e) => {
          props.onChange(e.target.checked);
        }}
      />
      <label htmlFor={id}>{props.label}</label>
    </div>
  );
}

export function Select<T extends string>(props: {
  label: string;
  value: T;
  options: readonly T[];
  /** Shown instead of an option's value. */
  labels?: Partial<Record<T, string>>;
  onChange: (v: T) => void;
  name?: string;
}) {
  const id = useId();
  return (
    <div className="field">
      <label htmlFor={id}>{props.label}</label>
      <select
        id={id}
        name={props.name}
        value={props.value}
        onChange={(e) => {
          props.onChange(e.target.value as T);
        }}
      >
        {props.options.map((o) => (
          <option key={o} value={o}>
            {props.labels?.[o] ?? o}
          </option>
        ))}
      </select>
    </div>
  );
}

/** Success or failure of the last action, announced to screen readers. */
export function Notice(props: { error?: unknown; success?: string | null }) {
  if (props.error) {
    return (
      <p className="notice notice-error" role="alert">
        {humanError(props.error)}
      </p>
    );
  }
  if (props.success) {
    return (
      <p className="notice notice-success" role="status">
        {props.success}
      </p>
    );
  }
  return null;
}

const GOOD = new Set(["live", "healthy", "ready", "applied", "info"]);
const BAD = new Set(["failed", "unhealthy", "exited", "unreachable", "degraded", "error", "crashed"]);
const WARN = new Set(["warning", "warn", "applying", "starting", "building", "queued", "unknown"]);

export function StatusBadge(props: { status: string }) {
  const tone = GOOD.has(props.status)
    ? "good"
    : BAD.has(props.status)
      ? "bad"
      : WARN.has(props.status)
        ? "warn"
        : "neutral";
  return <span className={`badge badge-${tone}`}>{props.status}</span>;
}

export function CopyButton(props: { text: string; label?: string }) {
  const [copied, setCopied] = useState<"idle" | "copied" | "failed">("idle");
  return (
    <button
      type="button"
      className="btn btn-secondary"
      onClick={() => {
        navigator.clipboard.writeText(props.text).then(
          () => {
            setCopied("copied");
          },
          () => {
            setCopied("failed");
          },
        );
      }}
    >
      {copied === "copied" ? "Copied" : copied === "failed" ? "Copy failed: select the text" : (props.label ?? "Copy")}
    </button>
  );
}

/** A destructive action that asks first, in a modal dialog that traps focus. */
export function ConfirmButton(props: {
  children: ReactNode;
  question: string;
  confirmLabel: string;
  onConfirm: () => void;
  busy?: boolean;
}) {
  const dialog = useRef<HTMLDialogElement>(null);
  return (
    <>
      <Button
        kind="danger"
        busy={props.busy}
        onClick={() => {
          dialog.current?.showModal();
        }}
      >
        {props.children}
      </Button>
      <dialog ref={dialog} className="dialog" aria-label={props.question}>
        <p>{props.question}</p>
        <div className="row">
          <Button
            onClick={() => {
              dialog.current?.close();
            }}
          >
            Cancel
          </Button>
          <Button
            kind="danger"
            onClick={() => {
              dialog.current?.close();
              props.onConfirm();
            }}
          >
            {props.confirmLabel}
          </Button>
        </div>
      </dialog>
    </>
  );
}

export function Section(props: { title: string; children: ReactNode; actions?: ReactNode }) {
  const id = useId();
  return (
    <section className="card" aria-labelledby={id}>
      <header className="card-head">
        <h2 id={id}>{props.title}</h2>
        {props.actions ? <div className="row">{props.actions}</div> : null}
      </header>
      {props.children}
    </section>
  );
}

export function Loading(props: { what: string }) {
  return (
    <p className="muted" role="status">
      <span className="spinner" aria-hidden="true" /> Loading {props.what}…
    </p>
  );
}

export function QueryState(props: { error: unknown; what: string }) {
  return props.error ? <Notice error={props.error} /> : <Loading what={props.what} />;
}

export function Time(props: { at: string | null | undefined }) {
  if (!props.at) return <span className="muted">never</span>;
  const date = new Date(props.at);
  return (
    <time dateTime={props.at} title={date.toLocaleString()}>
      {relative(date)}
    </time>
  );
}

export function relative(date: Date, now: number = Date.now()): string {
  const seconds = Math.round((now - date.getTime()) / 1000);
  if (Math.abs(seconds) < 5) return "just now";
  const future = seconds < 0;
  const abs = Math.abs(seconds);
  const [value, unit] =
    abs < 60 ? [abs, "s"] : abs < 3600 ? [Math.floor(abs / 60), "min"] : abs < 86400 ? [Math.floor(abs / 3600), "h"] : [Math.floor(abs / 86400), "d"];
  return future ? `in ${String(value)} ${unit}` : `${String(value)} ${unit} ago`;
}

export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 && unit > 0 ? 1 : 0)} ${units[unit] ?? "B"}`;
}

/** A data table: column headings ("" for an actions column, named for screen readers) and rows. */
export function Table(props: { columns: readonly string[]; children: ReactNode; testId?: string }) {
  return (
    <div className="table-wrap">
      <table data-testid={props.testId}>
        <thead>
          <tr>
            {props.columns.map((column, i) => (
              <th key={i} scope="col">
                {column === "" ? <span className="sr-only">Actions</span> : column}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>{props.children}</tbody>
      </table>
    </div>
  );
}
