/** `Session`: one optimizer session on the server. */
import { PATCH_KEYS, newKey, splitOptions } from "./client.js";
import { BarrierTimeoutError, ConflictError } from "./errors.js";
import { sleep } from "./http.js";
import { commitAll, layoutOf, shardedStep } from "./shards.js";
import { setOwn, toTensors } from "./tensors.js";
const num = (v) => (typeof v === "number" ? v : undefined);
const printableAscii = (s) => /^[\x20-\x7e]*$/.test(s);
const ifMatch = (v) => (v === undefined ? {} : { "if-match": `"${v}"` });
export class Session {
    client;
    id;
    worker;
    /** The session's version as of the last response this object received. */
    version;
    /** What the last `step()` returned, besides the parameters. */
    last;
    constructor(client, id, 
    /** Default worker id sent with every step (sync mode needs one per worker). */
    worker) {
        this.client = client;
        this.id = id;
        this.worker = worker;
    }
    path(tail = "") {
        return `/v1/sessions/${encodeURIComponent(this.id)}${tail}`;
    }
    /** @internal The shards of a sharded session (null: not sharded, undefined: not known yet). */
    layout;
    /** @internal A sharded step some of whose shards have not committed yet. */
    pending;
    /**
     * Apply gradients (all parameters or a subset); resolves with the new parameters.
     * On a sharded session (`shards` at create), the step is the two-phase protocol over
     * the shard sessions; a step left half-applied by an error is finished by the next
     * `step()` (which returns that step's result when given the same `idempotencyKey`).
     */
    async step(grads, options = {}) {
        const tensors = toTensors("grads", grads);
        const worker = options.worker ?? this.worker;
        if (this.pending !== undefined && this.layout) {
            // this handle's last step may not be on every shard yet: finish it first
            const p = this.pending;
            const result = await commitAll(this.client, this.layout, p, this.hold);
            if (result !== undefined)
                this.done(result);
            if (result !== undefined && options.idempotencyKey !== undefined && options.idempotencyKey === p.key)
                return result;
        }
        if (this.layout === undefined) {
            try {
                return await this.plainStep(tensors, options, worker);
            }
            catch (e) {
                if (!(e instanceof ConflictError))
                    throw e;
                await this.info(); // a step on a sharded session is 409: learn its shards
                if (!this.layout)
                    throw e;
            }
        }
        if (!this.layout)
            return this.plainStep(tensors, options, worker);
        const result = await shardedStep(this.client, this.layout, tensors, options, worker, this.hold);
        return this.done(result);
    }
    hold = (p, done = false) => {
        if (!done)
            this.pending = p;
        else if (this.pending === p)
            this.pending = undefined;
    };
    done(result) {
        this.version = result.version;
        const { params: _, ...info } = result;
        this.last = info;
        return result;
    }
    async plainStep(tensors, options, worker) {
        const c = this.client;
        const headers = {
            "idempotency-key": options.idempotencyKey ?? newKey(),
            ...ifMatch(options.ifMatch),
        };
        if (options.paramsDtype && options.paramsDtype !== "float32")
            headers["optd-response-dtype"] = options.paramsDtype;
        const fields = {};
        if (c.wire === "safetensors") {
            if (options.baseVersion !== undefined)
                headers["optd-base-version"] = String(options.baseVersion);
            if (options.loss !== undefined)
                headers["optd-loss"] = String(options.loss);
            if (worker !== undefined) {
                if (printableAscii(worker))
                    headers["optd-worker"] = worker;
                else
                    fields.worker = worker; // header values are Latin-1; metadata carries any string
            }
        }
        else {
            if (options.baseVersion !== undefined)
                fields.base_version = options.baseVersion;
            if (worker !== undefined)
                fields.worker = worker;
            if (options.loss !== undefined)
                fields.loss = options.loss;
        }
        const body = c.gradBody(tensors, options, fields);
        const reply = await c.http.send({
            method: "POST",
            path: this.path("/step"),
            query: { wait: options.wait, return: options.onlyUpdated ? "updated" : undefined },
            body,
            contentType: c.tensorType,
            accept: c.tensorType,
            headers,
            waitS: options.wait ?? 30,
        });
        let result;
        if (reply.status === 202) {
            const doc = JSON.parse(new TextDecoder().decode(reply.body));
            const barrier = doc.barrier ?? { version: this.version ?? 0, have: 0, need: 0 };
            result = await this.awaitBarrier(barrier, options.paramsDtype);
        }
        else {
            const { fields: f, tensors: params } = c.parseTensors(reply, "params");
            const etag = Number((reply.headers.get("etag") ?? "").replace(/^W\//, "").replace(/"/g, ""));
            result = {
                params,
                version: num(f.version) ?? etag,
                step: num(f.step),
                lr: num(f.lr),
                gradNorm: num(f.grad_norm),
                staleness: num(f.staleness) ?? null,
                replayed: reply.headers.get("idempotent-replayed")?.toLowerCase() === "true",
            };
        }
        return this.done(result);
    }
    /** A sync step that waited in vain (202): long-poll for the round's version + 1. */
    async awaitBarrier(barrier, paramsDtype) {
        const target = (Number.isSafeInteger(barrier.version) ? barrier.version : (this.version ?? 0)) + 1;
        const deadline = Date.now() + this.client.barrierTimeoutMs;
        for (;;) {
            const { version, params } = await this.params({ minVersion: target, wait: this.client.pollWaitS, paramsDtype });
            if (version >= target)
                return { params, version, replayed: false, barrier };
            if (Date.now() >= deadline) {
                throw new BarrierTimeoutError(`the sync barrier for version ${target - 1} did not complete within ${this.client.barrierTimeoutMs} ms (last status: ${JSON.stringify(barrier)})`, { problem: { barrier, current_version: version } });
            }
            await sleep(this.client.http.policy.backoffMs);
        }
    }
    /** Current parameters; with `minVersion` and `wait`, long-polls (compare `version`). */
    async params(options = {}) {
        const c = this.client;
        const reply = await c.http.send({
            method: "GET",
            path: this.path("/params"),
            query: { names: options.names?.join(","), min_version: options.minVersion, wait: options.wait },
            accept: c.tensorType,
            headers: {
                ...(options.paramsDtype && options.paramsDtype !== "float32"
                    ? { "optd-response-dtype": options.paramsDtype }
                    : {}),
                ...(options.worker && printableAscii(options.worker) ? { "optd-worker": options.worker } : {}),
            },
            waitS: options.wait ?? 0,
        });
        const { fields, tensors } = c.parseTensors(reply, "params");
        this.version = num(fields.version) ?? Number((reply.headers.get("etag") ?? "").replace(/"/g, ""));
        return { version: this.version, params: tensors };
    }
    /** Overwrite some or all parameter values, keeping the optimizer state. */
    async setParams(params, options = {}) {
        const c = this.client;
        const body = c.tensorBody(toTensors("params", params), "params");
        const doc = (await c.json({
            method: "PUT",
            path: this.path("/params"),
            body,
            contentType: c.tensorType,
            headers: ifMatch(options.ifMatch),
        }));
        return (this.version = doc.version);
    }
    /** PATCH: hyperparameters by torch name (`lr`, ...) or `schedule`, `max_grad_norm`,
     * `check_finite`, `max_staleness`, `staleness_lr`, `labels`, `ttl_s`. */
    async update(changes, options = {}) {
        const body = JSON.stringify(splitOptions(changes, PATCH_KEYS));
        const info = (await this.client.json({
            method: "PATCH",
            path: this.path(),
            body,
            contentType: "application/json",
            headers: ifMatch(options.ifMatch),
        }));
        this.version = info.version;
        return info;
    }
    /** The full checkpoint: params, every optimizer slot, step counts and config. */
    async state() {
        const c = this.client;
        const reply = await c.http.send({ method: "GET", path: this.path("/state"), accept: c.tensorType });
        const { fields, tensors } = c.parseTensors(reply, "tensors");
        const meta = (fields.meta ?? fields.optd);
        if (meta === undefined || meta === null || typeof meta !== "object")
            throw new TypeError("malformed checkpoint response: no meta document");
        this.version = num(fields.version);
        return { version: this.version ?? 0, meta, tensors };
    }
    /** Restore a checkpoint into this session (created under this id when absent). */
    async loadState(checkpoint, options = {}) {
        const c = this.client;
        let body;
        if (c.wire === "safetensors")
            body = c.tensorBody(checkpoint.tensors, "tensors", { optd: JSON.stringify(checkpoint.meta) });
        else
            body = c.tensorBody(checkpoint.tensors, "tensors", { version: checkpoint.version, meta: checkpoint.meta });
        const doc = (await c.json({
            method: "PUT",
            path: this.path("/state"),
            body,
            contentType: c.tensorType,
            headers: ifMatch(options.ifMatch),
        }));
        return (this.version = doc.version);
    }
    /** Config, version, step counts, parameter shapes, current lr, last loss. */
    async info() {
        const info = (await this.client.json({ method: "GET", path: this.path() }));
        this.version = info.version;
        this.layout = layoutOf(info);
        return info;
    }
    workerPath(worker) {
        const w = worker ?? this.worker;
        if (!w)
            throw new TypeError("no worker id: pass one or set session.worker");
        return this.path(`/workers/${encodeURIComponent(w)}`);
    }
    /** Join this sync session's workers, or renew the lease (a heartbeat); `worker`
     * defaults to `this.worker`. Answers the version to compute on and the open round. */
    async join(worker) {
        const doc = (await this.client.json({ method: "PUT", path: this.workerPath(worker) }));
        this.version = doc.version;
        return doc;
    }
    /** Leave the session's workers now: rounds stop waiting for this worker. */
    async leave(worker) {
        await this.client.http.send({ method: "DELETE", path: this.workerPath(worker) });
    }
    /** Members (live, last seen, rounds) and the open round's have/need/closes_in_s. */
    async workers() {
        return (await this.client.json({ method: "GET", path: this.path("/workers") }));
    }
    async delete() {
        await this.client.http.send({ method: "DELETE", path: this.path() });
    }
}
/** `{param name: tensor}` of one slot (`param`, `exp_avg`, ...) of a checkpoint. */
export function checkpointSlot(checkpoint, slot) {
    const out = {};
    const prefix = `${slot}/`;
    for (const [k, v] of Object.entries(checkpoint.tensors))
        if (k.startsWith(prefix))
            setOwn(out, k.slice(prefix.length), v);
    return out;
}
//# sourceMappingURL=session.js.map