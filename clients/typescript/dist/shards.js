/**
 * Sharded sessions (the server's DESIGN §3): a session created with `shards: K` keeps its
 * parameters in K shard sessions `{id}-s{k}`. A step splits the gradient over them,
 * prepares every shard, commits shard 0 and then the others, and assembles the result.
 */
import { newKey } from "./client.js";
import { InvalidTensorError, OptdError, PreconditionFailedError, ShardsDivergedError } from "./errors.js";
import { sleep } from "./http.js";
import { setOwn, size } from "./tensors.js";
const PREPARE_EXPIRED = "urn:optd:problem:prepare-expired";
/** The layout of a sharded session's info; null when the session is not sharded. */
export function layoutOf(info) {
    const shards = info.shards;
    if (!Array.isArray(shards) || shards.length === 0)
        return null;
    const shapes = {};
    for (const [name, p] of Object.entries(info.params ?? {}))
        setOwn(shapes, name, p.shape);
    return { shards: [...shards].sort((a, b) => a.index - b.index), shapes };
}
/** Each shard's part of `grads`: 1-D pieces (row-major slices) under the tensors' names. */
export function splitGrads(layout, grads) {
    for (const [name, t] of Object.entries(grads)) {
        const shape = Object.hasOwn(layout.shapes, name) ? layout.shapes[name] : undefined;
        if (shape === undefined)
            throw new InvalidTensorError(`grads: unknown parameter ${JSON.stringify(name)}`);
        if (t.data.length !== size(shape) || (t.shape.length !== shape.length && t.shape.length > 1))
            throw new InvalidTensorError(`grads[${JSON.stringify(name)}]: shape [${t.shape}] does not match the parameter's [${shape}]`);
    }
    return layout.shards.map((shard) => {
        const part = {};
        for (const piece of shard.tensors) {
            const g = Object.hasOwn(grads, piece.name) ? grads[piece.name] : undefined;
            if (g === undefined)
                continue;
            const t = { data: g.data.subarray(piece.start, piece.stop), shape: [piece.stop - piece.start] };
            if (g.dtype !== undefined)
                t.dtype = g.dtype;
            setOwn(part, piece.name, t);
        }
        return part;
    });
}
/** Whole tensors from the shards' pieces (in layout order); a tensor with a piece
 * missing (e.g. `onlyUpdated`) is left out. */
export function assembleParts(layout, parts) {
    const pieces = new Map();
    layout.shards.forEach((shard, k) => {
        const part = parts[k] ?? {};
        for (const { name, start } of shard.tensors) {
            const t = Object.hasOwn(part, name) ? part[name] : undefined;
            pieces.set(name, [...(pieces.get(name) ?? []), { start, t }]);
        }
    });
    const out = {};
    for (const [name, shape] of Object.entries(layout.shapes)) {
        const list = pieces.get(name);
        if (list === undefined || list.some((p) => p.t === undefined))
            continue;
        const first = list[0].t;
        const data = first.data instanceof Float64Array ? new Float64Array(size(shape)) : new Float32Array(size(shape));
        for (const { start, t } of list)
            data.set(t.data, start);
        const whole = { data, shape: [...shape] };
        if (first.dtype !== undefined)
            whole.dtype = first.dtype;
        setOwn(out, name, whole);
    }
    return out;
}
/** `prepare-expired` answers in a row for one commit before it is an error. */
const MAX_REPREPARE = 5;
const shardPath = (shard, tail) => `/v1/sessions/${encodeURIComponent(shard.id)}${tail}`;
async function prepare(c, shard, body) {
    const doc = (await c.json({
        method: "POST",
        path: shardPath(shard, "/prepare"),
        body,
        contentType: c.tensorType,
        accept: "application/json",
    }));
    if (typeof doc?.prepared !== "string" || !Number.isSafeInteger(doc.version))
        throw new TypeError(`malformed prepare answer from shard ${shard.id}`);
    return { ...doc, sumsq: Array.isArray(doc.sumsq) ? doc.sumsq : [] };
}
/** Prepare every shard; while their versions differ, wait a little and prepare the ones
 * behind again (up to `shardWaitMs`, then ShardsDivergedError). */
