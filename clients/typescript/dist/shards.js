/**
 * Sharded sessions (the server's DESIGN §3): a session created with `shards: K` keeps its
 * parameters in K shard sessions `{id}-s{k}`. A step splits the gradient over them,
 * prepares every shard, commits shard 0 and then the others, and assembles the result.
 */
import { newKey } from "./client.js";
import { ConflictError, InvalidTensorError, OptdError, PreconditionFailedError } from "./errors.js";
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
const shardPath = (shard, tail) => `/v1/sessions/${encodeURIComponent(shard.id)}${tail}`;
async function prepare(c, shard, part, options) {
    return (await c.json({
        method: "POST",
        path: shardPath(shard, "/prepare"),
        body: c.gradBody(part, options),
        contentType: c.tensorType,
        accept: "application/json",
    }));
}
/** Prepare every shard, again after a short wait while their versions differ. */
async function prepareAll(c, layout, parts, options) {
    const deadline = Date.now() + c.shardWaitMs;
    for (let i = 0;; i++) {
        const got = await Promise.all(layout.shards.map((s, k) => prepare(c, s, parts[k], options)));
        const versions = got.map((p) => p.version);
        if (versions.every((v) => v === versions[0]))
            return got;
        if (Date.now() >= deadline) {
            const named = layout.shards.map((s, k) => `${s.id} at ${versions[k]}`).join(", ");
            throw new ConflictError(`the shards' versions differ for ${c.shardWaitMs} ms (${named}): a step is half-applied ` +
                "(its client died between commits?); restore the shards from checkpoints", { problem: { versions } });
        }
        await sleep(Math.min(1000, 20 * 2 ** i));
    }
}
/** Commit shard k of `p`; a `prepare-expired` answer prepares it again (same sumsq and If-Match). */
async function commit(c, layout, p, k) {
    const shard = layout.shards[k];
    const o = p.options;
    for (;;) {
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
            return (p.answers[k] = {
                params: tensors,
                version: num(f.version) ?? p.version + 1,
                step: num(f.step),
                lr: num(f.lr),
                gradNorm: num(f.grad_norm),
                staleness: null,
                replayed: reply.headers.get("idempotent-replayed")?.toLowerCase() === "true",
            });
        }
        catch (e) {
            if (!(e instanceof OptdError && e.type === PREPARE_EXPIRED))
                throw e;
            p.tokens[k] = (await prepare(c, shard, p.parts[k], o)).prepared;
            p.keys[k] = newKey();
        }
    }
}
/** Commit the shards of `p` not yet committed: shard 0 first, then the others in parallel. */
export async function finishCommits(c, layout, p) {
    if (p.answers[0] === undefined)
        await commit(c, layout, p, 0);
    await Promise.all(layout.shards.map((_, k) => (k === 0 || p.answers[k] ? undefined : commit(c, layout, p, k))));
    const params = assembleParts(layout, p.answers.map((a) => a.params));
    const { params: _, ...first } = p.answers[0];
    return { ...first, params };
}
/**
 * One sharded step. `hold(p)` keeps the step on the session once shard 0 may have
 * applied it, `hold(p, true)` forgets it once every shard has.
 */
export async function shardedStep(c, layout, grads, options, worker, hold) {
    const parts = splitGrads(layout, grads);
    const key = options.idempotencyKey ?? newKey();
    for (;;) {
        const prepared = await prepareAll(c, layout, parts, options);
        const version = prepared[0].version;
        if (options.ifMatch !== undefined && version !== options.ifMatch)
            throw new PreconditionFailedError(`the shards are at version ${version}, not ${options.ifMatch}`, {
                status: 412,
                problem: { current_version: version },
            });
        const p = {
            key,
            version,
            sumsq: prepared.flatMap((x) => x.sumsq),
            parts,
            tokens: prepared.map((x) => x.prepared),
            keys: prepared.map(() => newKey()),
            answers: [],
            options,
            worker,
        };
        try {
            await commit(c, layout, p, 0);
        }
        catch (e) {
            if (e instanceof PreconditionFailedError && options.ifMatch === undefined)
                continue; // another step won v + 1
            if (!(e instanceof OptdError) || e.status === undefined)
                hold(p); // no answer: shard 0 may have applied it
            throw e;
        }
        hold(p);
        const result = await finishCommits(c, layout, p);
        hold(p, true);
        return result;
    }
}
//# sourceMappingURL=shards.js.map