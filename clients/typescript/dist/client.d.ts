/** `OptdClient`: configuration, session creation and listing, and the shared wire helpers. */
import { Http, type Reply, type Request } from "./http.js";
import { Session } from "./session.js";
import { type Tensors } from "./tensors.js";
import type { ClientOptions, CreateSessionRequest, SessionInfo, SessionPage, StepOptions, Wire } from "./types.js";
export declare const SAFETENSORS = "application/x-safetensors";
export declare const JSON_TYPE = "application/json";
export declare const VERSION = "0.1.0";
export declare const PATCH_KEYS: Set<string>;
/** Session-level keys stay top-level; every other key (torch names: lr, betas, ...) goes
 * under `hyperparams`, merged with an explicit `hyperparams` object. */
export declare function splitOptions(options: Record<string, unknown>, top: Set<string>): Record<string, unknown>;
/** A UUID v4 from crypto.randomUUID, or getRandomValues where randomUUID is missing
 * (browsers outside secure contexts). */
export declare function newKey(): string;
export declare class OptdClient {
    readonly wire: Wire;
    readonly barrierTimeoutMs: number;
    readonly pollWaitS: number;
    readonly shardWaitMs: number;
    /** @internal */
    readonly http: Http;
    constructor(options?: ClientOptions);
    get baseUrl(): string;
    /** @internal The media type of tensor bodies. */
    get tensorType(): string;
    /** Create a session with initial `params`; other keys are session options or hyperparameters. */
    createSession(request: CreateSessionRequest): Promise<Session>;
    /** A handle on an existing session (no request is made). */
    session(id: string, options?: {
        worker?: string;
    }): Session;
    /** One page of sessions, optionally only those carrying all of `labels`. */
    listPage(options?: {
        labels?: Record<string, string>;
        limit?: number;
        cursor?: string;
    }): Promise<SessionPage>;
    /** Every session, page by page. */
    listSessions(labels?: Record<string, string>, pageSize?: number): AsyncGenerator<SessionInfo>;
    /** `GET /v1/optimizers`: every optimizer with its hyperparameter schema and defaults. */
    optimizers(): Promise<Record<string, unknown>>;
    /** @internal */
    json(req: Request): Promise<unknown>;
    /** @internal A tensor body in the client's wire format. */
    tensorBody(tensors: Tensors, key: string, fields?: Record<string, unknown>): Uint8Array | string;
    /** @internal A gradient body: `tensors` as `options.gradDtype` says, with `fields`. */
    gradBody(tensors: Tensors, options: StepOptions, fields?: Record<string, unknown>): Uint8Array | string;
    /** @internal Scalar fields and tensors of a tensor response, whatever its format. */
    parseTensors(reply: Reply, key: string): {
        fields: Record<string, unknown>;
        tensors: Tensors;
    };
}
