// Live instance logs in a terminal view. Lines are written to xterm as text (it
// never interprets HTML); control sequences from the app are stripped first so an
// app cannot move the cursor, retitle the tab or hide earlier lines.
import { FitAddon } from "@xterm/addon-fit";
import { SearchAddon } from "@xterm/addon-search";
import { Terminal } from "@xterm/xterm";
import "@xterm/xterm/css/xterm.css";
import { useEffect, useRef, useState } from "react";
import { useLogStream } from "../api/logStream";
import { plainLine } from "../logText";
import { Button } from "./ui";

const STATE_TEXT = {
  connecting: "connecting…",
  live: "following",
  ended: "ended",
  offline: "offline",
} as const;

export default function LogTerminal(props: { serviceId: string }) {
  const [paused, setPaused] = useState(false);
  const [query, setQuery] = useState("");
  const host = useRef<HTMLDivElement>(null);
  const terminal = useRef<{ term: Terminal; search: SearchAddon; fit: FitAddon } | null>(null);
  // Paused, the stream is closed; resuming opens it again and catches up.
  const stream = useLogStream(props.serviceId, { tail: 500, enabled: !paused }, (lines) => {
    const term = terminal.current?.term;
    if (term) for (const line of lines) term.writeln(plainLine(line));
  });

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
    };
  }, []);

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
        <span className="muted" data-testid="log-state">
          {paused ? "paused" : STATE_TEXT[stream.state]}
        </span>
      </div>
      {stream.state === "offline" ? <p className="error-text" role="alert">The log stream is not available; reload the page to try again.</p> : null}
      {stream.state === "ended" ? <p className="muted">The log stream ended: {stream.endReason}.</p> : null}
      <div className="terminal" ref={host} data-testid="log-terminal" role="log" aria-label="instance logs" />
    </div>
  );
}
