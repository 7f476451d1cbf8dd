/** Compressed steps, elastic-round membership and the DiLoCo example, against a real
 * `optd serve` on the embedded store. */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { OptdClient, bfloat16Bits, dequantizeInt8Block, int8Block, tensor } from "@optd/client";
import { PKG, type Server, startServer } from "./helpers.js";

let server: Server;
before(async () => {
  server = await startServer("memory");
});
after(async () => {
  await server.stop();
});

const bf16 = (v: ArrayLike<number>): number[] =>
  Array.from(bfloat16Bits(v), (h) => new Float32Array(new Uint32Array([h << 16]).buffer)[0]!);

test("bfloat16 and int8 gradients, bfloat16 answers, over both wires", async () => {
  const g = Float32Array.of(1.001, -0.5, 0.25, 0.3);
  for (const wire of ["safetensors", "json"] as const) {
    const c = new OptdClient({ baseUrl: server.url, wire });
    const s = await c.createSession({ optimizer: "sgd", lr: 1, params: { w: tensor(new Float32Array(4), [2, 2]) } });
    const r = await s.step({ w: tensor(g, [2, 2]) }, { gradDtype: "bfloat16", paramsDtype: "bfloat16" });
    assert.equal(r.params.w!.dtype, "BF16");
    assert.deepEqual(r.params.w!.shape, [2, 2]);
    assert.deepEqual(Array.from(r.params.w!.data), bf16([-1.001, 0.5, -0.25, -0.3]));
    const exact = (await s.params()).params.w!;
    assert.notEqual(exact.dtype, "BF16");
    if (wire === "json") {
      await assert.rejects(s.step({ w: tensor(g, [2, 2]) }, { gradDtype: "int8" }), TypeError);
      continue;
    }
    const q = await s.step({ w: tensor(g, [2, 2]) }, { gradDtype: "int8", block: 3 });
    const { q: qs, scale } = int8Block(g, 3);
    const dq = dequantizeInt8Block(qs, scale, 3);
    assert.deepEqual(Array.from(q.params.w!.data), Array.from(exact.data, (v, i) => Math.fround(v - dq[i]!)));
  }
});

test("join, workers, leave", async () => {
  const c = new OptdClient({ baseUrl: server.url });
  const s = await c.createSession({
    optimizer: "sgd",
    lr: 1,
    mode: "sync",
    workers: 3,
    min_workers: 1,
    worker_lease_s: 30,
    params: { w: [0, 0] },
  });
  const info = await s.info();
  assert.deepEqual([info.min_workers, info.worker_lease_s, info.hyperparams.min_workers], [1, 30, undefined]);
  const a = c.session(s.id, { worker: "a" });
  const j = await a.join();
  assert.deepEqual([j.worker, j.version, j.lease_s, j.round.have], ["a", 0, 30, 0]);
  await a.join("b");
  assert.deepEqual((await a.workers()).workers.map((w) => [w.worker, w.live]), [["a", true], ["b", true]]);
  await a.leave("b");
  // the only live member contributes: the round closes with one worker
  const r = await a.step({ w: [1, 2] }, { baseVersion: 0 });
  assert.deepEqual([r.version, Array.from(r.params.w!.data)], [1, [-1, -2]]);
  await a.leave();
  assert.deepEqual((await a.workers()).workers, []);
  await assert.rejects(c.session(s.id).join(), TypeError);
});

for (const wire of ["float32", "int8"]) {
  test(`examples/typescript/diloco.ts (${wire}): every round closes, the loss falls`, async () => {
    const env = { ...process.env, OPTD_URL: server.url, OPTD_WORKERS: "3", OPTD_ROUNDS: "12", OPTD_WIRE: wire };
    const { stdout } = await promisify(execFile)(process.execPath, [join(PKG, "build/examples/diloco.js")], { env });
    const m = /rounds (\d+) \(stale (\d+)\), loss (\S+) -> (\S+),/.exec(stdout);
    assert.ok(m, stdout);
    assert.ok(Number(m[1]) >= 12 && Number(m[4]) < Number(m[3]) / 1000, stdout);
  });
}
