import type { Schemas } from "./api/client";

type Line = Schemas["LogEntry"];

// ESC/CSI/OSC sequences and other C0 controls except tab.
// eslint-disable-next-line no-control-regex
const CONTROL = /\u001b\[[0-?]*[ -/]*[@-~]|\u001b\][^\u0007\u001b]*(\u0007|\u001b\\)?|\u001b[@-_]?|[\u0000-\u0008\u000b-\u001f\u007f\u009b]/g;

/** One log line as plain terminal text: time, source, then the app's text without control sequences. */
export function plainLine(line: Line): string {
  const time = line.at.length >= 19 ? line.at.slice(11, 19) : line.at;
  const text = line.text.replace(CONTROL, "");
  const dim = "\u001b[2m";
  const reset = "\u001b[0m";
  const tone = line.stream === "stderr" ? "\u001b[33m" : "";
  return `${dim}${time} ${line.source}${reset} ${tone}${text}${reset}`;
}
