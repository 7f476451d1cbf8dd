/**
 * Sharded sessions (the server's DESIGN §3): a session created with `shards: K` keeps its
 * parameters in K shard sessions `{id}-s{k}`. A step splits the gradient over them,
 * prepares every shard, commits shard 0 and then the others, and assembles the result.
 */

import type { OptdClient } from "./client.js";
import { newKey } from "./client.js";
import { InvalidTensorError, OptdError, PreconditionFailedError, ShardsDivergedError } from "./errors.js";
import { sleep } from "./http.js";
import { type Tensor, type Tensors, setOwn, size } from "./tensors.js";
import type { SessionInfo, StepOptions, StepResult } from "./types.js";

/** One shard session in the session info's `shards` list. */
export interface ShardInfo {
  id: string;
  index: number;
  /** Positions in the flat layout (the order of `params`). */
  start: number;
  stop: number;
  version: number;
  /** Pieces: element ranges of each tensor flattened row-major. */
  tensors: { name: string; start: number; stop: number }[];
}

/** The session info's `repair`: shard 0's last commit, while some shards have not taken it
 * (its client died between commits). Commit each shard at `version - 1` with its token. */
export interface ShardRepair {
  version: number;
  tokens: string[];
  sumsq: unknown[];
  loss?: number;
  worker?: string;
}

/** What a sharded step needs to know: the shards and every tensor's full shape. */
export interface ShardLayout {
  shards: ShardInfo[];
  shapes: Record<string, number[]>;
}

const PREPARE_EXPIRED = "urn:optd:problem:prepare-expired";

/** The layout of a sharded session's info; null when the session is not sharded. */
export function layoutOf(info: SessionInfo): ShardLayout | null {
  const shards = info.shards;
  if (!Array.isArray(shards) || shards.length === 0) return null;
  const shapes: Record<string, number[]> = {};
  for (const [name, p] of Object.entries(info.params ?? {})) setOwn(shapes, name, p.shape);
  return { shards: [...shards].sort((a, b) => a.index - b.index), shapes };
}

/** Each shard's part of `grads`: 1-D pieces (row-major slices) under the tensors' names. */
export function splitGrads(layout: ShardLayout, grads: Tensors): Tensors[] {
  for (const [name, t] of Object.entries(grads)) {
    const shape = Object.hasOwn(layout.shapes, name) ? layout.shapes[name] : undefined;
    if (shape === undefined) throw new InvalidTensorError(`grads: unknown parameter ${JSON.stringify(name)}`);
    if (t.data.length !== size(shape) || (t.shape.length !== shape.length && t.shape.length > 1))
      throw new InvalidTensorError(
        `grads[${JSON.stringify(name)}]: shape [${t.shape}] does not match the parameter's [${shape}]`,
      );
  }
  return layout.shards.map((shard) => {
    const part: Tensors = {};
    for (const piece of shard.tensors) {
      const g = Object.hasOwn(grads, piece.name) ? grads[piece.name] : undefined;
      if (g === undefined) continue;
      const t: Tensor = { data: g.data.subarray(piece.start, piece.stop), shape: [piece.stop - piece.start] };
      if (g.dtype !== undefined) t.dtype = g.dtype;
      setOwn(part, piece.name, t);
    }
    return part;
  });
}

/** Whole tensors from the shards' pieces (in layout order); a tensor with a piece
 * missing (e.g. `onlyUpdated`) is left out. */
export function assembleParts(layout: ShardLayout, parts: Tensors[]): Tensors {
  const pieces = new Map<string, { start: number; t: Tensor | undefined }[]>();
  layout.shards.forEach((shard, k) => {
    const part = parts[k] ?? {};
    for (const { name, start } of shard.tensors) {
      const t = Object.hasOwn(part, name) ? part[name] : undefined;
      pieces.set(name, [...(pieces.get(name) ?? []), { start, t }]);
    }
  });
  const out: Tensors = {};
  for (const [name, shape] of Object.entries(layout.shapes)) {
    const list = pieces.get(name);
    if (list === undefined || list.some((p) => p.t === undefined)) continue;
    const first = list[0]!.t!;
    const data = first.data instanceof Float64Array ? new Float64Array(size(shape)) : new Float32Array(size(shape));
    for (const { start, t } of list) data.set(t!.data, start);
    const whole: Tensor = { data, shape: [...shape] };
    if (first.dtype !== undefined) whole.dtype = first.dtype;
    setOwn(out, name, whole);
  }
  return out;
}

