/**
 * The recorded exchanges (testdata/wire/exchanges.json), replayed through the SDK with
 * a fake fetch: each SDK call must send the recorded request and must understand the
 * recorded response. Exchanges no SDK call produces (malformed bodies) are checked
 * through the error mapping only. Problem bodies for every slug come from problems.json.
 */

import assert from "node:assert/strict";
import { test } from "node:test";
import {
  ConflictError,
  decodeJSONTensors,
  decodeSafetensors,
  errorFromResponse,
  IdempotencyMismatchError,
  InvalidConfigError,
  InvalidTensorError,
  NotFoundError,
  OptdClient,
  OptdError,
  type OptdErrorClass,
  PreconditionFailedError,
  PROBLEM_CLASSES,
  retryDelay,
  StaleGradientError,
  StoreUnavailableError,
  TooLargeError,
  type Tensors,
} from "@optd/client";
import { readBytes, readJSON } from "./helpers.js";

interface Exchange {
  name: string;
  request: { method: string; path: string; headers: Record<string, string>; json?: any; text?: string; file?: string };
  response: { status: number; headers: Record<string, string>; json?: any; file?: string };
}
const { exchanges } = readJSON("exchanges.json") as { exchanges: Exchange[] };
const byName = new Map(exchanges.map((e) => [e.name, e]));
const IDS: Record<string, string> = { "{A}": "sessAAAA", "{B}": "sessBBBB" };
const sub = (s: string) => s.replace(/\{[AB]\}/g, (m) => IDS[m]!);
const subDeep = (v: any): any =>
  typeof v === "string"
    ? sub(v)
    : Array.isArray(v)
      ? v.map(subDeep)
      : v && typeof v === "object"
        ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, subDeep(x)]))
        : v;
const CHECKED_HEADERS = ["optd-base-version", "optd-worker", "optd-loss", "if-match", "prefer", "idempotency-key"];

function metaParsed(meta: Record<string, string>) {
  return Object.fromEntries(Object.entries(meta).map(([k, v]) => [k, JSON.parse(v)]));
}
function sameSafetensors(got: Uint8Array, want: Uint8Array) {
  const a = decodeSafetensors(got);
  const b = decodeSafetensors(want);
  assert.deepEqual(metaParsed(a.metadata), metaParsed(b.metadata));
  assert.deepEqual(Object.keys(a.tensors).sort(), Object.keys(b.tensors).sort());
  for (const [n, t] of Object.entries(b.tensors)) assert.deepEqual(a.tensors[n], t, n);
}

/** A fetch that expects the named exchanges, in order, and answers them. */
function expecting(queue: string[]): typeof fetch {
  return (async (input: RequestInfo | URL, init?: RequestInit) => {
    const ex = byName.get(queue.shift() ?? "(none)");
    assert.ok(ex, `unexpected request ${String(input)}`);
    const url = new URL(String(input));
    const want = new URL(sub(ex.request.path), "http://x");
    assert.equal(init?.method, ex.request.method, ex.name);
    assert.equal(url.pathname, want.pathname, ex.name);
    assert.deepEqual([...url.searchParams].sort(), [...want.searchParams].sort(), ex.name);
    const headers = new Headers(init?.headers);
    for (const h of CHECKED_HEADERS) {
      if (ex.request.headers[h] !== undefined) assert.equal(headers.get(h), ex.request.headers[h], `${ex.name}: ${h}`);
    }
    const ct = ex.request.headers["content-type"];
    if (ct) assert.equal(headers.get("content-type"), ct, ex.name);
    if (ex.request.json !== undefined)
      assert.deepEqual(JSON.parse(String(init?.body)), subDeep(ex.request.json), ex.name);
    if (ex.request.file) sameSafetensors(init?.body as Uint8Array, readBytes(`bodies/${ex.request.file}`));
    const r = ex.response;
    const body = r.file ? readBytes(`bodies/${r.file}`) : r.json !== undefined ? JSON.stringify(subDeep(r.json)) : null;
    const rh = Object.fromEntries(Object.entries(r.headers).map(([k, v]) => [k, sub(v)]));
    return new Response(body as BodyInit | null, { status: r.status, headers: rh });
  }) as typeof fetch;
}

const ref = (name: string, which: "request" | "response" = "request"): Tensors => {
  const ex = byName.get(name)!;
  const side = ex[which];
  if (side.file) return decodeSafetensors(readBytes(`bodies/${side.file}`)).tensors;
  return decodeJSONTensors(which === "request" ? (side.json.grads ?? side.json.params) : side.json.params);
};

