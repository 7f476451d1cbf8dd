/**
 * Sharded sessions (the server's DESIGN §3): a session created with `shards: K` keeps its
 * parameters in K shard sessions `{id}-s{k}`. A step splits the gradient over them,
 * prepares every shard, commits shard 0 and then the others, and assembles the result.
 */
import type { OptdClient } from "./client.js";
import { type Tensors } from "./tensors.js";
import type { SessionInfo, StepOptions, StepResult } from "./types.js";
/** One shard session in the session info's `shards` list. */
export interface ShardInfo {
    id: string;
    index: number;
    /** Positions in the flat layout (the order of `params`). */
    start: number;
    stop: number;
    version: number;
    /** Pieces: element ranges of each tensor flattened row-major. */
    tensors: {
        name: string;
        start: number;
        stop: number;
    }[];
}
/** The session info's `repair`: shard 0's last commit, while some shards have not taken it
 * (its client died between commits). Commit each shard at `version - 1` with its token. */
export interface ShardRepair {
    version: number;
    tokens: string[];
    sumsq: unknown[];
    loss?: number;
    worker?: string;
}
/** What a sharded step needs to know: the shards and every tensor's full shape. */
export interface ShardLayout {
    shards: ShardInfo[];
    shapes: Record<string, number[]>;
}
/** The layout of a sharded session's info; null when the session is not sharded. */
export declare function layoutOf(info: SessionInfo): ShardLayout | null;
/** Each shard's part of `grads`: 1-D pieces (row-major slices) under the tensors' names. */
export declare function splitGrads(layout: ShardLayout, grads: Tensors): Tensors[];
/** Whole tensors from the shards' pieces (in layout order); a tensor with a piece
 * missing (e.g. `onlyUpdated`) is left out. */
export declare function assembleParts(layout: ShardLayout, parts: Tensors[]): Tensors;
/** A step from its prepare on: kept on the session while a commit may be owed. */
export interface PendingCommit {
    /** The step's Idempotency-Key (the caller's, or a fresh one). */
    key: string;
    version: number;
    /** Every shard's list, in shard order, verbatim (`"NaN"` too). */
    sumsq: unknown[];
    /** Each shard's prepare body (encoded once). */
    bodies: (Uint8Array | string)[];
    tokens: string[];
    /** Idempotency-Key of each shard's commit (a new one whenever its body changes). */
    keys: string[];
    answers: (StepResult | undefined)[];
    options: StepOptions;
    worker: string | undefined;
}
/** Keeps a step on the session (`hold(p)`) or forgets it (`hold(p, true)`). */
export type Hold = (p: PendingCommit, done?: boolean) => void;
/**
 * Commit what `p` has left: shard 0 first, then the others in parallel; the assembled
 * result, or undefined when shard 0 refused the version (412: nothing of this step was
 * applied). Throws with `p` held while some commit may be owed (the next step sends it).
 */
export declare function commitAll(c: OptdClient, layout: ShardLayout, p: PendingCommit, hold: Hold): Promise<StepResult | undefined>;
/** One sharded step (the session's `step()` on a sharded session). */
export declare function shardedStep(c: OptdClient, layout: ShardLayout, grads: Tensors, options: StepOptions, worker: string | undefined, hold: Hold): Promise<StepResult>;
