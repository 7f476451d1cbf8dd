/** `Session`: one optimizer session on the server. */
import type { OptdClient } from "./client.js";
import { type PendingCommit, type ShardLayout } from "./shards.js";
import { type TensorInputs } from "./tensors.js";
import type { Checkpoint, JoinResult, ParamsOptions, ParamsResult, SessionInfo, SessionOptions, StepOptions, StepResult, WorkersInfo } from "./types.js";
export declare class Session {
    private readonly client;
    readonly id: string;
    /** Default worker id sent with every step (sync mode needs one per worker). */
    worker?: string | undefined;
    /** The session's version as of the last response this object received. */
    version: number | undefined;
    /** What the last `step()` returned, besides the parameters. */
    last: Omit<StepResult, "params"> | undefined;
    constructor(client: OptdClient, id: string, 
    /** Default worker id sent with every step (sync mode needs one per worker). */
    worker?: string | undefined);
    private path;
    /** @internal The shards of a sharded session (null: not sharded, undefined: not known yet). */
    layout: ShardLayout | null | undefined;
    /** @internal A sharded step some of whose shards have not committed yet. */
    pending: PendingCommit | undefined;
    /**
     * Apply gradients (all parameters or a subset); resolves with the new parameters.
     * On a sharded session (`shards` at create), the step is the two-phase protocol over
     * the shard sessions; a step left half-applied by an error is finished by the next
     * `step()` (which returns that step's result when given the same `idempotencyKey`).
     */
    step(grads: TensorInputs, options?: StepOptions): Promise<StepResult>;
    private readonly hold;
    private done;
    private plainStep;
    /** A sync step that waited in vain (202): long-poll for the round's version + 1. */
    private awaitBarrier;
    /** Current parameters; with `minVersion` and `wait`, long-polls (compare `version`). */
    params(options?: ParamsOptions): Promise<ParamsResult>;
    /** Overwrite some or all parameter values, keeping the optimizer state. */
    setParams(params: TensorInputs, options?: {
        ifMatch?: number;
    }): Promise<number>;
    /** PATCH: hyperparameters by torch name (`lr`, ...) or `schedule`, `max_grad_norm`,
     * `check_finite`, `max_staleness`, `staleness_lr`, `labels`, `ttl_s`. */
    update(changes: SessionOptions, options?: {
        ifMatch?: number;
    }): Promise<SessionInfo>;
    /** The full checkpoint: params, every optimizer slot, step counts and config. */
    state(): Promise<Checkpoint>;
    /** Restore a checkpoint into this session (created under this id when absent). */
    loadState(checkpoint: Checkpoint, options?: {
        ifMatch?: number;
    }): Promise<number>;
    /** Config, version, step counts, parameter shapes, current lr, last loss. */
    info(): Promise<SessionInfo>;
    private workerPath;
    /** Join this sync session's workers, or renew the lease (a heartbeat); `worker`
     * defaults to `this.worker`. Answers the version to compute on and the open round. */
    join(worker?: string): Promise<JoinResult>;
    /** Leave the session's workers now: rounds stop waiting for this worker. */
    leave(worker?: string): Promise<void>;
    /** Members (live, last seen, rounds) and the open round's have/need/closes_in_s. */
    workers(): Promise<WorkersInfo>;
    delete(): Promise<void>;
}
/** `{param name: tensor}` of one slot (`param`, `exp_avg`, ...) of a checkpoint. */
export declare function checkpointSlot(checkpoint: Checkpoint, slot: string): Checkpoint["tensors"];
