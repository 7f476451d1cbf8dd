/**
 * DiLoCo (arXiv 2311.08105) over optd: N workers (concurrent tasks here, machines in
 * practice) each fit y = x·w + b on their own data shard with H local steps of plain
 * SGD, then send the pseudo-gradient global - local to an elastic sync session whose
 * optimizer is the outer one (SGD, Nesterov momentum 0.9, lr 0.7). The round's mean
 * pseudo-gradient moves the global parameters; every worker continues from them.
 *
 *   optd serve &                                   # the server, embedded store
 *   cd clients/typescript && npm ci && npm run build:test
 *   OPTD_WIRE=int8 node build/examples/diloco.js   # OPTD_URL, OPTD_WORKERS, OPTD_ROUNDS
 *
 * OPTD_WIRE=int8 sends int8-block pseudo-gradients and gets bfloat16 parameters back
 * (DESIGN.md §3); float32 (default) is exact. A worker whose round closed without it
 * (409 stale-gradient, e.g. it joined late) adopts the current global parameters.
 */

import { type GradDtype, OptdClient, type Session, StaleGradientError, type Tensors } from "@optd/client";

const url = process.env.OPTD_URL ?? "http://127.0.0.1:8000";
const workers = Number(process.env.OPTD_WORKERS ?? 2);
const rounds = Number(process.env.OPTD_ROUNDS ?? 15);
const wire = (process.env.OPTD_WIRE ?? "float32") as GradDtype;
const H = 10; // local steps between syncs
const innerLR = 0.15;

// y = x·[1, -2, 0.5] + 0.3; each worker has its own shard, x pseudo-random
const trueW = [1, -2, 0.5];
function shard(seed: number, n: number): { xs: number[][]; ys: number[] } {
  const rand = () => ((seed = (seed * 16807) % 2147483647) / 2147483647) * 2 - 1;
  const xs = Array.from({ length: n }, () => [rand(), rand(), rand()]);
  return { xs, ys: xs.map((x) => x.reduce((s, v, j) => s + v * trueW[j]!, 0.3)) };
}

/** Mean squared error of (w, b) on the data and its gradient. */
function grad(data: ReturnType<typeof shard>, w: number[], b: number) {
  const gw = [0, 0, 0];
  let gb = 0;
  let mse = 0;
  const n = data.xs.length;
  data.xs.forEach((x, i) => {
    const err = x[0]! * w[0]! + x[1]! * w[1]! + x[2]! * w[2]! + b - data.ys[i]!;
    mse += (err * err) / n;
    x.forEach((v, j) => (gw[j]! += (2 * err * v) / n));
    gb += (2 * err) / n;
  });
  return { mse, gw, gb };
}

const client = new OptdClient({ baseUrl: url });
const session = await client.createSession({
  optimizer: "sgd",
  lr: 0.7,
  momentum: 0.9,
  nesterov: true,
  mode: "sync",
  workers,
  min_workers: 1, // a round closes once every live member has contributed
  worker_lease_s: 10, // a worker not heard from for 10 s is not waited for
  params: { w: new Float32Array(3), b: 0 },
});

let joined = 0;
let stale = 0;
/** One DiLoCo worker: join, read the global parameters, then per round H local SGD
 * steps and one pseudo-gradient step of the session. */
async function worker(s: Session, data: ReturnType<typeof shard>): Promise<void> {
  await s.join();
  joined++;
  while (joined < workers) await new Promise((r) => setTimeout(r, 10)); // start together
  const compressed = wire !== "float32" ? ({ gradDtype: wire, paramsDtype: "bfloat16" } as const) : {};
  let { params: global, version: base } = await s.params({ worker: s.worker });
  for (let r = 0; r < rounds; r++) {
    const w = Array.from(global.w!.data);
    const b = global.b!.data[0]!;
    const local = [...w];
    let lb = b;
    let mse = 0;
    for (let h = 0; h < H; h++) {
      const g = grad(data, local, lb);
      mse = g.mse;
      g.gw.forEach((v, j) => (local[j]! -= innerLR * v));
      lb -= innerLR * g.gb;
    }
    const delta: Tensors = {
      w: { data: Float32Array.from(w, (v, j) => v - local[j]!), shape: [3] },
      b: { data: Float32Array.of(b - lb), shape: [] },
    };
    try {
      ({ params: global, version: base } = await s.step(delta, { baseVersion: base, loss: mse, ...compressed }));
    } catch (e) {
      if (!(e instanceof StaleGradientError)) throw e;
      stale++; // the round closed without us: adopt the global parameters
      ({ params: global, version: base } = await s.params({ worker: s.worker, paramsDtype: compressed.paramsDtype }));
    }
  }
  await s.leave();
}

const heldOut = shard(1000, 256);
const first = grad(heldOut, [0, 0, 0], 0).mse;
await Promise.all(
  Array.from({ length: workers }, (_, k) => worker(client.session(session.id, { worker: `w${k}` }), shard(42 + k, 64))),
);
const { params, version } = await session.params();
const last = grad(heldOut, Array.from(params.w!.data), params.b!.data[0]!).mse;
console.log(
  `session ${session.id}: ${workers} workers, rounds ${version} (stale ${stale}), ` +
    `loss ${first.toExponential(3)} -> ${last.toExponential(3)}, ` +
    `w=[${Array.from(params.w!.data, (v) => v.toFixed(3))}] b=${params.b!.data[0]!.toFixed(3)}`,
);
await session.delete();
