/** Request and response shapes of the optd API (field names are the server's JSON names). */

import type { GradDtype, ParamsDtype } from "./compress.js";
import type { ShardInfo, ShardRepair } from "./shards.js";
import type { Tensor, TensorInputs, Tensors } from "./tensors.js";

export type Wire = "safetensors" | "json";

export interface ClientOptions {
  /** Default http://127.0.0.1:8000. */
  baseUrl?: string;
  /** Sent as `Authorization: Bearer <key>`. */
  apiKey?: string;
  /** How tensors travel (default "safetensors"). */
  wire?: Wire;
  /** Retries after the first attempt (default 5), see `retryDelay`. */
  retries?: number;
  backoffMs?: number;
  maxBackoffMs?: number;
  /** Per attempt (default 120 s); long-polls add their wait. */
  timeoutMs?: number;
  /** How long a sync-mode step may wait for its round in total (default 600 s). */
  barrierTimeoutMs?: number;
  /** `wait` of each long-poll after a 202 (default 30 s). */
  pollWaitS?: number;
  /** Sharded sessions: how long a step waits for the shards' versions to agree
   * (another client's step between its commits) before it raises (default 10 s). */
  shardWaitMs?: number;
  headers?: Record<string, string>;
  /** A fetch implementation (default the global one). */
  fetch?: typeof fetch;
}

export interface Schedule {
  name: "constant" | "linear_warmup" | "cosine" | "inverse_sqrt" | "step" | "exponential";
  [option: string]: unknown;
}

/** Session options; any other key is a hyperparameter by its torch name (`lr`, `betas`, ...). */
export interface SessionOptions {
  hyperparams?: Record<string, unknown>;
  dtype?: "float32" | "float64";
  schedule?: Schedule | null;
  max_grad_norm?: number | null;
  check_finite?: boolean;
  groups?: Record<string, unknown>[];
  mode?: "async" | "sync";
  workers?: number | null;
  /** Elastic rounds (sync mode, DESIGN §4): close with this many once every live member
   * has contributed (`worker_lease_s`), or `round_timeout_s` after the first one. */
  min_workers?: number | null;
  round_timeout_s?: number | null;
  worker_lease_s?: number | null;
  max_staleness?: number | null;
  staleness_lr?: "none" | "inverse";
  labels?: Record<string, string>;
  ttl_s?: number | null;
  /** Split the parameters over this many shard sessions (1-64, async mode; create only). */
  shards?: number;
  [hyperparam: string]: unknown;
}

export interface CreateSessionRequest extends SessionOptions {
  optimizer: string;
  params: TensorInputs;
}

/** `GET /v1/sessions/{id}`, also returned by create and update. */
export interface SessionInfo {
  id: string;
  optimizer: string;
  hyperparams: Record<string, unknown>;
  dtype: "float32" | "float64";
  mode: "async" | "sync";
  version: number;
  step: number;
  lr: number;
  last_loss: number | null;
  num_params: number;
  state_bytes: number;
  params: Record<string, { shape: number[]; step: number }> | null;
  labels: Record<string, string>;
  /** A sharded session's shard sessions, in shard order. */
  shards?: ShardInfo[] | null;
  /** A sharded session whose last step some shards have not taken (its client died
   * between commits): what finishes it (DESIGN §3). */
  repair?: ShardRepair | null;
  created_at: number;
  updated_at: number;
  [field: string]: unknown;
}

export interface StepOptions {
  /** The version the gradient was computed on (staleness checks, sync rounds). */
  baseVersion?: number;
  /** Worker id (sync mode needs one per worker); defaults to the session's `worker`. */
  worker?: string;
  loss?: number;
  /** Seconds a sync-mode step may wait on the server for its round (server default 30). */
  wait?: number;
  /** Only the stepped parameters come back (`?return=updated`). */
  onlyUpdated?: boolean;
  /** The step applies only at this version (`If-Match`), else 412. */
  ifMatch?: number;
  /** Default: a fresh UUID per call, reused by its retries. */
  idempotencyKey?: string;
  /** How the gradients travel (DESIGN §3): "float32" (default), "bfloat16" (rounded to
   * nearest even) or "int8" (int8-block, `block` values per scale; safetensors only). */
  gradDtype?: GradDtype;
  /** int8-block block size (default 256). */
  block?: number;
  /** "bfloat16" asks for the parameters rounded to bfloat16 (`Optd-Response-Dtype`). */
  paramsDtype?: ParamsDtype;
}

export interface Barrier {
  version: number;
  have: number;
  need: number;
}

export interface StepResult {
  params: Tensors;
  version: number;
  /** Steps applied to the session; undefined after a 202 barrier (see `barrier`). */
  step?: number;
  lr?: number;
  gradNorm?: number;
  staleness?: number | null;
  /** The server replayed a stored answer to this Idempotency-Key. */
  replayed: boolean;
  /** Set when the round was not complete within `wait` (202) and the client long-polled. */
  barrier?: Barrier;
}

export interface ParamsOptions {
  names?: string[];
  /** Long-poll until the session reaches this version or `wait` seconds pass. */
  minVersion?: number;
  wait?: number;
  /** "bfloat16" asks for the values rounded to bfloat16 (`Optd-Response-Dtype`). */
  paramsDtype?: ParamsDtype;
  /** Renews this worker's lease in a sync session (`Optd-Worker`). */
  worker?: string;
}

/** A sync session's open round. */
export interface Round {
  version: number;
  have: number;
  need: number;
  min: number;
  contributors: string[];
  missing: string[];
  /** The round timeout's countdown once `have >= min`, else null. */
  closes_in_s: number | null;
}

/** `PUT .../workers/{worker}`: the version to compute on (the round to join). */
export interface JoinResult {
  worker: string;
  version: number;
  round: Round;
  lease_s: number | null;
}

/** `GET .../workers`: the members and the open round. */
export interface WorkersInfo {
  workers: { worker: string; live: boolean; last_seen_s: number; rounds: number; last_version: number | null }[];
  round: Round;
  lease_s: number | null;
}

export interface ParamsResult {
  version: number;
  params: Tensors;
}

/** A full checkpoint: tensors `<slot>/<param name>` and the server's meta document. */
export interface Checkpoint {
  version: number;
  meta: Record<string, unknown>;
  tensors: Record<string, Tensor>;
}

export interface SessionPage {
  sessions: SessionInfo[];
  nextCursor: string | null;
}
