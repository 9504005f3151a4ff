/**
 * Builds the demo page into the Python package (`src/engram_voice/static/app`), which the
 * service serves at `/` in local mode. Asset paths are relative, so the same output can be
 * uploaded as static files (Azure Static Web Apps) with `npm run build:static`.
 */
import { defineConfig } from "vitest/config";

// `npm run dev` proxies the API to a service started with `make run` (or ENGRAM_VOICE_DEV_API).
const api = process.env["ENGRAM_VOICE_DEV_API"] ?? "http://127.0.0.1:8000";

export default defineConfig({
  base: "./",
  build: {
    outDir: "../src/engram_voice/static/app",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: true,
    assetsDir: "assets",
  },
  server: {
    host: "127.0.0.1",
    proxy: {
      "/realtime": api,
      "/memory": api,
    },
  },
  test: {
    include: ["test/**/*.test.ts"],
    environment: "node",
    reporters: ["default"],
  },
});
