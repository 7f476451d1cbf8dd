/** Sending one request: headers, timeouts, and bounded retries with backoff. */
import { TransportError, errorFromResponse, parseProblem, parseRetryAfter } from "./errors.js";
const IN_FLIGHT = /in[ -]?flight|in progress|still running|being processed/i;
/**
 * Milliseconds to wait before retry `attempt + 1`, or undefined for no retry.
 * Retried: network errors and timeouts (every request is idempotent or carries an
 * Idempotency-Key), 503, 429, and 409 `conflict` when the same request is still in
 * flight or the server asks to retry later; `Retry-After` is honoured.
 */
export function retryDelay(policy, attempt, result, random = Math.random) {
    if (attempt >= policy.retries)
        return undefined;
    const jitter = () => random() * Math.min(policy.maxBackoffMs, policy.backoffMs * 2 ** attempt);
    if (result instanceof Error)
        return jitter();
    const { status } = result;
    if (status !== 409 && status !== 429 && status !== 503)
        return undefined;
    const problem = parseProblem(result.body);
    const retryAfter = parseRetryAfter(result.headers.get("retry-after"), problem);
    if (status === 409) {
        if (String(problem.type ?? "")
            .split(":")
            .pop() !== "conflict")
            return undefined; // stale-gradient
        const inFlight = problem.in_flight === true || IN_FLIGHT.test(String(problem.detail ?? ""));
        if (!inFlight && retryAfter === undefined)
            return undefined; // e.g. base_version ahead
    }
    if (retryAfter !== undefined)
        return Math.min(retryAfter * 1000, policy.maxRetryAfterMs) + random() * policy.backoffMs;
    return jitter();
}
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
export class Http {
    baseUrl;
    headers;
    policy;
    timeoutMs;
    fetchImpl;
    constructor(baseUrl, headers, policy, timeoutMs, fetchImpl) {
        this.baseUrl = baseUrl;
        this.headers = headers;
        this.policy = policy;
        this.timeoutMs = timeoutMs;
        this.fetchImpl = fetchImpl;
    }
    url(req) {
        const url = new URL(this.baseUrl + req.path);
        for (const [k, v] of Object.entries(req.query ?? {}))
            if (v !== undefined)
                url.searchParams.set(k, String(v));
        return url.toString();
    }
    /** Send until success, a final failure, or the retries run out; errors become OptdErrors. */
    async send(req) {
        const headers = {
            ...this.headers,
            accept: req.accept ?? "application/json",
            ...req.headers,
        };
        if (req.contentType !== undefined)
            headers["content-type"] = req.contentType;
        const url = this.url(req);
        for (let attempt = 0;; attempt++) {
            let result;
            try {
                const signal = AbortSignal.timeout(this.timeoutMs + (req.waitS ?? 0) * 1000);
                const init = { method: req.method, headers, signal };
                if (req.body !== undefined)
                    init.body = req.body;
                const res = await this.fetchImpl(url, init);
                result = { status: res.status, headers: res.headers, body: new Uint8Array(await res.arrayBuffer()) };
            }
            catch (e) {
                result = e instanceof Error ? e : new Error(String(e));
            }
            const delay = retryDelay(this.policy, attempt, result);
            if (delay === undefined) {
                if (result instanceof Error) {
                    const tries = `${attempt + 1} attempt${attempt ? "s" : ""}`;
                    throw new TransportError(`${req.method} ${req.path}: ${result.name}: ${result.message} (after ${tries})`, {
                        cause: result,
                    });
                }
                if (result.status >= 400)
                    throw errorFromResponse(result.status, result.headers, result.body);
                return result;
            }
            await sleep(delay);
        }
    }
}
//# sourceMappingURL=http.js.map