/** Sharded sessions: splitting and assembling, and the two-phase step against a fake
 * server (prepare, equal versions, shard 0 first, 412, prepare-expired, half-applied). */

import assert from "node:assert/strict";
import { test } from "node:test";
import {
  InvalidTensorError,
  OptdClient,
  type ShardLayout,
  ShardsDivergedError,
  TransportError,
  assembleParts,
  splitGrads,
  tensor,
} from "@optd/client";

const LAYOUT: ShardLayout = {
  shapes: { w: [3, 4], b: [] },
  shards: [
    { id: "x-s0", index: 0, start: 0, stop: 5, version: 0, tensors: [{ name: "w", start: 0, stop: 5 }] },
    {
      id: "x-s1",
      index: 1,
      start: 5,
      stop: 13,
      version: 0,
      tensors: [
        { name: "w", start: 5, stop: 12 },
        { name: "b", start: 0, stop: 1 },
      ],
    },
  ],
};

const grads = () => ({
  w: tensor(
    Float32Array.from({ length: 12 }, (_, i) => i + 1),
    [3, 4],
  ),
  b: { data: Float32Array.of(-1), shape: [] },
});

test("split a tensor over shards and assemble it back", () => {
  const parts = splitGrads(LAYOUT, grads());
  assert.deepEqual(Array.from(parts[0]!.w!.data), [1, 2, 3, 4, 5]);
  assert.deepEqual(parts[1]!.w!.shape, [7]);
  assert.deepEqual(Array.from(parts[1]!.w!.data), [6, 7, 8, 9, 10, 11, 12]);
  assert.deepEqual(parts[1]!.b!.shape, [1]);
  const whole = assembleParts(LAYOUT, parts);
  assert.deepEqual(Object.keys(whole), ["w", "b"]);
  assert.deepEqual(whole.w!.shape, [3, 4]);
  assert.deepEqual(Array.from(whole.w!.data), Array.from(grads().w.data));
  assert.deepEqual(whole.b!.shape, []);
  // a subset: only b; a tensor with a missing piece is left out
  assert.deepEqual(Object.keys(splitGrads(LAYOUT, { b: grads().b })[0]!), []);
  assert.deepEqual(Object.keys(assembleParts(LAYOUT, [{}, parts[1]!])), ["b"]);
  assert.throws(() => splitGrads(LAYOUT, { v: tensor([1]) }), InvalidTensorError);
  assert.throws(() => splitGrads(LAYOUT, { w: tensor(new Float32Array(11)) }), InvalidTensorError);
});

