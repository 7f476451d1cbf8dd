/**
 * One error class per optd problem slug, all extending `OptdError`. The server
 * answers every failure as RFC 9457 `application/problem+json` with a `type` of
 * `urn:optd:problem:<slug>`; the slug, not the status, picks the class, because two
 * problems share 409 and three share 422.
 */
export declare const PROBLEM_PREFIX = "urn:optd:problem:";
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
export declare class OptdError extends Error {
    /** The slug of this class; instances keep the server's slug even when it is unknown. */
    static readonly slug: string;
    readonly status: number | undefined;
    readonly problem: Problem;
    readonly type: string;
    readonly slug: string;
    readonly title: string;
    readonly detail: string;
    /** Seconds, from `Retry-After` or the problem's `retry_after`. */
    readonly retryAfter: number | undefined;
    constructor(message: string, init?: OptdErrorInit);
    /** The session's version when the server names it (stale-gradient, conflict, 412). */
    get currentVersion(): number | undefined;
}
declare const InvalidBodyError_base: {
    new (message: string, init?: OptdErrorInit): {
        readonly status: number | undefined;
        readonly problem: Problem;
        readonly type: string;
        readonly slug: string;
        readonly title: string;
        readonly detail: string;
        /** Seconds, from `Retry-After` or the problem's `retry_after`. */
        readonly retryAfter: number | undefined;
        /** The session's version when the server names it (stale-gradient, conflict, 412). */
        get currentVersion(): number | undefined;
        name: string;
        message: string;
        stack?: string;
        cause?: unknown;
    };
    readonly slug: string;
};
export declare class InvalidBodyError extends InvalidBodyError_base {
}
declare const UnauthorizedError_base: {
    new (message: string, init?: OptdErrorInit): {
        readonly status: number | undefined;
        readonly problem: Problem;
        readonly type: string;
        readonly slug: string;
        readonly title: string;
        readonly detail: string;
        /** Seconds, from `Retry-After` or the problem's `retry_after`. */
        readonly retryAfter: number | undefined;
        /** The session's version when the server names it (stale-gradient, conflict, 412). */
        get currentVersion(): number | undefined;
        name: string;
        message: string;
        stack?: string;
        cause?: unknown;
    };
    readonly slug: string;
};
export declare class UnauthorizedError extends UnauthorizedError_base {
}
declare const NotFoundError_base: {
    new (message: string, init?: OptdErrorInit): {
        readonly status: number | undefined;
        readonly problem: Problem;
        readonly type: string;
        readonly slug: string;
        readonly title: string;
        readonly detail: string;
        /** Seconds, from `Retry-After` or the problem's `retry_after`. */
        readonly retryAfter: number | undefined;
        /** The session's version when the server names it (stale-gradient, conflict, 412). */
        get currentVersion(): number | undefined;
        name: string;
        message: string;
        stack?: string;
        cause?: unknown;
    };
    readonly slug: string;
};
export declare class NotFoundError extends NotFoundError_base {
}
declare const NotAcceptableError_base: {
    new (message: string, init?: OptdErrorInit): {
        readonly status: number | undefined;
        readonly problem: Problem;
        readonly type: string;
        readonly slug: string;
        readonly title: string;
        readonly detail: string;
        /** Seconds, from `Retry-After` or the problem's `retry_after`. */
        readonly retryAfter: number | undefined;
        /** The session's version when the server names it (stale-gradient, conflict, 412). */
        get currentVersion(): number | undefined;
        name: string;
        message: string;
        stack?: string;
        cause?: unknown;
    };
    readonly slug: string;
};
export declare class NotAcceptableError extends NotAcceptableError_base {
}
declare const StaleGradientError_base: {
    new (message: string, init?: OptdErrorInit): {
        readonly status: number | undefined;
        readonly problem: Problem;
        readonly type: string;
        readonly slug: string;
        readonly title: string;
        readonly detail: string;
        /** Seconds, from `Retry-After` or the problem's `retry_after`. */
        readonly retryAfter: number | undefined;
        /** The session's version when the server names it (stale-gradient, conflict, 412). */
        get currentVersion(): number | undefined;
        name: string;
        message: string;
        stack?: string;
        cause?: unknown;
    };
    readonly slug: string;
};
/** The gradient's base version is more than `max_staleness` behind `currentVersion`. */
export declare class StaleGradientError extends StaleGradientError_base {
}
declare const ConflictError_base: {
    new (message: string, init?: OptdErrorInit): {
        readonly status: number | undefined;
        readonly problem: Problem;
        readonly type: string;
        readonly slug: string;
        readonly title: string;
        readonly detail: string;
        /** Seconds, from `Retry-After` or the problem's `retry_after`. */
        readonly retryAfter: number | undefined;
        /** The session's version when the server names it (stale-gradient, conflict, 412). */
        get currentVersion(): number | undefined;
        name: string;
        message: string;
        stack?: string;
        cause?: unknown;
    };
    readonly slug: string;
};
export declare class ConflictError extends ConflictError_base {
}
declare const PreconditionFailedError_base: {
    new (message: string, init?: OptdErrorInit): {
        readonly status: number | undefined;
        readonly problem: Problem;
        readonly type: string;
        readonly slug: string;
        readonly title: string;
        readonly detail: string;
        /** Seconds, from `Retry-After` or the problem's `retry_after`. */
        readonly retryAfter: number | undefined;
        /** The session's version when the server names it (stale-gradient, conflict, 412). */
        get currentVersion(): number | undefined;
        name: string;
        message: string;
        stack?: string;
        cause?: unknown;
    };
    readonly slug: string;
};
export declare class PreconditionFailedError extends PreconditionFailedError_base {
}
declare const TooLargeError_base: {
    new (message: string, init?: OptdErrorInit): {
        readonly status: number | undefined;
        readonly problem: Problem;
        readonly type: string;
        readonly slug: string;
        readonly title: string;
        readonly detail: string;
        /** Seconds, from `Retry-After` or the problem's `retry_after`. */
        readonly retryAfter: number | undefined;
        /** The session's version when the server names it (stale-gradient, conflict, 412). */
        get currentVersion(): number | undefined;
        name: string;
        message: string;
        stack?: string;
        cause?: unknown;
    };
    readonly slug: string;
};
export declare class TooLargeError extends TooLargeError_base {
}
declare const UnsupportedMediaTypeError_base: {
    new (message: string, init?: OptdErrorInit): {
        readonly status: number | undefined;
        readonly problem: Problem;
        readonly type: string;
        readonly slug: string;
        readonly title: string;
        readonly detail: string;
        /** Seconds, from `Retry-After` or the problem's `retry_after`. */
        readonly retryAfter: number | undefined;
        /** The session's version when the server names it (stale-gradient, conflict, 412). */
        get currentVersion(): number | undefined;
        name: string;
        message: string;
        stack?: string;
        cause?: unknown;
    };
    readonly slug: string;
};
export declare class UnsupportedMediaTypeError extends UnsupportedMediaTypeError_base {
}
declare const InvalidTensorError_base: {
    new (message: string, init?: OptdErrorInit): {
        readonly status: number | undefined;
        readonly problem: Problem;
        readonly type: string;
        readonly slug: string;
        readonly title: string;
        readonly detail: string;
        /** Seconds, from `Retry-After` or the problem's `retry_after`. */
        readonly retryAfter: number | undefined;
        /** The session's version when the server names it (stale-gradient, conflict, 412). */
        get currentVersion(): number | undefined;
        name: string;
        message: string;
        stack?: string;
        cause?: unknown;
    };
    readonly slug: string;
};
export declare class InvalidTensorError extends InvalidTensorError_base {
}
declare const InvalidConfigError_base: {
    new (message: string, init?: OptdErrorInit): {
        readonly status: number | undefined;
        readonly problem: Problem;
        readonly type: string;
        readonly slug: string;
        readonly title: string;
        readonly detail: string;
        /** Seconds, from `Retry-After` or the problem's `retry_after`. */
        readonly retryAfter: number | undefined;
        /** The session's version when the server names it (stale-gradient, conflict, 412). */
        get currentVersion(): number | undefined;
        name: string;
        message: string;
        stack?: string;
        cause?: unknown;
    };
    readonly slug: string;
};
export declare class InvalidConfigError extends InvalidConfigError_base {
}
declare const IdempotencyMismatchError_base: {
    new (message: string, init?: OptdErrorInit): {
        readonly status: number | undefined;
        readonly problem: Problem;
        readonly type: string;
        readonly slug: string;
        readonly title: string;
        readonly detail: string;
        /** Seconds, from `Retry-After` or the problem's `retry_after`. */
        readonly retryAfter: number | undefined;
        /** The session's version when the server names it (stale-gradient, conflict, 412). */
        get currentVersion(): number | undefined;
        name: string;
        message: string;
        stack?: string;
        cause?: unknown;
    };
    readonly slug: string;
};
export declare class IdempotencyMismatchError extends IdempotencyMismatchError_base {
}
declare const PreconditionRequiredError_base: {
    new (message: string, init?: OptdErrorInit): {
        readonly status: number | undefined;
        readonly problem: Problem;
        readonly type: string;
        readonly slug: string;
        readonly title: string;
        readonly detail: string;
        /** Seconds, from `Retry-After` or the problem's `retry_after`. */
        readonly retryAfter: number | undefined;
        /** The session's version when the server names it (stale-gradient, conflict, 412). */
        get currentVersion(): number | undefined;
        name: string;
        message: string;
        stack?: string;
        cause?: unknown;
    };
    readonly slug: string;
};
export declare class PreconditionRequiredError extends PreconditionRequiredError_base {
}
declare const RateLimitedError_base: {
    new (message: string, init?: OptdErrorInit): {
        readonly status: number | undefined;
        readonly problem: Problem;
        readonly type: string;
        readonly slug: string;
        readonly title: string;
        readonly detail: string;
        /** Seconds, from `Retry-After` or the problem's `retry_after`. */
        readonly retryAfter: number | undefined;
        /** The session's version when the server names it (stale-gradient, conflict, 412). */
        get currentVersion(): number | undefined;
        name: string;
        message: string;
        stack?: string;
        cause?: unknown;
    };
    readonly slug: string;
};
export declare class RateLimitedError extends RateLimitedError_base {
}
declare const StoreUnavailableError_base: {
    new (message: string, init?: OptdErrorInit): {
        readonly status: number | undefined;
        readonly problem: Problem;
        readonly type: string;
        readonly slug: string;
        readonly title: string;
        readonly detail: string;
        /** Seconds, from `Retry-After` or the problem's `retry_after`. */
        readonly retryAfter: number | undefined;
        /** The session's version when the server names it (stale-gradient, conflict, 412). */
        get currentVersion(): number | undefined;
        name: string;
        message: string;
        stack?: string;
        cause?: unknown;
    };
    readonly slug: string;
};
export declare class StoreUnavailableError extends StoreUnavailableError_base {
}
declare const TransportError_base: {
    new (message: string, init?: OptdErrorInit): {
        readonly status: number | undefined;
        readonly problem: Problem;
        readonly type: string;
        readonly slug: string;
        readonly title: string;
        readonly detail: string;
        /** Seconds, from `Retry-After` or the problem's `retry_after`. */
        readonly retryAfter: number | undefined;
        /** The session's version when the server names it (stale-gradient, conflict, 412). */
        get currentVersion(): number | undefined;
        name: string;
        message: string;
        stack?: string;
        cause?: unknown;
    };
    readonly slug: string;
};
/** No HTTP answer (connection refused or reset, timeout) even after the retries. */
export declare class TransportError extends TransportError_base {
}
declare const RedirectLoopError_base: {
    new (message: string, init?: OptdErrorInit): {
        readonly status: number | undefined;
        readonly problem: Problem;
        readonly type: string;
        readonly slug: string;
        readonly title: string;
        readonly detail: string;
        /** Seconds, from `Retry-After` or the problem's `retry_after`. */
        readonly retryAfter: number | undefined;
        /** The session's version when the server names it (stale-gradient, conflict, 412). */
        get currentVersion(): number | undefined;
        name: string;
        message: string;
        stack?: string;
        cause?: unknown;
    };
    readonly slug: string;
};
/** Too many 307s to session owners (or owner fail-overs) for one request. */
export declare class RedirectLoopError extends RedirectLoopError_base {
}
declare const ShardsDivergedError_base: {
    new (message: string, init?: OptdErrorInit): {
        readonly status: number | undefined;
        readonly problem: Problem;
        readonly type: string;
        readonly slug: string;
        readonly title: string;
        readonly detail: string;
        /** Seconds, from `Retry-After` or the problem's `retry_after`. */
        readonly retryAfter: number | undefined;
        /** The session's version when the server names it (stale-gradient, conflict, 412). */
        get currentVersion(): number | undefined;
        name: string;
        message: string;
        stack?: string;
        cause?: unknown;
    };
    readonly slug: string;
};
/** A sharded session's shards stayed at different versions: another client's step was
 * between its commits for longer than the client waits (`shardWaitMs`), or it died there,
 * or a shard refused a commit after shard 0 took it. The session is half-applied:
 * restore the shards from checkpoints (DESIGN §3). `problem.versions` / `problem.shard`. */
