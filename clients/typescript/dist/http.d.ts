/** Sending one request: headers, timeouts, and bounded retries with backoff. */
export interface RetryPolicy {
    /** Retries after the first attempt (default 5). */
    retries: number;
    /** Base of the exponential backoff: attempt k waits uniform(0, min(max, base * 2^k)). */
    backoffMs: number;
    maxBackoffMs: number;
    /** Cap on a server's `Retry-After`. */
    maxRetryAfterMs: number;
}
export interface Request {
    method: string;
    path: string;
    query?: Record<string, string | number | undefined>;
    body?: Uint8Array | string;
    contentType?: string;
    accept?: string;
    headers?: Record<string, string>;
    /** Seconds the server may hold the request (long-polls); added to the timeout. */
    waitS?: number;
}
export interface Reply {
    status: number;
    headers: Headers;
    body: Uint8Array;
}
/** Redirects to owners (and fail-overs from dead ones) one request may take. */
export declare const MAX_REDIRECTS = 5;
/**
 * Milliseconds to wait before retry `attempt + 1`, or undefined for no retry.
 * Retried: network errors and timeouts (every request is idempotent or carries an
 * Idempotency-Key), 503, 429, and 409 `conflict` when the same request is still in
 * flight or the server asks to retry later; `Retry-After` is honoured.
 */
export declare function retryDelay(policy: RetryPolicy, attempt: number, result: Reply | Error, random?: () => number): number | undefined;
export declare const sleep: (ms: number) => Promise<void>;
/**
 * Sends requests. Session owners: an API process answers a request for a session another
 * process owns with 307 to it (`Optd-Owner`); `send` follows it itself (fetch's own
 * following drops `Authorization` across origins), remembers the owner per session and
 * sends that session's later requests straight there. A network error on the way to a
 * remembered owner forgets it and re-sends to the base URL with `Optd-Owner-Unreachable`.
 */
export declare class Http {
    readonly baseUrl: string;
    readonly headers: Record<string, string>;
    readonly policy: RetryPolicy;
    readonly timeoutMs: number;
    private readonly fetchImpl;
    private readonly owners;
    constructor(baseUrl: string, headers: Record<string, string>, policy: RetryPolicy, timeoutMs: number, fetchImpl: typeof fetch);
    url(req: Request, base?: string): string;
    /** The owner process this client sends a session's requests to, when it knows one. */
    owner(sessionId: string): string | undefined;
    /** Send until success, a final failure, or the retries run out; errors become OptdErrors. */
    send(req: Request): Promise<Reply>;
}