/** A fake server of one session "x" with 2 shards: SGD with lr 0.1, JSON only. */
function fakeServer() {
  const params = [Float32Array.from([1, 2, 3, 4, 5]), Float32Array.from([6, 7, 8, 9, 10, 11, 12, 13])];
  const versions = [0, 0];
  const tokens = new Map<string, { k: number; g: number[] }>();
  const log: string[] = [];
  const replies = new Map<string, string>();
  const faults = { diverge: 0, conflict0: 0, expire1: 0, cut1: 0, bump1: 0, owner: false };
  const commits: Record<string, unknown>[] = []; // the bodies of the shards' commits
  const state: { repair?: Record<string, unknown> } = {}; // the session info's repair
  let n = 0;
  const json = (doc: unknown, status = 200, type = "application/json") =>
    new Response(JSON.stringify(doc), { status, headers: { "content-type": type } });
  const problem = (slug: string, status: number) =>
    json({ type: `urn:optd:problem:${slug}`, title: slug, status, detail: slug }, status, "application/problem+json");
  const info = () => ({
    id: "x",
    version: Math.min(...versions),
    params: { w: { shape: [3, 4], step: 0 }, b: { shape: [], step: 0 } },
    shards: LAYOUT.shards.map((s, k) => ({ ...s, version: versions[k] })),
    ...(state.repair ? { repair: state.repair } : {}),
  });
  const fetchImpl = (async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = new URL(String(input));
    const h = new Headers(init?.headers);
    const m = /^\/v1\/sessions\/([^/]+)(\/\w+)?$/.exec(url.pathname)!;
    const [sid, tail] = [m[1]!, m[2] ?? ""];
    if (sid === "x-s1" && url.host === "optd.test" && faults.owner) {
      const owner = "http://owner.test:9000";
      return new Response(null, { status: 307, headers: { location: owner + url.pathname, "optd-owner": owner } });
    }
    log.push(`${init?.method} ${sid}${tail}`);
    if (sid === "x") return tail === "" ? json(info()) : problem("conflict", 409);
    const k = Number(sid.slice(3));
    const body = JSON.parse(String(init?.body));
    if (tail === "/prepare") {
      const g = Object.values(body.grads as Record<string, { data: number[] }>).flatMap((t) => t.data);
      const token = `t${n++}`;
      tokens.set(token, { k, g });
      let version = versions[k]!;
      if (k === 1 && faults.diverge > 0 && faults.diverge--) version -= 1; // behind for a while
      const sumsq = k === 1 ? ["NaN", g.reduce((a, x) => a + x * x, 0)] : [g.reduce((a, x) => a + x * x, 0)];
      return json({ prepared: token, version, sumsq });
    }
    // commit
    commits.push({ shard: k, ...body });
    const key = h.get("idempotency-key")!;
    if (replies.has(key)) return json(JSON.parse(replies.get(key)!));
    if (k === 0 && faults.conflict0 > 0 && faults.conflict0--) {
      (versions[0]!++, versions[1]!++); // another client's step got v + 1 first
      return problem("precondition-failed", 412);
    }
    if (k === 1 && faults.expire1 > 0 && faults.expire1--) return problem("prepare-expired", 409);
    if (k === 1 && faults.bump1 > 0 && faults.bump1--) versions[1]!++;
    if (h.get("if-match") !== `"${versions[k]}"`) return problem("precondition-failed", 412);
    assert.equal(body.sumsq.length, 3);
    assert.equal(body.sumsq[1], "NaN"); // verbatim, in shard order
    const t = tokens.get(body.prepared);
    if (t === undefined || t.k !== k) return problem("prepare-expired", 409);
    tokens.delete(body.prepared);
    t.g.forEach((x, i) => (params[k]![i] = params[k]![i]! - 0.1 * x));
    versions[k]!++;
    const pieces =
      k === 0
        ? { w: { shape: [5], dtype: "float32", data: Array.from(params[0]!) } }
        : {
            w: { shape: [7], dtype: "float32", data: Array.from(params[1]!.subarray(0, 7)) },
            b: { shape: [1], dtype: "float32", data: [params[1]![7]] },
          };
    const doc = { version: versions[k], step: versions[k], lr: 0.1, grad_norm: 42, params: pieces };
    replies.set(key, JSON.stringify(doc));
    if (k === 1 && faults.cut1 > 0 && faults.cut1--) throw new TypeError("fetch failed"); // applied, answer lost
    return json(doc);
  }) as typeof fetch;
  return { fetch: fetchImpl, log, faults, versions, params, commits, state };
}

const client = (fetchImpl: typeof fetch, retries = 5) =>
  new OptdClient({ baseUrl: "http://optd.test", wire: "json", fetch: fetchImpl, backoffMs: 1, retries });

test("a sharded step: prepare both, commit shard 0 first, assemble", async () => {
  const srv = fakeServer();
  const s = client(srv.fetch).session("x");
  const r = await s.step(grads(), { loss: 0.5 });
  assert.deepEqual(srv.log.slice(0, 2), ["POST x/step", "GET x"]); // learns the shards from the 409
  assert.deepEqual(srv.log.slice(4), ["POST x-s0/step", "POST x-s1/step"]);
  assert.deepEqual([r.version, r.step, r.lr, r.gradNorm, s.version], [1, 1, 0.1, 42, 1]);
  assert.deepEqual(r.params.w!.shape, [3, 4]);
  const want = Array.from({ length: 12 }, (_, i) => Math.fround(Math.fround(i + 1) - Math.fround(0.1 * (i + 1))));
  assert.deepEqual(Array.from(r.params.w!.data), want);
  assert.deepEqual(r.params.b!.shape, []);
  // shard 0's commit carries every shard's token (what repairs the step), the others not
  assert.deepEqual(
    srv.commits.map((b) => [b.shard, b.prepared, b.tokens]),
    [
      [0, "t0", ["t0", "t1"]],
      [1, "t1", undefined],
    ],
  );
  srv.log.length = 0;
  await s.step(grads());
  assert.equal(srv.log[0], "POST x-s0/prepare"); // the layout is remembered
});