/** A step from its prepare on: kept on the session while a commit may be owed. */
export interface PendingCommit {
  /** The step's Idempotency-Key (the caller's, or a fresh one). */
  key: string;
  version: number;
  /** Every shard's list, in shard order, verbatim (`"NaN"` too). */
  sumsq: unknown[];
  /** Each shard's prepare body (encoded once). */
  bodies: (Uint8Array | string)[];
  tokens: string[];
  /** Idempotency-Key of each shard's commit (a new one whenever its body changes). */
  keys: string[];
  answers: (StepResult | undefined)[];
  options: StepOptions;
  worker: string | undefined;
}

/** Keeps a step on the session (`hold(p)`) or forgets it (`hold(p, true)`). */
export type Hold = (p: PendingCommit, done?: boolean) => void;

interface Prepared {
  prepared: string;
  version: number;
  sumsq: unknown[];
}

/** `prepare-expired` answers in a row for one commit before it is an error. */
const MAX_REPREPARE = 5;

const shardPath = (shard: ShardInfo, tail: string) => `/v1/sessions/${encodeURIComponent(shard.id)}${tail}`;

async function prepare(c: OptdClient, shard: ShardInfo, body: Uint8Array | string): Promise<Prepared> {
  const doc = (await c.json({
    method: "POST",
    path: shardPath(shard, "/prepare"),
    body,
    contentType: c.tensorType,
    accept: "application/json",
  })) as Prepared;
  if (typeof doc?.prepared !== "string" || !Number.isSafeInteger(doc.version))
    throw new TypeError(`malformed prepare answer from shard ${shard.id}`);
  return { ...doc, sumsq: Array.isArray(doc.sumsq) ? doc.sumsq : [] };
}

/** How long the versions stay apart before a step looks for a repair (the step's own
 * client may still be committing), and then between looks. */
const REPAIR_AFTER_MS = 500;

/** The session `{id}` of a layout: its shards are `{id}-s{k}` (DESIGN §3). */
const sessionOf = (layout: ShardLayout) => layout.shards[0]!.id.replace(/-s0$/, "");

/**
 * Finish a step a dead client left half-applied, if the session info says there is one
 * (`repair`): commit every shard still at `repair.version - 1` with that step's token.
 * A 412 there means another client finished it; `prepare-expired` means it cannot be
 * finished (ShardsDivergedError).
 */
async function repair(c: OptdClient, layout: ShardLayout): Promise<void> {
  const info = (await c.json({
    method: "GET",
    path: `/v1/sessions/${encodeURIComponent(sessionOf(layout))}`,
  })) as SessionInfo | null;
  const r = info?.repair;
  if (!r || !Number.isSafeInteger(r.version) || !Array.isArray(r.tokens) || !Array.isArray(info.shards)) return;
  const behind = info.shards.filter((s) => s.version === r.version - 1 && typeof r.tokens[s.index] === "string");
  const outcomes = await Promise.allSettled(
    behind.map((shard) => {
      const body: Record<string, unknown> = { prepared: r.tokens[shard.index], sumsq: r.sumsq };
      if (r.loss !== undefined && r.loss !== null) body.loss = r.loss;
      if (r.worker !== undefined && r.worker !== null) body.worker = r.worker;
      return c.http.send({
        method: "POST",
        path: shardPath(shard, "/step"),
        body: JSON.stringify(body),
        contentType: "application/json",
        headers: { "if-match": `"${r.version - 1}"`, "idempotency-key": newKey(), prefer: "return=minimal" },
      });
    }),
  );
  const failed = outcomes.flatMap((o, j) =>
    o.status === "rejected" && !(o.reason instanceof PreconditionFailedError) // 412: repaired by another
      ? [{ shard: behind[j]!, e: o.reason as unknown }]
      : [],
  );
  const gone = failed.find((f) => f.e instanceof OptdError && f.e.type === PREPARE_EXPIRED);
  if (gone !== undefined) {
    const { shard, e } = gone;
    throw new ShardsDivergedError(
      `shard ${shard.id} is at version ${r.version - 1} and the part of the step of version ${r.version} ` +
        "that another client left half-applied is gone (prepare-expired): that step cannot be finished; " +
        "restore the shards from checkpoints (DESIGN §3)",
      { status: 409, problem: { version: r.version, shard: shard.id }, cause: e },
    );
  }
  if (failed.length) throw failed[0]!.e;
}

