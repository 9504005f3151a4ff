/**
 * The React example app (`npm run test:example`, part of `npm test`): it imports
 * `@engram/voice-client` and `@engram/voice-client/react` as an installed package would —
 * the package resolves itself by name through the `exports` map of web/package.json, so
 * `npm run build:lib` must have built dist/lib first.
 */
import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

const here = fileURLToPath(new URL(".", import.meta.url));

export default defineConfig({
  root: here,
  base: "./",
  build: {
    outDir: "../../dist/examples/react-app",
    emptyOutDir: true,
    target: "es2022",
  },
  test: {
    include: ["src/**/*.test.tsx"],
    environment: "jsdom",
    reporters: ["default"],
  },
});
