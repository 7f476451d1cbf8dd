/**
 * @optd/client — the TypeScript SDK of optd, an optimizer-as-a-service.
 * Fetch-based, no runtime dependencies, runs in Node 20+ and browsers.
 */

export { OptdClient, SAFETENSORS, VERSION, newKey } from "./client.js";
export { Session, checkpointSlot } from "./session.js";
export { type ShardInfo, type ShardLayout, type ShardRepair, assembleParts, layoutOf, splitGrads } from "./shards.js";
export { type Reply, type RetryPolicy, retryDelay } from "./http.js";
export { SafetensorsError, type Decoded, decodeSafetensors, encodeSafetensors } from "./safetensors.js";
export { decodeJSONTensor, decodeJSONTensors, jsonBody, tensorJSON } from "./jsonwire.js";
export {
  type DType,
  type Tensor,
  type TensorInput,
  type TensorInputs,
  type Tensors,
  fromBF16Bits,
  fromF16Bits,
  tensor,
  toBF16Bits,
  toF16Bits,
} from "./tensors.js";
export {
  type GradDtype,
  type ParamsDtype,
  INT8_BLOCK_METADATA,
  SCALE_SUFFIX,
  bfloat16Bits,
  dequantizeInt8Block,
  encodeInt8Block,
  int8Block,
} from "./compress.js";
export * from "./errors.js";
export type * from "./types.js";
