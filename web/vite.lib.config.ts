/**
 * Builds the framework-agnostic client library alone (`npm run build:lib`) as an ES module
 * in `dist/lib/`, with type declarations, for host apps that do not bundle `src/lib` themselves.
 */
import { defineConfig } from "vite";

export default defineConfig({
  build: {
    outDir: "dist/lib",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: true,
    lib: {
      entry: "src/lib/index.ts",
      formats: ["es"],
      fileName: () => "engram-voice.js",
    },
  },
});