async function prepareAll(c, layout, bodies) {
    const every = layout.shards.map((_, k) => k);
    const got = await Promise.all(every.map((k) => prepare(c, layout.shards[k], bodies[k])));
    const deadline = Date.now() + c.shardWaitMs;
    for (let i = 0;; i++) {
        const versions = got.map((p) => p.version);
        const top = Math.max(...versions);
        if (versions.every((v) => v === top))
            return got;
        if (Date.now() >= deadline) {
            const named = layout.shards.map((s, k) => `${s.id} at ${versions[k]}`).join(", ");
            throw new ShardsDivergedError(`the shards' versions differ for ${c.shardWaitMs} ms (${named}): a step of another client is ` +
                "half-applied (restore the shards from checkpoints if it died; DESIGN §3)", { problem: { versions } });
        }
        await sleep(Math.min(500, 10 * 2 ** i));
        const behind = every.filter((k) => versions[k] < top);
        const again = await Promise.all(behind.map((k) => prepare(c, layout.shards[k], bodies[k])));
        behind.forEach((k, j) => (got[k] = again[j]));
    }
}
/** Commit shard k of `p`; a `prepare-expired` answer prepares it again (same sumsq and If-Match). */
async function commit(c, layout, p, k) {
    const shard = layout.shards[k];
    const o = p.options;
    for (let expired = 0;; expired++) {
        const body = { prepared: p.tokens[k], sumsq: p.sumsq };
        if (o.loss !== undefined)
            body.loss = o.loss;
        if (p.worker !== undefined)
            body.worker = p.worker;
        const headers = { "if-match": `"${p.version}"`, "idempotency-key": p.keys[k] };
        if (o.paramsDtype && o.paramsDtype !== "float32")
            headers["optd-response-dtype"] = o.paramsDtype;
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
            const num = (v) => (typeof v === "number" ? v : undefined);
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
        }
        catch (e) {
            if (!(e instanceof OptdError && e.type === PREPARE_EXPIRED) || expired + 1 >= MAX_REPREPARE)
                throw e;
            p.tokens[k] = (await prepare(c, shard, p.bodies[k])).prepared; // a new body needs a new key
            p.keys[k] = newKey();
        }
    }
}
/** Whether a failed commit may still have been applied (or may apply when sent again). */
const outcomeUnknown = (e) => !(e instanceof OptdError) || e.status === undefined || e.status >= 500 || [408, 409, 429].includes(e.status);
/**
 * Commit what `p` has left: shard 0 first, then the others in parallel; the assembled
 * result, or undefined when shard 0 refused the version (412: nothing of this step was
 * applied). Throws with `p` held while some commit may be owed (the next step sends it).
 */
export async function commitAll(c, layout, p, hold) {
    hold(p);
    if (p.answers[0] === undefined) {
        try {
            await commit(c, layout, p, 0);
        }
        catch (e) {
            if (e instanceof PreconditionFailedError || !outcomeUnknown(e))
                hold(p, true);
            if (e instanceof PreconditionFailedError)
                return undefined;
            throw e;
        }
    }
    const rest = layout.shards.map((_, k) => k).filter((k) => k > 0 && p.answers[k] === undefined);
    const outcomes = await Promise.allSettled(rest.map((k) => commit(c, layout, p, k)));
    const failed = rest.flatMap((k, j) => {
        const o = outcomes[j];
        return o.status === "rejected" ? [{ k, e: o.reason }] : [];
    });
    if (failed.length) {
        // a refusal (412, 404, 422, ...) is final: this shard will not take the step
        const refused = failed.find((f) => !outcomeUnknown(f.e));
        if (refused === undefined)
            throw failed[0].e; // still held: the next step() sends these commits again
        hold(p, true);
        const { k, e } = refused;
        const id = layout.shards[k].id;
        throw new ShardsDivergedError(`shard ${id} refused the commit of version ${p.version} after shard 0 took it (${String(e)}); ` +
            "the session is half-applied: restore the shards from checkpoints (DESIGN §3)", { status: e.status, problem: { version: p.version, shard: id }, cause: e });
    }
    hold(p, true);
    const params = assembleParts(layout, p.answers.map((a) => a.params));
    const { params: _, ...first } = p.answers[0];
    return { ...first, params };
}
/** One sharded step (the session's `step()` on a sharded session). */
export async function shardedStep(c, layout, grads, options, worker, hold) {
    const bodies = splitGrads(layout, grads).map((part) => c.gradBody(part, options));
    const key = options.idempotencyKey ?? newKey();
    for (;;) {
        const prepared = await prepareAll(c, layout, bodies);
        const version = prepared[0].version;
        const stale = () => new PreconditionFailedError(`the shards are at version ${version}, not ${options.ifMatch}`, {
            status: 412,
            problem: { current_version: version },
        });
        if (options.ifMatch !== undefined && version !== options.ifMatch)
            throw stale();
        const p = {
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
        if (result !== undefined)
            return result;
        if (options.ifMatch !== undefined)
            throw stale(); // 412 from shard 0: another step took v + 1
    }
}
//# sourceMappingURL=shards.js.map