test("owners are followed per shard session", async () => {
  const srv = fakeServer();
  srv.faults.owner = true;
  const c = client(srv.fetch);
  const s = c.session("x");
  await s.info();
  await s.step(grads());
  assert.equal(c.http.owner("x-s1"), "http://owner.test:9000");
  assert.equal(c.http.owner("x-s0"), undefined);
  assert.equal(c.http.owner("x"), undefined);
});

test("versions differ: prepare again; 412 from shard 0: start over; prepare-expired: prepare that shard", async () => {
  const srv = fakeServer();
  const s = client(srv.fetch).session("x");
  await s.info();
  Object.assign(srv.faults, { diverge: 2, conflict0: 1, expire1: 1 });
  const r = await s.step(grads());
  assert.equal(r.version, 2); // the fake's other client took version 1
  assert.deepEqual(srv.versions, [2, 2]);
  const prepares = srv.log.filter((l) => l.endsWith("/prepare"));
  assert.equal(prepares.length, 2 + 1 + 1 + 2 + 1); // shard 1 again twice while behind, both after the 412, shard 1 expired
});

test("a half-applied step is finished by the next step with the same key", async () => {
  const srv = fakeServer();
  const s = client(srv.fetch, 0).session("x");
  await s.info();
  srv.faults.cut1 = 1;
  await assert.rejects(s.step(grads(), { idempotencyKey: "k1" }), TransportError);
  assert.deepEqual(srv.versions, [1, 1]); // applied; the answer was lost
  const r = await s.step(grads(), { idempotencyKey: "k1" });
  assert.equal(r.version, 1);
  assert.deepEqual(srv.versions, [1, 1]); // replayed, not applied twice
  assert.equal(s.pending, undefined);
});

test("shards that never agree, a shard that refuses the version after shard 0: ShardsDivergedError", async () => {
  const srv = fakeServer();
  const s = new OptdClient({ baseUrl: "http://optd.test", wire: "json", fetch: srv.fetch, shardWaitMs: 200 }).session(
    "x",
  );
  await s.info();
  srv.versions[0] = 5;
  await assert.rejects(
    s.step(grads()),
    (e: unknown) => e instanceof ShardsDivergedError && /x-s0 at 5, x-s1 at 0/.test(e.message),
  );
  srv.versions[1] = 5;
  srv.faults.bump1 = 1; // another client's commit lands on shard 1 between our two commits
  await assert.rejects(
    s.step(grads()),
    (e: unknown) => e instanceof ShardsDivergedError && /x-s1 refused/.test(e.message),
  );
  assert.deepEqual(srv.versions, [6, 6]);
  assert.equal(s.pending, undefined);
});

test("a step another client left half-applied: repaired from the session info, or ShardsDivergedError", async () => {
  const srv = fakeServer();
  const s = client(srv.fetch).session("x");
  await s.info();
  // the dead client's step of version 1: prepared on both shards, committed on shard 0 only
  const prep = (k: number) =>
    srv
      .fetch(`http://optd.test/v1/sessions/x-s${k}/prepare`, {
        method: "POST",
        body: JSON.stringify({ grads: { w: { shape: [1], data: [k + 1] } } }),
      })
      .then((r) => r.json() as Promise<{ prepared: string; sumsq: unknown[] }>);
  const [a, b] = [await prep(0), await prep(1)];
  const sumsq = [...a.sumsq, ...b.sumsq];
  srv.versions[0] = 1;
  srv.state.repair = { version: 1, tokens: [a.prepared, b.prepared], sumsq, loss: 2 };
  srv.commits.length = 0;
  const r = await s.step(grads());
  assert.equal(r.version, 2);
  assert.deepEqual(srv.versions, [2, 2]);
  assert.deepEqual(srv.commits[0], { shard: 1, prepared: b.prepared, sumsq, loss: 2 }); // the repair
  assert.deepEqual(
    srv.commits.slice(1).map((c) => c.shard),
    [0, 1],
  );
  // a part that is gone: the step cannot be finished
  srv.versions[0] = 3;
  srv.state.repair = { version: 3, tokens: ["gone0", "gone1"], sumsq: [1, "NaN", 2] };
  await assert.rejects(
    s.step(grads()),
    (e: unknown) =>
      e instanceof ShardsDivergedError && /cannot be finished/.test(e.message) && /checkpoints/.test(e.message),
  );
  assert.deepEqual(srv.versions, [3, 2]);
});
