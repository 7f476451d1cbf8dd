/** Against a real `optd serve`, on the embedded store and on a private Redis. */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import {
  InvalidConfigError,
  InvalidTensorError,
  NotFoundError,
  OptdClient,
  OptdError,
  PreconditionFailedError,
  StaleGradientError,
  checkpointSlot,
  tensor,
} from "@optd/client";
import { PKG, type Server, startServer } from "./helpers.js";

const servers: Partial<Record<"memory" | "redis", Server>> = {};
before(async () => {
  const [m, r] = await Promise.all([startServer("memory"), startServer("redis")]);
  Object.assign(servers, { memory: m, redis: r });
});
after(async () => {
  await Promise.all(Object.values(servers).map((s) => s.stop()));
});

const close = (got: ArrayLike<number>, want: number[], tol = 1e-6) =>
  want.forEach((w, i) => assert.ok(Math.abs(got[i]! - w) <= tol, `[${i}] ${got[i]} != ${w}`));

for (const store of ["memory", "redis"] as const) {
  describe(`${store} store`, { timeout: 60_000 }, () => {
    const client = (opts: ConstructorParameters<typeof OptdClient>[0] = {}) =>
      new OptdClient({ baseUrl: servers[store]!.url, backoffMs: 20, ...opts });

    test("steps over both wires give the same parameters", async () => {
      const st = client();
      const js = client({ wire: "json" });
      const s = await st.createSession({
        optimizer: "adam",
        lr: 0.1,
        params: { w: tensor(Float32Array.of(0.5, -0.5, 1, 2), [2, 2]), b: 0 },
      });
      const r1 = await s.step({ w: tensor(Float32Array.of(1, -1, 0.5, 0), [2, 2]), b: -2 }, { loss: 1 });
      assert.deepEqual([r1.version, r1.step, r1.lr, r1.replayed], [1, 1, 0.1, false]);
      close(r1.params.w!.data, [0.4, -0.4, 0.9, 2], 1e-6); // Adam's first step: lr * sign(g)
      assert.deepEqual(r1.params.w!.shape, [2, 2]);
      assert.deepEqual(r1.params.b!.shape, []);
      close(r1.params.b!.data, [0.1]);
      const r2 = await js.session(s.id).step({ b: 1 }, { loss: 0.5 });
      assert.equal(r2.version, 2);
      assert.deepEqual(Object.keys(r2.params), ["w", "b"]);
      const [a, b] = await Promise.all([s.params(), js.session(s.id).params()]);
      assert.deepEqual(a.params, b.params);
      assert.equal(s.version, 2);
      const info = await s.info();
      assert.deepEqual([info.step, info.last_loss, info.params!.b!.step, info.params!.w!.step], [2, 0.5, 2, 1]);
    });

    test("update, list, checkpoint round trip, set params, delete", async () => {
      const c = client();
      const label = `t${Date.now()}${Math.random()}`;
      const s = await c.createSession({
        optimizer: "adamw",
        lr: 0.01,
        weight_decay: 0.1,
        labels: { run: label },
        params: { w: tensor([1, 2, 3]) },
      });
      await s.step({ w: [0.1, 0.2, 0.3] });
      const info = await s.update({ lr: 0.005, max_grad_norm: 1 });
      assert.deepEqual(
        [info.hyperparams.lr, info.hyperparams.weight_decay, info.max_grad_norm, info.version],
        [0.005, 0.1, 1, 2],
      );
      const listed = [];
      for await (const x of c.listSessions({ run: label }, 1)) listed.push(x.id);
      assert.deepEqual(listed, [s.id]);
      for (const wire of ["safetensors", "json"] as const) {
        const ckpt = await client({ wire }).session(s.id).state();
        assert.deepEqual(Object.keys(checkpointSlot(ckpt, "exp_avg")), ["w"]);
        const copy = client({ wire }).session(`copy-${wire}-${label.replace(/\W/g, "")}`);
        assert.equal(await copy.loadState(ckpt), 0);
        assert.deepEqual((await copy.params()).params, (await s.params()).params);
        const again = await copy.step({ w: [0.1, 0.2, 0.3] });
        const orig = await client({ wire })
          .session(s.id)
          .step({ w: [0.1, 0.2, 0.3] }, { ifMatch: s.version! });
        assert.deepEqual(again.params, orig.params);
        s.version = orig.version;
        await copy.delete();
      }
      assert.equal(await s.setParams({ w: Float64Array.of(7, 8, 9) }), s.version);
      assert.deepEqual(Array.from((await s.params({ names: ["w"] })).params.w!.data), [7, 8, 9]);
      await s.delete();
      await assert.rejects(s.info(), NotFoundError);
      await assert.rejects(s.delete(), NotFoundError);
    });

    test("failures are typed by slug", async () => {
      const c = client();
      const s = await c.createSession({ optimizer: "sgd", lr: 0.1, max_staleness: 1, params: { w: [0, 0] } });
      for (let i = 0; i < 3; i++) await s.step({ w: [1, 1] });
      const stale = await s.step({ w: [1, 1] }, { baseVersion: 0 }).catch((e: unknown) => e);
      assert.ok(stale instanceof StaleGradientError && stale instanceof OptdError);
      assert.deepEqual([stale.slug, stale.status, stale.currentVersion], ["stale-gradient", 409, 3]);
      await assert.rejects(s.step({ nope: [1] }), InvalidTensorError);
      await assert.rejects(s.step({ w: [1, 2, 3] }), InvalidTensorError);
      await assert.rejects(s.step({ w: [1, NaN] }), InvalidTensorError);
      await assert.rejects(
        client({ wire: "json" })
          .session(s.id)
          .step({ w: [Infinity, 0] }),
        InvalidTensorError,
      );
      await assert.rejects(s.step({ w: [1, 1] }, { ifMatch: 1 }), PreconditionFailedError);
      await assert.rejects(
        c.createSession({ optimizer: "adam", betas: [2, 0], params: { w: [0] } }),
        InvalidConfigError,
      );
      await assert.rejects(c.session("no-such-session").params(), NotFoundError);
      assert.equal((await s.info()).version, 3); // nothing above changed it
    });

    test("a retried step reuses its Idempotency-Key and is applied once", async () => {
      let calls = 0;
      const flaky: typeof fetch = async (input, init) => {
        const res = await fetch(input, init);
        if (String(input).endsWith("/step") && calls++ === 0)
          throw new TypeError("connection reset (simulated, after the server answered)");
        return res;
      };
      const s = await client({ fetch: flaky }).createSession({ optimizer: "adam", lr: 0.1, params: { w: [1, 1] } });
      const r = await s.step({ w: [1, -1] });
      assert.deepEqual([calls, r.version, r.replayed], [2, 1, true]);
      close(r.params.w!.data, [0.9, 1.1]);
      assert.equal((await s.info()).step, 1);
    });

    test("503 with Retry-After is retried", async () => {
      let calls = 0;
      const busy: typeof fetch = async (input, init) =>
        calls++ === 0
          ? new Response('{"type":"urn:optd:problem:store-unavailable","status":503}', {
              status: 503,
              headers: { "retry-after": "0" },
            })
          : fetch(input, init);
      const s = await client({ fetch: busy }).createSession({ optimizer: "sgd", params: { w: [1] } });
      assert.equal(calls, 2);
      assert.equal(s.version, 0);
    });

    test("sync mode: a 202 barrier is awaited by long-polling", async () => {
      const c = client({ pollWaitS: 5 });
      const s = await c.createSession({ optimizer: "sgd", lr: 1, mode: "sync", workers: 2, params: { w: [0, 0] } });
      const w1 = c.session(s.id, { worker: "w1" }).step({ w: [1, 0] }, { baseVersion: 0, wait: 0 });
      await new Promise((r) => setTimeout(r, 300));
      const w2 = await c.session(s.id, { worker: "w2" }).step({ w: [0, 1] }, { baseVersion: 0 });
      const first = await w1;
      // the barrier also names the round's contributors (elastic rounds); these keys as before
      const { version, have, need } = first.barrier ?? {};
      assert.deepEqual({ version, have, need }, { version: 0, have: 1, need: 2 });
      assert.deepEqual([first.version, w2.version], [1, 1]);
      assert.deepEqual(Array.from(first.params.w!.data), [-0.5, -0.5]);
      assert.deepEqual(first.params, w2.params);
    });

    test("float64 sessions, half-precision gradients, optimizers()", async () => {
      const c = client();
      const s = await c.createSession({ optimizer: "sgd", lr: 1, dtype: "float64", params: { w: [0.1, 0.2] } });
      const r = await s.step({ w: { data: Float32Array.of(0.5, -0.25), shape: [2], dtype: "BF16" } });
      assert.ok(r.params.w!.data instanceof Float64Array);
      close(r.params.w!.data, [0.1 - 0.5, 0.2 + 0.25], 1e-15);
      const h = await s.step({ w: { data: Float32Array.of(0.5, 0.5), shape: [2], dtype: "F16" } });
      close(h.params.w!.data, [-0.9, -0.05], 1e-15);
      const optimizers = await c.optimizers();
      assert.ok(JSON.stringify(optimizers).includes("adam"));
    });

    if (store === "memory") {
      test("examples/typescript/linear-regression.ts converges", async () => {
        const env = { ...process.env, OPTD_URL: servers[store]!.url, OPTD_STEPS: "120" };
        const { stdout } = await promisify(execFile)(
          process.execPath,
          [join(PKG, "build/examples/linear-regression.js")],
          { env },
        );
        const mse = Number(/mse (\S+)/.exec(stdout)?.[1]);
        assert.ok(mse < 1e-3, stdout);
      });
    }
  });
}
