/**
 * One error class per optd problem slug, all extending `OptdError`. The server
 * answers every failure as RFC 9457 `application/problem+json` with a `type` of
 * `urn:optd:problem:<slug>`; the slug, not the status, picks the class, because two
 * problems share 409 and three share 422.
 */

export const PROBLEM_PREFIX = "urn:optd:problem:";

export type Problem = Record<string, unknown> & {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
};

export interface OptdErrorInit {
  status?: number | undefined;
  problem?: Problem | undefined;
  retryAfter?: number | undefined;
  cause?: unknown;
}

export class OptdError extends Error {
  /** The slug of this class; instances keep the server's slug even when it is unknown. */
  static readonly slug: string = "";
  readonly status: number | undefined;
  readonly problem: Problem;
  readonly type: string;
  readonly slug: string;
  readonly title: string;
  readonly detail: string;
  /** Seconds, from `Retry-After` or the problem's `retry_after`. */
  readonly retryAfter: number | undefined;

  constructor(message: string, init: OptdErrorInit = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = new.target.name;
    this.status = init.status;
    this.problem = init.problem ?? {};
    this.type = String(this.problem.type ?? "");
    this.title = String(this.problem.title ?? "");
    this.detail = String(this.problem.detail ?? message);
    this.retryAfter = init.retryAfter;
    const own = (new.target as unknown as typeof OptdError).slug;
    this.slug = this.type.startsWith(PROBLEM_PREFIX) ? this.type.slice(PROBLEM_PREFIX.length) : own;
  }

  /** The session's version when the server names it (stale-gradient, conflict, 412). */
  get currentVersion(): number | undefined {
    const v = this.problem.current_version;
    return Number.isSafeInteger(v) ? (v as number) : undefined;
  }
}

function kind<S extends string>(slug: S) {
  return class extends OptdError {
    static override readonly slug: string = slug;
  };
}

export class InvalidBodyError extends kind("invalid-body") {}
export class UnauthorizedError extends kind("unauthorized") {}
export class NotFoundError extends kind("not-found") {}
export class NotAcceptableError extends kind("not-acceptable") {}
/** The gradient's base version is more than `max_staleness` behind `currentVersion`. */
export class StaleGradientError extends kind("stale-gradient") {}
export class ConflictError extends kind("conflict") {}
export class PreconditionFailedError extends kind("precondition-failed") {}
export class TooLargeError extends kind("too-large") {}
export class UnsupportedMediaTypeError extends kind("unsupported-media-type") {}
export class InvalidTensorError extends kind("invalid-tensor") {}
export class InvalidConfigError extends kind("invalid-config") {}
export class IdempotencyMismatchError extends kind("idempotency-mismatch") {}
export class PreconditionRequiredError extends kind("precondition-required") {}
export class RateLimitedError extends kind("rate-limited") {}
export class StoreUnavailableError extends kind("store-unavailable") {}
/** No HTTP answer (connection refused or reset, timeout) even after the retries. */
export class TransportError extends kind("transport") {}
/** Too many 307s to session owners (or owner fail-overs) for one request. */
export class RedirectLoopError extends kind("redirect-loop") {}
/** A sharded session's shards stayed at different versions: another client's step was
 * between its commits for longer than the client waits (`shardWaitMs`), or it died there,
 * or a shard refused a commit after shard 0 took it. The session is half-applied:
 * restore the shards from checkpoints (DESIGN §3). `problem.versions` / `problem.shard`. */
export class ShardsDivergedError extends kind("shards-diverged") {}
/** A sync-mode step's barrier did not complete within the client's `barrierTimeoutMs`. */
export class BarrierTimeoutError extends kind("barrier-timeout") {}

export type OptdErrorClass = new (message: string, init?: OptdErrorInit) => OptdError;

export const PROBLEM_CLASSES: Record<string, OptdErrorClass> = Object.fromEntries(
  [
    InvalidBodyError,
    UnauthorizedError,
    NotFoundError,
    NotAcceptableError,
    StaleGradientError,
    ConflictError,
    PreconditionFailedError,
    TooLargeError,
    UnsupportedMediaTypeError,
    InvalidTensorError,
    InvalidConfigError,
    IdempotencyMismatchError,
    PreconditionRequiredError,
    RateLimitedError,
    StoreUnavailableError,
  ].map((cls) => [cls.slug, cls]),
);

/** The problem document of an error body, or {} when it is not a JSON object. */
export function parseProblem(body: Uint8Array | string): Problem {
  try {
    const text = typeof body === "string" ? body : new TextDecoder().decode(body);
    const doc: unknown = JSON.parse(text);
    return doc !== null && typeof doc === "object" && !Array.isArray(doc) ? (doc as Problem) : {};
  } catch {
    return {};
  }
}

/** Seconds from `Retry-After` (delta-seconds) or the problem's `retry_after`. */
export function parseRetryAfter(header: string | null | undefined, problem: Problem): number | undefined {
  for (const v of [header, problem.retry_after]) {
    if (v === null || v === undefined || typeof v === "boolean" || v === "") continue;
    const s = Number(v);
    if (Number.isFinite(s) && s >= 0) return s;
  }
  return undefined;
}

/** Map an HTTP error response onto the class of its problem slug. */
export function errorFromResponse(status: number, headers: Headers, body: Uint8Array): OptdError {
  const problem = parseProblem(body);
  const type = String(problem.type ?? "");
  const slug = type.startsWith(PROBLEM_PREFIX) ? type.slice(PROBLEM_PREFIX.length) : "";
  const Cls = PROBLEM_CLASSES[slug] ?? OptdError;
  let detail = problem.detail;
  if (detail === undefined) detail = new TextDecoder().decode(body.subarray(0, 200)).trim() || "no details";
  const title = problem.title || `HTTP ${status}`;
  const retryAfter = parseRetryAfter(headers.get("retry-after"), problem);
  return new Cls(`${status} ${title}: ${detail}`, { status, problem, retryAfter });
}
