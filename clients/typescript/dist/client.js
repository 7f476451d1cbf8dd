/** `OptdClient`: configuration, session creation and listing, and the shared wire helpers. */
import { bfloat16Tensors, encodeInt8Block } from "./compress.js";
import { decodeJSONTensors, jsonBody } from "./jsonwire.js";
import { Http } from "./http.js";
import { decodeSafetensors, encodeSafetensors } from "./safetensors.js";
import { Session } from "./session.js";
import { layoutOf } from "./shards.js";
import { toTensors } from "./tensors.js";
export const SAFETENSORS = "application/x-safetensors";
export const JSON_TYPE = "application/json";
export const VERSION = "0.1.0";
const CREATE_KEYS = new Set([
    "dtype",
    "schedule",
    "max_grad_norm",
    "check_finite",
    "groups",
    "mode",
    "workers",
    "min_workers",
    "round_timeout_s",
    "worker_lease_s",
    "max_staleness",
    "staleness_lr",
    "labels",
    "ttl_s",
    "shards",
]);
export const PATCH_KEYS = new Set([
    "min_workers",
    "round_timeout_s",
    "worker_lease_s",
    "schedule",
    "max_grad_norm",
    "check_finite",
    "max_staleness",
    "staleness_lr",
    "labels",
    "ttl_s",
]);
/** Session-level keys stay top-level; every other key (torch names: lr, betas, ...) goes
 * under `hyperparams`, merged with an explicit `hyperparams` object. */
export function splitOptions(options, top) {
    const body = {};
    const hyper = { ...(options.hyperparams ?? {}) };
    for (const [k, v] of Object.entries(options)) {
        if (v === undefined || k === "hyperparams")
            continue;
        if (top.has(k))
            body[k] = v;
        else
            hyper[k] = v;
    }
    if (Object.keys(hyper).length)
        body.hyperparams = hyper;
    return body;
}
/** A UUID v4 from crypto.randomUUID, or getRandomValues where randomUUID is missing
 * (browsers outside secure contexts). */
