/** Sharded sessions against a real `optd serve` (embedded store and a private Redis): a
 * session with shards: 2 steps bit-identically to an unsharded one; a step a dead client left
 * half-applied is repaired. */

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { ConflictError, InvalidTensorError, OptdClient, ShardsDivergedError, type Tensors, tensor } from "@optd/client";
import { type Server, startServer } from "./helpers.js";

const servers: Partial<Record<"memory" | "redis", Server>> = {};
before(async () => {
  const [m, r] = await Promise.all([startServer("memory"), startServer("redis")]);
  Object.assign(servers, { memory: m, redis: r });
});
after(async () => {
  await Promise.all(Object.values(servers).map((s) => s.stop()));
});

/** A deterministic uniform(-1, 1) sequence (xorshift32). */
function noise(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return (x / 2 ** 32) * 2 - 1;
  };
}

const W = 120_000; // w [3, 40000]: over 32768, so a cut falls inside it
const grads = (rnd: () => number, scale: number): Tensors => ({
  w: tensor(
    Float32Array.from({ length: W }, () => rnd() * scale),
    [3, W / 3],
  ),
  b: tensor(
    Float32Array.from({ length: 10 }, () => rnd() * scale),
    [2, 5],
  ),
});

const bits = (t: { data: ArrayLike<number>; shape: number[] }) => ({ shape: t.shape, data: Array.from(t.data) });

