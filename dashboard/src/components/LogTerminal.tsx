// Live instance logs in a terminal view. Lines are written to xterm as text (it
// never interprets HTML); control sequences from the app are stripped first so an
// app cannot move the cursor, retitle the tab or hide earlier lines.
import { FitAddon } from "@xterm/addon-fit";
import { SearchAddon } from "@xterm/addon-search";
import { Terminal } from "@xterm/xterm";
import "@xterm/xterm/css/xterm.css";
import { useEffect, useRef, useState } from "react";
import type { Schemas } from "../api/client";
import { useLogs } from "../api/queries";
import { plainLine, newLines } from "../logText";
import { Button, Notice } from "./ui";

export default function LogTerminal(props: { serviceId: string }) {
  const [paused, setPaused] = useState(false);
  const [query, setQuery] = useState("");
  const logs = useLogs(props.serviceId, { follow: !paused, tail: 500 });
  const host = useRef<HTMLDivElement>(null);
  const terminal = useRef<{ term: Terminal; search: SearchAddon; fit: FitAddon } | null>(null);
  const written = useRef<Schemas["LogEntry"][]>([]);

  useEffect(() => {
    if (!host.current) return;
    // screenReaderMode: the lines are exposed to assistive technology, and Tab
    // leaves the terminal instead of being taken as input.
    const term = new Terminal({
      convertEol: true,
      disableStdin: true,
      scrollback: 5000,
      fontSize: 12,
      cursorStyle: "underline",
      screenReaderMode: true,
    });
    const fit = new FitAddon();
    const search = new SearchAddon();
    term.loadAddon(fit);
    term.loadAddon(search);
    term.open(host.current);
    fit.fit();
    terminal.current = { term, fit, search };
    const onResize = () => {
      fit.fit();
    };
    window.addEventListener("resize", onResize);
    return () => {
      window.removeEventListener("resize", onResize);
      term.dispose();
      terminal.current = null;
      written.current = [];
    };
  }, []);

  // Append only what is new since the last read (the API answers the newest tail).
  useEffect(() => {
    const t = terminal.current;
    // Paused: other refreshes of the query (live events) write nothing; resuming catches up.
    if (!t || !logs.data || paused) return;
    const fresh = newLines(written.current, logs.data);
    for (const line of fresh) t.term.writeln(plainLine(line));
    written.current = logs.data;
  }, [logs.data, paused]);

  return (
    <div className="terminal-box">
      <div className="row">
        <Button
          onClick={() => {
            setPaused((p) => !p);
          }}
        >
          {paused ? "Follow" : "Pause"}
        </Button>
        <label className="sr-only" htmlFor="log-search">
          Search logs
        </label>
        <input
          id="log-search"
          type="search"
          placeholder="Search logs"
          value={query}
          onChange={(e) => {
            setQuery(e.target.value);
            if (e.target.value) terminal.current?.search.findNext(e.target.value);
          }}
          onKeyDown={(e) => {
            if (e.key === "Enter" && query) terminal.current?.search.findNext(query);
          }}
        />
        <span className="muted">{paused ? "paused" : "following"}</span>
      </div>
      <Notice error={logs.error} />
      <div className="terminal" ref={host} data-testid="log-terminal" role="log" aria-label="instance logs" />
    </div>
  );
}
