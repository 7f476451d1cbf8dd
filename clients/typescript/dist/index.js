/**
 * @optd/client — the TypeScript SDK of optd, an optimizer-as-a-service.
 * Fetch-based, no runtime dependencies, runs in Node 20+ and browsers.
 */
export { OptdClient, SAFETENSORS, VERSION, newKey } from "./client.js";
export { Session, checkpointSlot } from "./session.js";
export { assembleParts, layoutOf, splitGrads } from "./shards.js";
export { retryDelay } from "./http.js";
export { SafetensorsError, decodeSafetensors, encodeSafetensors } from "./safetensors.js";
export { decodeJSONTensor, decodeJSONTensors, jsonBody, tensorJSON } from "./jsonwire.js";
export { fromBF16Bits, fromF16Bits, tensor, toBF16Bits, toF16Bits, } from "./tensors.js";
export { INT8_BLOCK_METADATA, SCALE_SUFFIX, bfloat16Bits, dequantizeInt8Block, encodeInt8Block, int8Block, } from "./compress.js";
export * from "./errors.js";
//# sourceMappingURL=index.js.map