for (const store of ["memory", "redis"] as const) {
  describe(`sharded sessions, ${store} store`, { timeout: 120_000 }, () => {
    const client = (opts: ConstructorParameters<typeof OptdClient>[0] = {}) =>
      new OptdClient({ baseUrl: servers[store]!.url, backoffMs: 20, ...opts });

    test("shards: 2 steps bit-identically to an unsharded session; params read whole", async () => {
      const c = client();
      const rnd = noise(7);
      const params = grads(rnd, 1);
      const config = {
        optimizer: "adam",
        lr: 0.01,
        max_grad_norm: 50, // the noise's norm is ~200: clipped
        schedule: { name: "cosine" as const, warmup_steps: 2, total_steps: 10 },
        params,
      };
      const plain = await c.createSession(config);
      const sharded = await c.createSession({ ...config, shards: 2 });
      const info = await sharded.info();
      assert.equal(info.shards?.length, 2);
      assert.equal(info.shards![0]!.id, `${sharded.id}-s0`);
      const wPieces = info.shards!.flatMap((s) => s.tensors.filter((t) => t.name === "w"));
      assert.equal(wPieces.length, 2); // w is split across the shards, on the chunk grid
      assert.equal(wPieces[0]!.stop, wPieces[1]!.start);
      assert.equal(wPieces[0]!.stop % 32768, 0);
      assert.equal(wPieces[1]!.stop, W);
      // a handle that does not know the layout yet (learns it from the 409), JSON wire too
      const handles = [sharded, client().session(sharded.id), client({ wire: "json" }).session(sharded.id)];
      for (let i = 0; i < 5; i++) {
        const g = grads(rnd, i === 3 ? 0.001 : 1); // step 3: not clipped
        const a = await plain.step(g, { loss: i });
        const b = await handles[i % 3]!.step(g, { loss: i });
        assert.deepEqual([b.version, b.step, b.lr, b.gradNorm], [a.version, a.step, a.lr, a.gradNorm]);
        assert.deepEqual(Object.keys(b.params).sort(), ["b", "w"]);
        for (const name of ["w", "b"]) assert.deepEqual(bits(b.params[name]!), bits(a.params[name]!), name);
      }
      const [pa, pb] = await Promise.all([plain.params(), client({ wire: "json" }).session(sharded.id).params()]);
      assert.equal(pb.version, 5);
      for (const name of ["w", "b"]) assert.deepEqual(bits(pb.params[name]!), bits(pa.params[name]!), name);
      const only = await sharded.params({ names: ["b"] });
      assert.deepEqual(Object.keys(only.params), ["b"]);
      const after = await sharded.info();
      assert.deepEqual([after.version, after.step, after.last_loss], [5, 5, 4]);
      assert.deepEqual(
        after.shards!.map((s) => s.version),
        [5, 5],
      );
      // PATCH is carried to every shard: the next step is still the unsharded one's
      await Promise.all([
        plain.update({ lr: 0.005, max_grad_norm: 20 }),
        sharded.update({ lr: 0.005, max_grad_norm: 20 }),
      ]);
      const g = grads(rnd, 1);
      const [a, b] = [await plain.step(g), await sharded.step(g)];
      assert.deepEqual([b.version, b.step, b.lr, b.gradNorm], [a.version, a.step, a.lr, a.gradNorm]);
      for (const name of ["w", "b"]) assert.deepEqual(bits(b.params[name]!), bits(a.params[name]!), name);
      await assert.rejects(sharded.setParams({ b: new Float32Array(10) }), ConflictError);
      await sharded.delete();
      await plain.delete();
    });

    test("non-finite gradients: refused with check_finite, else their sumsq travel verbatim", async () => {
      const c = client();
      const rnd = noise(5);
      const params = grads(rnd, 1);
      const sharded = await c.createSession({ optimizer: "adam", lr: 0.1, params, shards: 2 });
      const g = grads(rnd, 1);
      g.w!.data[W - 1] = NaN; // in shard 1's piece
      await assert.rejects(sharded.step(g), InvalidTensorError);
      assert.deepEqual(
        (await sharded.info()).shards!.map((s) => s.version),
        [0, 0],
      );
      const config = { optimizer: "sgd", lr: 0.1, check_finite: false, max_grad_norm: 1, params };
      const plain = await c.createSession(config);
      const loose = await c.createSession({ ...config, shards: 2 });
      g.w!.data[W - 1] = Infinity;
      await assert.rejects(plain.step(g), InvalidTensorError);
      // the server refuses the non-finite update at the commit of the shard it falls in,
      // after shard 0 took the step (the session is half-applied): ShardsDivergedError,
      // not a commit sent again by every later step (a server that refused it at prepare
      // would answer InvalidTensorError, nothing applied)
      const e = await loose.step(g).catch((e: unknown) => e);
      assert.ok(
        e instanceof InvalidTensorError || (e instanceof ShardsDivergedError && e.cause instanceof InvalidTensorError),
        String(e),
      );
      assert.equal(loose.pending, undefined);
      await Promise.all([sharded.delete(), plain.delete(), loose.delete()]);
    });

    test("a step a dead client left half-applied is repaired by the next step of another", async () => {
      const c = client();
      const url = servers[store]!.url;
      const rnd = noise(13);
      const N = 100_000; // over 2 * 32768: three shards
      const vec = (scale: number) => ({
        w: tensor(
          Float32Array.from({ length: N }, () => rnd() * scale),
          [N],
        ),
      });
      const config = { optimizer: "adam", lr: 0.01, max_grad_norm: 50, params: vec(1) };
      const plain = await c.createSession(config);
      const sharded = await c.createSession({ ...config, shards: 3 });
      const [g1, g2, g3] = [vec(1), vec(1), vec(1)];
      await plain.step(g1);
      await sharded.step(g1);
      // the dead client, in raw HTTP: prepares every shard with g2, commits shards 0 and 2
      const raw = async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => {
        const r = await fetch(url + path, {
          method,
          headers: { "content-type": "application/json", accept: "application/json", ...headers },
          body: body === undefined ? undefined : JSON.stringify(body),
        });
        return { status: r.status, doc: (await r.json()) as any };
      };
      const info = (await raw("GET", `/v1/sessions/${sharded.id}`)).doc;
      const shards = info.shards as { id: string; tensors: { name: string; start: number; stop: number }[] }[];
      assert.equal(shards.length, 3);
      const prepared = await Promise.all(
        shards.map(async (s) => {
          const [{ start, stop }] = s.tensors;
          const data = Array.from(g2.w.data.subarray(start, stop));
          const grads = { w: { shape: [stop - start], dtype: "float32", data } };
          const r = await raw("POST", `/v1/sessions/${s.id}/prepare`, { grads });
          assert.equal(r.status, 200, JSON.stringify(r.doc));
          return r.doc as { prepared: string; version: number; sumsq: unknown[] };
        }),
      );
      const sumsq = prepared.flatMap((p) => p.sumsq);
      const tokens = prepared.map((p) => p.prepared);
      const commit = (k: number, extra: Record<string, unknown> = {}) =>
        raw(
          "POST",
          `/v1/sessions/${shards[k]!.id}/step`,
          { prepared: tokens[k], sumsq, ...extra },
          { "if-match": '"1"', "idempotency-key": `dead-${k}-${store}` },
        );
      assert.equal((await commit(0, { tokens, loss: 1.5 })).status, 200);
      assert.equal((await commit(2)).status, 200);
      const half = (await raw("GET", `/v1/sessions/${sharded.id}`)).doc;
      assert.deepEqual(
        half.shards.map((s: { version: number }) => s.version),
        [2, 1, 2],
      );
      assert.equal(half.repair.version, 2);
      // the SDK's next step finishes the dead client's step on shard 1, then takes its own
      const b = await sharded.step(g3);
      await plain.step(g2, { loss: 1.5 });
      const a = await plain.step(g3);
      assert.deepEqual([b.version, b.step, b.lr, b.gradNorm], [a.version, a.step, a.lr, a.gradNorm]);
      assert.deepEqual(bits(b.params.w!), bits(a.params.w!));
      const [pa, pb] = await Promise.all([plain.params(), sharded.params()]);
      assert.deepEqual(bits(pb.params.w!), bits(pa.params.w!));
      const done = await sharded.info();
      assert.deepEqual(
        done.shards!.map((s) => s.version),
        [3, 3, 3],
      );
      assert.equal(done.repair ?? undefined, undefined);
      await Promise.all([sharded.delete(), plain.delete()]);
    });

    test("a subset of the gradients, onlyUpdated, a stale If-Match", async () => {
      const c = client();
      const rnd = noise(11);
      const params = grads(rnd, 1);
      const plain = await c.createSession({ optimizer: "sgd", lr: 0.1, params });
      const sharded = await c.createSession({ optimizer: "sgd", lr: 0.1, params, shards: 2 });
      const g = { b: grads(rnd, 1).b };
      const a = await plain.step(g, { onlyUpdated: true });
      const b = await sharded.step(g, { onlyUpdated: true });
      assert.deepEqual(Object.keys(b.params), Object.keys(a.params));
      assert.deepEqual(bits(b.params.b!), bits(a.params.b!));
      await assert.rejects(sharded.step(g, { ifMatch: 0 }), (e: unknown) => (e as { status?: number }).status === 412);
      await sharded.delete();
      await plain.delete();
    });
  });
}