test("the SDK sends the recorded requests and reads the recorded responses", async () => {
  const queue: string[] = [];
  const fetch = expecting(queue);
  const json = new OptdClient({ wire: "json", fetch, retries: 0, pollWaitS: 0 });
  const st = new OptdClient({ wire: "safetensors", fetch, retries: 0 });
  const run = async <T>(names: string[], call: () => Promise<T>): Promise<T> => {
    queue.push(...names);
    const out = await call();
    assert.deepEqual(queue, [], `not all of ${names} were requested`);
    return out;
  };
  const fails = async (names: string[], cls: OptdErrorClass, call: () => Promise<unknown>) => {
    await assert.rejects(run(names, call), cls);
    queue.length = 0;
  };
  const grads = ref("step_json");
  const a = await run(["create"], () =>
    json.createSession({ optimizer: "adam", hyperparams: { lr: 0.1 }, params: ref("create") }),
  );
  assert.equal(a.id, IDS["{A}"]);
  assert.equal(a.version, 0);
  assert.equal((await run(["info"], () => a.info())).num_params, 6);
  const s1 = await run(["step_json"], () => a.step(grads, { loss: 0.5 }));
  assert.deepEqual(s1.params, ref("step_json", "response"));
  assert.deepEqual([s1.version, s1.step, s1.lr, s1.staleness, s1.replayed], [1, 1, 0.1, null, false]);
  const aSt = st.session(a.id);
  const s2 = await run(["step_safetensors"], () =>
    aSt.step(ref("step_safetensors"), { baseVersion: 1, worker: "w-1", loss: 0.25 }),
  );
  assert.deepEqual([s2.version, s2.step, s2.staleness], [2, 2, 0]);
  assert.deepEqual(s2.params, ref("step_safetensors", "response"));
  const p = await run(["params_json"], () => a.params());
  assert.equal(p.version, 2);
  assert.equal(p.params.w!.data[0], Math.fround(0.30678207));
  const pw = await run(["params_safetensors"], () => aSt.params({ names: ["w"] }));
  assert.deepEqual(Object.keys(pw.params), ["w"]);
  assert.equal((await run(["patch"], () => a.update({ lr: 0.05, max_staleness: 1 }))).version, 3);
  await fails(["step_stale"], StaleGradientError, () => a.step(grads, { baseVersion: 0 }));
  await fails(["step_if_match"], PreconditionFailedError, () => a.step(grads, { ifMatch: 1 }));
  const ahead = await run(["step_ahead"], () => a.step(grads, { baseVersion: 99 })).catch((e: unknown) => e);
  assert.ok(ahead instanceof ConflictError);
  assert.equal(ahead.currentVersion, 3);
  await fails(["step_unknown_tensor"], InvalidTensorError, () => a.step({ nope: Float32Array.of(1) }));
  const nine = Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`g${i}`, Float32Array.of(0)]));
  await fails(["step_too_many"], TooLargeError, () => a.step(nine));
  await fails(["create_invalid_config"], InvalidConfigError, () =>
    json.createSession({ optimizer: "nope", params: { x: Float32Array.of(0) } }),
  );
  const key = { loss: 0.125, idempotencyKey: "wire-key-1" };
  assert.equal((await run(["step_idempotent"], () => a.step(grads, key))).replayed, false);
  assert.equal((await run(["step_idempotent_replay"], () => a.step(grads, key))).replayed, true);
  await fails(["step_idempotency_mismatch"], IdempotencyMismatchError, () => a.step(grads, { ...key, loss: 0.25 }));
  const upd = await run(["step_updated_only"], () => a.step({ b: Float32Array.of(0.5, 0.5) }, { onlyUpdated: true }));
  assert.deepEqual(Object.keys(upd.params), ["b"]);
  const ckpt = await run(["state_json"], () => a.state());
  assert.equal(ckpt.version, 6);
  assert.deepEqual(Object.keys(ckpt.tensors).sort(), [
    "exp_avg/b",
    "exp_avg/w",
    "exp_avg_sq/b",
    "exp_avg_sq/w",
    "param/b",
    "param/w",
  ]);
  await run(["delete"], () => a.delete());
  await fails(["info_deleted"], NotFoundError, () => a.info());
  const b = await run(["create_sync_safetensors"], () =>
    st.createSession({ optimizer: "sgd", mode: "sync", workers: 2, lr: 0.5, params: ref("create_sync_safetensors") }),
  );
  const bJson = json.session(b.id);
  const w1 = await run(["sync_step_w1", "sync_params_wait"], () =>
    bJson.step({ x: Float32Array.of(1, 0.5) }, { baseVersion: 0, worker: "w1", wait: 0 }),
  );
  // the barrier also names the round's contributors (elastic rounds); these keys as before
  const { version, have, need } = w1.barrier ?? {};
  assert.deepEqual({ version, have, need }, { version: 0, have: 1, need: 2 });
  assert.deepEqual([w1.version, Array.from(w1.params.x!.data)], [1, [0.75, 1.75]]);
  const w2 = await run(["sync_step_w2"], () =>
    bJson.step({ x: Float32Array.of(0, 0.5) }, { baseVersion: 0, worker: "w2", wait: 0 }),
  );
  assert.deepEqual(w2.params, w1.params);
  const expired = await run(["sync_params_expired"], () => bJson.params({ minVersion: 2, wait: 0 }));
  assert.equal(expired.version, 1);
});

