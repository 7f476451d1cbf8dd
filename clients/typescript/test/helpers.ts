/** Test helpers: the shared wire vectors, and real optd / redis-server processes. */

import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, openSync, readFileSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url)); // build/test
export const PKG = resolve(HERE, "../..");
export const ROOT = resolve(PKG, "../..");
export const WIRE = join(ROOT, "testdata", "wire");

export const readJSON = (rel: string): any => JSON.parse(readFileSync(join(WIRE, rel), "utf-8"));
export const readBytes = (rel: string): Uint8Array => new Uint8Array(readFileSync(join(WIRE, rel)));
export const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

/** `$OPTD_PYTHON`, else the repository's .venv, else python3. */
export function python(): string {
  if (process.env.OPTD_PYTHON) return process.env.OPTD_PYTHON;
  const venv = join(ROOT, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

export function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once("error", fail);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => ok(port));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function tcpOpen(port: number): Promise<boolean> {
  return new Promise((ok) => {
    const sock = createConnection({ port, host: "127.0.0.1" }, () => {
      sock.destroy();
      ok(true);
    });
    sock.once("error", () => ok(false));
  });
}

class Proc {
  readonly log: string;
  readonly child: ChildProcess;
  exited = false;

  constructor(name: string, cmd: string, args: string[], env: NodeJS.ProcessEnv, cwd?: string) {
    this.log = join(mkdtempSync(join(tmpdir(), `optd-ts-${name}-`)), "log.txt");
    const out = openSync(this.log, "w");
    this.child = spawn(cmd, args, { env, cwd, stdio: ["ignore", out, out] });
    this.child.once("exit", () => (this.exited = true));
  }

  async waitFor(what: string, ready: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.exited) throw new Error(`${what} exited: ${readFileSync(this.log, "utf-8").slice(-2000)}`);
      if (await ready()) return;
      await sleep(50);
    }
    await this.stop();
    throw new Error(`${what} did not become ready in ${timeoutMs} ms`);
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    const gone = new Promise((r) => this.child.once("exit", r));
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 5000);
    await gone;
    clearTimeout(timer);
  }
}

export interface Server {
  url: string;
  store: "memory" | "redis";
  stop(): Promise<void>;
}

/** A private redis-server (never 6379) when `store` is "redis", and `optd serve` on it. */
export async function startServer(store: "memory" | "redis"): Promise<Server> {
  const procs: Proc[] = [];
  const env: NodeJS.ProcessEnv = { ...process.env, OPTD_LOG_LEVEL: "warning" };
  delete env.OPTD_REDIS_URL;
  if (store === "redis") {
    const rport = await freePort();
    const redis = new Proc(
      "redis",
      "redis-server",
      ["--port", String(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
      process.env,
    );
    procs.push(redis);
    await redis.waitFor("redis-server", () => tcpOpen(rport));
    env.OPTD_REDIS_URL = `redis://127.0.0.1:${rport}/0`;
  }
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const optd = new Proc("optd", python(), ["-m", "app.cli", "serve", "--port", String(port)], env, ROOT);
  procs.unshift(optd);
  const stop = async () => {
    for (const p of procs) await p.stop();
  };
  try {
    await optd.waitFor("optd serve", async () => {
      try {
        return (await fetch(`${url}/readyz`)).ok;
      } catch {
        return false;
      }
    });
  } catch (e) {
    await stop();
    throw e;
  }
  return { url, store, stop };
}
