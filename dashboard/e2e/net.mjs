// Shared by the e2e run and bench/dashboard.mjs.
import { createServer } from "node:net";

/** A loopback port nobody listens on right now. */
export async function freePort() {
  return new Promise((ok, bad) => {
    const server = createServer();
    server.once("error", bad);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
}