/** Prepare every shard; while their versions differ, wait a little and prepare the ones
 * behind again (up to `shardWaitMs`, then ShardsDivergedError). From half a second on,
 * a step another client left half-applied is finished first (`repair`). */
async function prepareAll(c: OptdClient, layout: ShardLayout, bodies: (Uint8Array | string)[]) {
  const every = layout.shards.map((_, k) => k);
  const got = await Promise.all(every.map((k) => prepare(c, layout.shards[k]!, bodies[k]!)));
  const start = Date.now();
  const deadline = start + c.shardWaitMs;
  let repairAt = start + Math.min(REPAIR_AFTER_MS, c.shardWaitMs);
  for (let i = 0; ; i++) {
    const versions = got.map((p) => p.version);
    const top = Math.max(...versions);
    if (versions.every((v) => v === top)) return got;
    const now = Date.now();
    if (now >= repairAt) {
      await repair(c, layout); // then prepare the shards behind again
      repairAt = Date.now() + REPAIR_AFTER_MS;
    } else if (now >= deadline) {
      const named = layout.shards.map((s, k) => `${s.id} at ${versions[k]}`).join(", ");
      throw new ShardsDivergedError(
        `the shards' versions differ for ${c.shardWaitMs} ms (${named}): a step of another client is ` +
          "half-applied (restore the shards from checkpoints if it died; DESIGN §3)",
        { problem: { versions } },
      );
    } else await sleep(Math.min(500, 10 * 2 ** i, repairAt - now));
    const behind = every.filter((k) => versions[k]! < top);
    const again = await Promise.all(behind.map((k) => prepare(c, layout.shards[k]!, bodies[k]!)));
    behind.forEach((k, j) => (got[k] = again[j]!));
  }
}

/** Commit shard k of `p`; a `prepare-expired` answer prepares it again (same sumsq and If-Match). */
async function commit(c: OptdClient, layout: ShardLayout, p: PendingCommit, k: number): Promise<void> {
  const shard = layout.shards[k]!;
  const o = p.options;
  for (let expired = 0; ; expired++) {
    const body: Record<string, unknown> = { prepared: p.tokens[k], sumsq: p.sumsq };
    // shard 0 keeps every shard's token: what finishes this step if this client dies
    // before the other commits (another shard's token prepared again later is its own)
    if (k === 0) body.tokens = [...p.tokens];
    if (o.loss !== undefined) body.loss = o.loss;
    if (p.worker !== undefined) body.worker = p.worker;
    const headers: Record<string, string> = { "if-match": `"${p.version}"`, "idempotency-key": p.keys[k]! };
    if (o.paramsDtype && o.paramsDtype !== "float32") headers["optd-response-dtype"] = o.paramsDtype;
    try {
      const reply = await c.http.send({
        method: "POST",
        path: shardPath(shard, "/step"),
        query: { return: o.onlyUpdated ? "updated" : undefined },
        body: JSON.stringify(body),
        contentType: "application/json",
        accept: c.tensorType,
        headers,
      });
      const { fields: f, tensors } = c.parseTensors(reply, "params");
      const num = (v: unknown) => (typeof v === "number" ? v : undefined);
      p.answers[k] = {
        params: tensors,
        version: num(f.version) ?? p.version + 1,
        step: num(f.step),
        lr: num(f.lr),
        gradNorm: num(f.grad_norm),
        staleness: null,
        replayed: reply.headers.get("idempotent-replayed")?.toLowerCase() === "true",
      };
      return;
    } catch (e) {
      if (!(e instanceof OptdError && e.type === PREPARE_EXPIRED) || expired + 1 >= MAX_REPREPARE) throw e;
      p.tokens[k] = (await prepare(c, shard, p.bodies[k]!)).prepared; // a new body needs a new key
      p.keys[k] = newKey();
    }
  }
}

