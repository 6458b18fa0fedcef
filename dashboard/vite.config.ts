import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { brotliCompressSync, constants, gzipSync } from "node:zlib";
import react from "@vitejs/plugin-react";
import type { Plugin } from "vite";
import { defineConfig } from "vitest/config";

/**
 * Writes `.br` and `.gz` beside every text asset: the control plane serves them
 * to clients that accept them, so it never compresses at request time.
 */
function precompress(): Plugin {
  return {
    name: "nanoscale-precompress",
    apply: "build",
    closeBundle() {
      const walk = (dir: string): string[] =>
        readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]));
      for (const file of walk("dist")) {
        if (!/\.(js|css|html|svg|json)$/.test(file)) continue;
        const bytes = readFileSync(file);
        if (bytes.length < 1024) continue;
        writeFileSync(`${file}.gz`, gzipSync(bytes, { level: 9 }));
        writeFileSync(`${file}.br`, brotliCompressSync(bytes, { params: { [constants.BROTLI_PARAM_QUALITY]: 11 } }));
      }
    },
  };
}

// The dashboard is served by the control plane from the same origin as the API,
// so there is no CORS and the session cookie (SameSite=Strict) just works. In
// development `vite` proxies the API to a running `nanoscale up`.
export default defineConfig({
  plugins: [react(), precompress()],
  build: {
    outDir: "dist",
    assetsDir: "assets",
    // Hashed file names under assets/ are served as immutable by the control plane.
    sourcemap: false,
    target: "es2022",
    chunkSizeWarningLimit: 400,
  },
  server: {
    proxy: {
      "/api": { target: process.env.NANOSCALE_URL ?? "http://127.0.0.1:4000", changeOrigin: false },
    },
  },
  test: {
    environment: "jsdom",
    include: ["src/**/*.test.{ts,tsx}"],
    setupFiles: ["src/test-setup.ts"],
  },
});
