/**
 * Copies the API reference renderer (Scalar's standalone bundle, pinned in package.json and
 * package-lock.json) into the Python package, which serves it at /schema/assets/ so that
 * the /schema page works offline and never loads a script from a CDN.
 */
import { copyFileSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const web = join(dirname(fileURLToPath(import.meta.url)), "..");
const packageJson = join(web, "node_modules", "@scalar", "api-reference", "package.json");
const { version } = JSON.parse(readFileSync(packageJson, "utf8"));
const source = join(dirname(packageJson), "dist", "browser", "standalone.js");
const target = join(
  web,
  "..",
  "src",
  "engram_voice",
  "static",
  "apidocs",
  "scalar-api-reference.js",
);
mkdirSync(dirname(target), { recursive: true });
copyFileSync(source, target);
console.log(`@scalar/api-reference ${version} -> ${target}`);
