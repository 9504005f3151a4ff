/**
 * Checks the package `npm pack` would publish (run after `npm run build:lib`; part of
 * `npm test`): only dist/lib, README, LICENSE and package.json go in; every target of the
 * `exports` map is in it; no runtime dependencies; React is an optional peer that only the
 * `react` entry imports. Exits 1 with one line per problem.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const web = join(dirname(fileURLToPath(import.meta.url)), "..");
const pkg = JSON.parse(readFileSync(join(web, "package.json"), "utf8"));
const [packed] = JSON.parse(execFileSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: web, encoding: "utf8" }));
const files = new Set(packed.files.map((f) => f.path));
const problems = [];

for (const path of files) {
  if (!/^(dist\/lib\/|README\.md$|LICENSE$|package\.json$)/.test(path)) problems.push(`packed but not part of the package: ${path}`);
}
for (const required of ["README.md", "LICENSE", "package.json"]) {
  if (!files.has(required)) problems.push(`missing from the package: ${required}`);
}
const targets = (value) => (typeof value === "string" ? [value] : Object.values(value).flatMap(targets));
for (const [entry, conditions] of Object.entries(pkg.exports)) {
  for (const target of targets(conditions)) {
    if (!files.has(target.replace(/^\.\//, ""))) problems.push(`exports["${entry}"] points at ${target}, which is not packed (run npm run build:lib)`);
  }
}
if (Object.keys(pkg.dependencies ?? {}).length > 0) problems.push(`runtime dependencies: ${Object.keys(pkg.dependencies).join(", ")}`);
if (!pkg.peerDependencies?.react || pkg.peerDependenciesMeta?.react?.optional !== true) problems.push("react must be an optional peer dependency");

// Only the react entry may import React; the core (index.js, its chunks, its types) never.
const importsReact = /from\s*["']react(?:-dom)?(?:\/[^"']*)?["']|import\(\s*["']react/;
for (const path of files) {
  if (!/\.(js|d\.ts)$/.test(path) || path === "dist/lib/react.js" || path.startsWith("dist/lib/types/react/")) continue;
  if (importsReact.test(readFileSync(join(web, path), "utf8"))) problems.push(`${path} imports React (only the react entry may)`);
}

if (problems.length > 0) {
  for (const problem of problems) console.error(`check-package: ${problem}`);
  process.exit(1);
}
console.log(`check-package: ${packed.name}@${packed.version}, ${files.size} files, ${packed.size} bytes packed: ok`);
