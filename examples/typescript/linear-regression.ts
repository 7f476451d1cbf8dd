/**
 * A worker that fits y = x·w + b by least squares against optd: it computes the
 * gradients, the server keeps Adam's state and returns the new parameters.
 *
 *   optd serve &                                   # the server, embedded store
 *   cd clients/typescript && npm ci && npm run build:test
 *   node build/examples/linear-regression.js      # OPTD_URL, OPTD_STEPS optional
 */

import { OptdClient } from "@optd/client";

const url = process.env.OPTD_URL ?? "http://127.0.0.1:8000";
const steps = Number(process.env.OPTD_STEPS ?? 150);

// 64 samples of y = x·[1, -2, 0.5] + 0.3, x from a fixed pseudo-random sequence
let seed = 42;
const rand = () => ((seed = (seed * 16807) % 2147483647) / 2147483647) * 2 - 1;
const trueW = [1, -2, 0.5];
const xs = Array.from({ length: 64 }, () => [rand(), rand(), rand()]);
const ys = xs.map((x) => x.reduce((s, v, j) => s + v * trueW[j]!, 0.3));

const client = new OptdClient({ baseUrl: url });
const session = await client.createSession({
  optimizer: "adam",
  lr: 0.1,
  params: { w: new Float32Array(3), b: 0 },
});
let w: ArrayLike<number> = new Float32Array(3);
let b = 0;
let mse = 0;
for (let t = 0; t < steps; t++) {
  const gw = new Float64Array(3);
  let gb = 0;
  mse = 0;
  xs.forEach((x, i) => {
    const err = x[0]! * w[0]! + x[1]! * w[1]! + x[2]! * w[2]! + b - ys[i]!;
    mse += (err * err) / xs.length;
    x.forEach((v, j) => (gw[j]! += (2 * err * v) / xs.length));
    gb += (2 * err) / xs.length;
  });
  const { params } = await session.step({ w: gw, b: gb }, { loss: mse });
  w = params.w!.data;
  b = params.b!.data[0]!;
}
console.log(
  `session ${session.id}: mse ${mse.toExponential(3)} after ${steps} steps, w=[${Array.from(w, (v) => v.toFixed(3))}] b=${b.toFixed(3)}`,
);
await session.delete();
