/** Sending one request: headers, timeouts, and bounded retries with backoff. */

import { RedirectLoopError, TransportError, errorFromResponse, parseProblem, parseRetryAfter } from "./errors.js";

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

/** The session id in a path, for the owner cache (session owners: the server's DESIGN §4). */
const SESSION = /\/v1\/sessions\/([^/?]+)/;
/** Redirects to owners (and fail-overs from dead ones) one request may take. */
export const MAX_REDIRECTS = 5;

const IN_FLIGHT = /in[ -]?flight|in progress|still running|being processed/i;

/**
 * Milliseconds to wait before retry `attempt + 1`, or undefined for no retry.
 * Retried: network errors and timeouts (every request is idempotent or carries an
 * Idempotency-Key), 503, 429, and 409 `conflict` when the same request is still in
 * flight or the server asks to retry later; `Retry-After` is honoured.
 */
export function retryDelay(
  policy: RetryPolicy,
  attempt: number,
  result: Reply | Error,
  random = Math.random,
): number | undefined {
  if (attempt >= policy.retries) return undefined;
  const jitter = () => random() * Math.min(policy.maxBackoffMs, policy.backoffMs * 2 ** attempt);
  if (result instanceof Error) return jitter();
  const { status } = result;
  if (status !== 409 && status !== 429 && status !== 503) return undefined;
  const problem = parseProblem(result.body);
  const retryAfter = parseRetryAfter(result.headers.get("retry-after"), problem);
  if (status === 409) {
    if (
      String(problem.type ?? "")
        .split(":")
        .pop() !== "conflict"
    )
      return undefined; // stale-gradient
    const inFlight = problem.in_flight === true || IN_FLIGHT.test(String(problem.detail ?? ""));
    if (!inFlight && retryAfter === undefined) return undefined; // e.g. base_version ahead
  }
  if (retryAfter !== undefined)
    return Math.min(retryAfter * 1000, policy.maxRetryAfterMs) + random() * policy.backoffMs;
  return jitter();
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Sends requests. Session owners: an API process answers a request for a session another
 * process owns with 307 to it (`Optd-Owner`); `send` follows it itself (fetch's own
 * following drops `Authorization` across origins), remembers the owner per session and
 * sends that session's later requests straight there. A network error on the way to a
 * remembered owner forgets it and re-sends to the base URL with `Optd-Owner-Unreachable`.
 */
export class Http {
  private readonly owners = new Map<string, string>();

  constructor(
    readonly baseUrl: string,
    readonly headers: Record<string, string>,
    readonly policy: RetryPolicy,
    readonly timeoutMs: number,
    private readonly fetchImpl: typeof fetch,
  ) {}

  url(req: Request, base = this.baseUrl): string {
    const url = new URL(base + req.path);
    for (const [k, v] of Object.entries(req.query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    return url.toString();
  }

  /** The owner process this client sends a session's requests to, when it knows one. */
  owner(sessionId: string): string | undefined {
    return this.owners.get(encodeURIComponent(sessionId));
  }

  /** Send until success, a final failure, or the retries run out; errors become OptdErrors. */
  async send(req: Request): Promise<Reply> {
    const headers: Record<string, string> = {
      ...this.headers,
      accept: req.accept ?? "application/json",
      ...req.headers,
    };
    if (req.contentType !== undefined) headers["content-type"] = req.contentType;
    const sid = SESSION.exec(req.path)?.[1];
    let owner = sid === undefined ? undefined : this.owners.get(sid);
    let url = this.url(req, owner ?? this.baseUrl);
    let redirects = 0;
    let follow: RequestRedirect = "manual";
    for (let attempt = 0; ; attempt++) {
      let result: Reply | Error;
      try {
        const signal = AbortSignal.timeout(this.timeoutMs + (req.waitS ?? 0) * 1000);
        const init: RequestInit = { method: req.method, headers, signal, redirect: follow };
        if (req.body !== undefined) init.body = req.body as BodyInit;
        const res = await this.fetchImpl(url, init);
        if (res.type === "opaqueredirect") {
          follow = "follow"; // a browser hides manual redirects: let fetch follow them
          attempt--;
          continue;
        }
        result = { status: res.status, headers: res.headers, body: new Uint8Array(await res.arrayBuffer()) };
      } catch (e) {
        result = e instanceof Error ? e : new Error(String(e));
      }
      const location = result instanceof Error ? null : result.headers.get("location");
      const moved = !(result instanceof Error) && (result.status === 307 || result.status === 308) && location;
      const ownerGone =
        result instanceof Error && result.name !== "TimeoutError" && owner !== undefined && url.startsWith(owner + "/");
      if (moved || ownerGone) {
        if (++redirects > MAX_REDIRECTS)
          throw new RedirectLoopError(
            `${req.method} ${req.path}: more than ${MAX_REDIRECTS} redirects to session owners (last: ${url}); ` +
              "do the API processes advertise reachable URLs (OPTD_ADVERTISE_URL)?",
          );
        if (moved) {
          url = new URL(location as string, url).toString();
          const named = (result as Reply).headers.get("optd-owner");
          if (named && sid !== undefined) this.owners.set(sid, (owner = named.replace(/\/+$/, "")));
        } else if (owner !== undefined && sid !== undefined) {
          if (this.owners.get(sid) === owner) this.owners.delete(sid);
          url = this.baseUrl + url.slice(owner.length);
          headers["optd-owner-unreachable"] = owner;
          owner = undefined;
        }
        attempt--;
        continue;
      }
      const delay = retryDelay(this.policy, attempt, result);
      if (delay === undefined) {
        if (result instanceof Error) {
          const tries = `${attempt + 1} attempt${attempt ? "s" : ""}`;
          throw new TransportError(`${req.method} ${req.path}: ${result.name}: ${result.message} (after ${tries})`, {
            cause: result,
          });
        }
        if (result.status >= 400) throw errorFromResponse(result.status, result.headers, result.body);
        return result;
      }
      await sleep(delay);
    }
  }
}