export declare class ShardsDivergedError extends ShardsDivergedError_base {
}
declare const BarrierTimeoutError_base: {
    new (message: string, init?: OptdErrorInit): {
        readonly status: number | undefined;
        readonly problem: Problem;
        readonly type: string;
        readonly slug: string;
        readonly title: string;
        readonly detail: string;
        /** Seconds, from `Retry-After` or the problem's `retry_after`. */
        readonly retryAfter: number | undefined;
        /** The session's version when the server names it (stale-gradient, conflict, 412). */
        get currentVersion(): number | undefined;
        name: string;
        message: string;
        stack?: string;
        cause?: unknown;
    };
    readonly slug: string;
};
/** A sync-mode step's barrier did not complete within the client's `barrierTimeoutMs`. */
export declare class BarrierTimeoutError extends BarrierTimeoutError_base {
}
export type OptdErrorClass = new (message: string, init?: OptdErrorInit) => OptdError;
export declare const PROBLEM_CLASSES: Record<string, OptdErrorClass>;
/** The problem document of an error body, or {} when it is not a JSON object. */
export declare function parseProblem(body: Uint8Array | string): Problem;
/** Seconds from `Retry-After` (delta-seconds) or the problem's `retry_after`. */
export declare function parseRetryAfter(header: string | null | undefined, problem: Problem): number | undefined;
/** Map an HTTP error response onto the class of its problem slug. */
export declare function errorFromResponse(status: number, headers: Headers, body: Uint8Array): OptdError;
export {};