/** Whether a failed commit may still have been applied (or may apply when sent again). */
const outcomeUnknown = (e: unknown): boolean =>
  !(e instanceof OptdError) || e.status === undefined || e.status >= 500 || [408, 409, 429].includes(e.status);

/**
 * Commit what `p` has left: shard 0 first, then the others in parallel; the assembled
 * result, or undefined when shard 0 refused the version (412: nothing of this step was
 * applied). Throws with `p` held while some commit may be owed (the next step sends it).
 */
export async function commitAll(c: OptdClient, layout: ShardLayout, p: PendingCommit, hold: Hold) {
  hold(p);
  if (p.answers[0] === undefined) {
    try {
      await commit(c, layout, p, 0);
    } catch (e) {
      if (e instanceof PreconditionFailedError || !outcomeUnknown(e)) hold(p, true);
      if (e instanceof PreconditionFailedError) return undefined;
      throw e;
    }
  }
  const rest = layout.shards.map((_, k) => k).filter((k) => k > 0 && p.answers[k] === undefined);
  const outcomes = await Promise.allSettled(rest.map((k) => commit(c, layout, p, k)));
  const failed = rest.flatMap((k, j) => {
    const o = outcomes[j]!;
    return o.status === "rejected" ? [{ k, e: o.reason as unknown }] : [];
  });
  if (failed.length) {
    // a refusal (412, 404, 422, ...) is final: this shard will not take the step
    const refused = failed.find((f) => !outcomeUnknown(f.e));
    if (refused === undefined) throw failed[0]!.e; // still held: the next step() sends these commits again
    hold(p, true);
    const { k, e } = refused;
    const id = layout.shards[k]!.id;
    throw new ShardsDivergedError(
      `shard ${id} refused the commit of version ${p.version} after shard 0 took it (${String(e)}); ` +
        "the session is half-applied: restore the shards from checkpoints (DESIGN §3)",
      { status: (e as OptdError).status, problem: { version: p.version, shard: id }, cause: e },
    );
  }
  hold(p, true);
  const params = assembleParts(
    layout,
    p.answers.map((a) => a!.params),
  );
  const { params: _, ...first } = p.answers[0]!;
  return { ...first, params } as StepResult;
}

/** One sharded step (the session's `step()` on a sharded session). */
export async function shardedStep(
  c: OptdClient,
  layout: ShardLayout,
  grads: Tensors,
  options: StepOptions,
  worker: string | undefined,
  hold: Hold,
): Promise<StepResult> {
  const bodies = splitGrads(layout, grads).map((part) => c.gradBody(part, options));
  const key = options.idempotencyKey ?? newKey();
  for (;;) {
    const prepared = await prepareAll(c, layout, bodies);
    const version = prepared[0]!.version;
    const stale = () =>
      new PreconditionFailedError(`the shards are at version ${version}, not ${options.ifMatch}`, {
        status: 412,
        problem: { current_version: version },
      });
    if (options.ifMatch !== undefined && version !== options.ifMatch) throw stale();
    const p: PendingCommit = {
      key,
      version,
      sumsq: prepared.flatMap((x) => x.sumsq),
      bodies,
      tokens: prepared.map((x) => x.prepared),
      keys: prepared.map(() => newKey()),
      answers: [],
      options,
      worker,
    };
    const result = await commitAll(c, layout, p, hold);
    if (result !== undefined) return result;
    if (options.ifMatch !== undefined) throw stale(); // 412 from shard 0: another step took v + 1
  }
}