export function newKey() {
    if (typeof crypto.randomUUID === "function")
        return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
function metaValue(raw) {
    try {
        return JSON.parse(raw);
    }
    catch {
        return raw;
    }
}
export class OptdClient {
    wire;
    barrierTimeoutMs;
    pollWaitS;
    shardWaitMs;
    /** @internal */
    http;
    constructor(options = {}) {
        const wire = options.wire ?? "safetensors";
        if (wire !== "safetensors" && wire !== "json")
            throw new TypeError(`wire must be "safetensors" or "json", got ${String(wire)}`);
        const retries = options.retries ?? 5;
        if (!(retries >= 0))
            throw new RangeError("retries must be >= 0");
        this.wire = wire;
        this.barrierTimeoutMs = options.barrierTimeoutMs ?? 600_000;
        this.pollWaitS = options.pollWaitS ?? 30;
        this.shardWaitMs = options.shardWaitMs ?? 10_000;
        const headers = { ...(options.headers ?? {}) };
        if (options.apiKey)
            headers.authorization = `Bearer ${options.apiKey}`;
        const policy = {
            retries,
            backoffMs: options.backoffMs ?? 200,
            maxBackoffMs: options.maxBackoffMs ?? 10_000,
            maxRetryAfterMs: 120_000,
        };
        const baseUrl = (options.baseUrl ?? "http://127.0.0.1:8000").replace(/\/+$/, "");
        this.http = new Http(baseUrl, headers, policy, options.timeoutMs ?? 120_000, options.fetch ?? globalThis.fetch.bind(globalThis));
    }
    get baseUrl() {
        return this.http.baseUrl;
    }
    /** @internal The media type of tensor bodies. */
    get tensorType() {
        return this.wire === "safetensors" ? SAFETENSORS : JSON_TYPE;
    }
    /** Create a session with initial `params`; other keys are session options or hyperparameters. */
    async createSession(request) {
        const { optimizer, params, ...options } = request;
        const config = { optimizer, ...splitOptions(options, CREATE_KEYS) };
        const tensors = toTensors("params", params);
        const body = this.wire === "safetensors"
            ? encodeSafetensors(tensors, { config: JSON.stringify(config) })
            : jsonBody(config, "params", tensors);
        const headers = { "idempotency-key": newKey() };
        const info = (await this.json({
            method: "POST",
            path: "/v1/sessions",
            body,
            contentType: this.tensorType,
            headers,
        }));
        const session = new Session(this, info.id);
        session.version = info.version;
        session.layout = layoutOf(info);
        return session;
    }
    /** A handle on an existing session (no request is made). */
    session(id, options = {}) {
        return new Session(this, id, options.worker);
    }
    /** One page of sessions, optionally only those carrying all of `labels`. */
    async listPage(options = {}) {
        const query = new URLSearchParams({ limit: String(options.limit ?? 100) });
        if (options.cursor)
            query.set("cursor", options.cursor);
        for (const [k, v] of Object.entries(options.labels ?? {}))
            query.append("label", `${k}=${v}`);
        const doc = (await this.json({ method: "GET", path: `/v1/sessions?${query}` }));
        return { sessions: doc.sessions ?? [], nextCursor: doc.next_cursor ?? null };
    }
    /** Every session, page by page. */
    async *listSessions(labels, pageSize = 100) {
        let cursor;
        do {
            const page = await this.listPage({
                ...(labels ? { labels } : {}),
                limit: pageSize,
                ...(cursor ? { cursor } : {}),
            });
            yield* page.sessions;
            cursor = page.nextCursor ?? undefined;
        } while (cursor);
    }
    /** `GET /v1/optimizers`: every optimizer with its hyperparameter schema and defaults. */
    async optimizers() {
        return (await this.json({ method: "GET", path: "/v1/optimizers" }));
    }
    /** @internal */
    async json(req) {
        const reply = await this.http.send(req);
        return reply.body.length ? JSON.parse(new TextDecoder().decode(reply.body)) : null;
    }
    /** @internal A tensor body in the client's wire format. */
    tensorBody(tensors, key, fields = {}) {
        if (this.wire === "json")
            return jsonBody(fields, key, tensors);
        const meta = {};
        for (const [k, v] of Object.entries(fields))
            meta[k] = typeof v === "string" ? v : JSON.stringify(v);
        return encodeSafetensors(tensors, Object.keys(meta).length ? meta : undefined);
    }
    /** @internal A gradient body: `tensors` as `options.gradDtype` says, with `fields`. */
    gradBody(tensors, options, fields = {}) {
        if (options.gradDtype === "int8") {
            if (this.wire !== "safetensors")
                throw new TypeError("int8 gradients travel as safetensors only (wire: 'safetensors')");
            const meta = {};
            for (const [k, v] of Object.entries(fields))
                meta[k] = typeof v === "string" ? v : JSON.stringify(v);
            return encodeInt8Block(tensors, meta, options.block ?? 256);
        }
        if (options.gradDtype === "bfloat16")
            tensors = bfloat16Tensors(tensors);
        else if (options.gradDtype !== undefined && options.gradDtype !== "float32")
            throw new TypeError(`gradDtype must be float32, bfloat16 or int8, got ${String(options.gradDtype)}`);
        return this.tensorBody(tensors, "grads", fields);
    }
    /** @internal Scalar fields and tensors of a tensor response, whatever its format. */
    parseTensors(reply, key) {
        const type = (reply.headers.get("content-type") ?? "").split(";")[0].trim().toLowerCase();
        if (type === SAFETENSORS || type === "application/octet-stream") {
            const { tensors, metadata } = decodeSafetensors(reply.body);
            const fields = {};
            for (const [k, v] of Object.entries(metadata))
                fields[k] = metaValue(v);
            return { fields, tensors };
        }
        const doc = JSON.parse(new TextDecoder().decode(reply.body));
        const { [key]: raw, ...fields } = doc;
        return { fields, tensors: decodeJSONTensors(raw) };
    }
}
//# sourceMappingURL=client.js.map