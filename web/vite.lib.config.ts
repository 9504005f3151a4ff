/**
 * Builds the published package `@engram/voice-client` (`npm run build:lib`): ES modules in
 * `dist/lib/` — `index.js` (the framework-agnostic core) and `react.js` (the React hook;
 * React stays external, a peer dependency) — then `tsc -p tsconfig.lib.json` writes the type
 * declarations to `dist/lib/types/`. `package.json`'s `exports` map points at both.
 */
import { defineConfig } from "vite";

export default defineConfig({
  build: {
    outDir: "dist/lib",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: true,
    minify: false,
    lib: {
      entry: { index: "src/lib/index.ts", react: "src/lib/react/index.ts" },
      formats: ["es"],
      fileName: (_format, entryName) => `${entryName}.js`,
    },
    rollupOptions: {
      external: [/^react($|\/)/, /^react-dom($|\/)/],
      output: { chunkFileNames: "chunks/[name]-[hash].js" },
    },
  },
});