test("every recorded error response maps onto its class", () => {
  for (const ex of exchanges) {
    if (ex.response.status < 400) continue;
    const err = errorFromResponse(
      ex.response.status,
      new Headers(ex.response.headers),
      new TextEncoder().encode(JSON.stringify(ex.response.json)),
    );
    assert.equal(`urn:optd:problem:${err.slug}`, ex.response.json.type, ex.name);
    assert.ok(err instanceof PROBLEM_CLASSES[err.slug]!, ex.name);
    assert.equal(err.status, ex.response.status);
    assert.equal(err.detail, ex.response.json.detail);
  }
});

test("problems.json: one class per slug, status and retry-after kept", () => {
  const problems = readJSON("problems.json") as Record<
    string,
    { status: number; headers: Record<string, string>; body: any }
  >;
  assert.deepEqual(Object.keys(problems).sort(), Object.keys(PROBLEM_CLASSES).sort());
  for (const [slug, p] of Object.entries(problems)) {
    const err = errorFromResponse(p.status, new Headers(p.headers), new TextEncoder().encode(JSON.stringify(p.body)));
    assert.equal(err.constructor, PROBLEM_CLASSES[slug], slug);
    assert.equal(err.slug, slug);
    assert.ok(err instanceof OptdError && err instanceof Error);
    if (slug === "store-unavailable") assert.equal(err.retryAfter, 1);
  }
  assert.ok(new StoreUnavailableError("x") instanceof OptdError);
  assert.equal(new ConflictError("x").slug, "conflict");
});

test("retry policy: what is retried, and how long it waits", () => {
  const policy = { retries: 3, backoffMs: 100, maxBackoffMs: 1000, maxRetryAfterMs: 5000 };
  const reply = (status: number, problem: object = {}, headers: Record<string, string> = {}) => ({
    status,
    headers: new Headers(headers),
    body: new TextEncoder().encode(JSON.stringify(problem)),
  });
  const one = () => 1;
  assert.equal(retryDelay(policy, 0, new TypeError("fetch failed"), one), 100);
  assert.equal(retryDelay(policy, 2, new TypeError("fetch failed"), one), 400);
  assert.equal(retryDelay(policy, 3, new TypeError("fetch failed"), one), undefined);
  assert.equal(retryDelay(policy, 0, reply(503, {}, { "retry-after": "2" }), one), 2100);
  assert.equal(retryDelay(policy, 0, reply(429, { retry_after: 60 }), one), 5100);
  assert.equal(retryDelay(policy, 1, reply(503), one), 200);
  const conflict = {
    type: "urn:optd:problem:conflict",
    detail: "a request with Idempotency-Key 'k' is still in flight; retry shortly",
    in_flight: true,
  };
  assert.equal(retryDelay(policy, 0, reply(409, conflict), one), 100);
  assert.equal(
    retryDelay(policy, 0, reply(409, { type: "urn:optd:problem:conflict", detail: "base_version 9 is ahead" }), one),
    undefined,
  );
  assert.equal(
    retryDelay(policy, 0, reply(409, { type: "urn:optd:problem:stale-gradient", retry_after: 1 }), one),
    undefined,
  );
  for (const status of [400, 404, 412, 422, 500]) assert.equal(retryDelay(policy, 0, reply(status), one), undefined);
});
