// Copy the dashboard's static assets into dist/ (served by Django/WhiteNoise under /static/).
// No bundler: htmx and uPlot ship ready-made browser builds; our own scripts are plain ES2020.
import { cpSync, mkdirSync, rmSync, readFileSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, "dist");
const files = {
  "vendor/htmx.min.js": "node_modules/htmx.org/dist/htmx.min.js",
  "vendor/uPlot.iife.min.js": "node_modules/uplot/dist/uPlot.iife.min.js",
  "vendor/uPlot.min.css": "node_modules/uplot/dist/uPlot.min.css",
  "hangar/ws.js": "src/ws.js",
  "hangar/dashboard.js": "src/dashboard.js",
  "hangar/playground.js": "src/playground.js",
  "hangar/upload.js": "src/upload.js",
  "hangar/dashboard.css": "src/dashboard.css",
};

rmSync(dist, { recursive: true, force: true });
const manifest = {};
for (const [target, source] of Object.entries(files)) {
  const to = join(dist, target);
  mkdirSync(dirname(to), { recursive: true });
  cpSync(join(root, source), to);
  manifest[target] = createHash("sha256").update(readFileSync(to)).digest("hex").slice(0, 16);
}
writeFileSync(join(dist, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
console.log(`built ${Object.keys(files).length} files into ${dist}`);
