// dist/ is committed, so that `npm install <checkout>/clients/typescript` and `npm pack`
// work from a fresh clone without a TypeScript toolchain (npm runs a folder dependency's
// `prepare` without installing its devDependencies, so a build-on-install cannot work).
// This check compiles src/ in memory with tsconfig.json and fails when dist/ differs from
// that output in any byte, or holds a file the build would not write. Fix: npm run build.
import { readFileSync, readdirSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";

const root = fileURLToPath(new URL("..", import.meta.url));
const host = { ...ts.sys, onUnRecoverableConfigFileDiagnostic: (d) => fail([d]) };
const config = ts.getParsedCommandLineOfConfigFile(join(root, "tsconfig.json"), {}, host);
const program = ts.createProgram({ rootNames: config.fileNames, options: config.options });
const fresh = new Map();
const emitted = program.emit(undefined, (file, text) => fresh.set(resolve(file), text));
const diagnostics = [...ts.getPreEmitDiagnostics(program), ...emitted.diagnostics];
if (diagnostics.length) fail(diagnostics);

const dist = resolve(config.options.outDir);
const problems = [];
for (const [file, text] of fresh) {
  let have;
  try {
    have = readFileSync(file, "utf8");
  } catch {
    have = undefined;
  }
  if (have === undefined) problems.push(`missing  ${relative(root, file)}`);
  else if (have !== text) problems.push(`stale    ${relative(root, file)}`);
}
for (const entry of readdirSync(dist, { recursive: true, withFileTypes: true })) {
  const file = resolve(entry.parentPath ?? entry.path, entry.name);
  if (entry.isFile() && !fresh.has(file)) problems.push(`extra    ${relative(root, file)}`);
}
if (problems.length) {
  console.error(`dist/ does not match src/ (${problems.length} files):\n  ${problems.join("\n  ")}`);
  console.error("run `npm run build` in clients/typescript and commit dist/");
  process.exit(1);
}
console.log(`dist/ matches src/ (${fresh.size} files)`);

function fail(diags) {
  const format = { getCanonicalFileName: (f) => f, getCurrentDirectory: () => root, getNewLine: () => "\n" };
  console.error(ts.formatDiagnostics(diags, format));
  process.exit(1);
}
