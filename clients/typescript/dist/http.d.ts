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
/**
 * Milliseconds to wait before retry `attempt + 1`, or undefined for no retry.
 * Retried: network errors and timeouts (every request is idempotent or carries an
 * Idempotency-Key), 503, 429, and 409 `conflict` when the same request is still in
 * flight or the server asks to retry later; `Retry-After` is honoured.
 */
export declare function retryDelay(policy: RetryPolicy, attempt: number, result: Reply | Error, random?: () => number): number | undefined;
export declare const sleep: (ms: number) => Promise<void>;
export declare class Http {
    readonly baseUrl: string;
    readonly headers: Record<string, string>;
    readonly policy: RetryPolicy;
    readonly timeoutMs: number;
    private readonly fetchImpl;
    constructor(baseUrl: string, headers: Record<string, string>, policy: RetryPolicy, timeoutMs: number, fetchImpl: typeof fetch);
    url(req: Request): string;
    /** Send until success, a final failure, or the retries run out; errors become OptdErrors. */
    send(req: Request): Promise<Reply>;
}
