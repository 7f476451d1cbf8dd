/**
 * The safetensors format: 8-byte little-endian header length, a JSON header padded
 * with spaces to a multiple of 8 bytes, then the tensors packed back to back.
 *
 * The writer produces the same bytes as the server's encoder (compact header,
 * `__metadata__` first, tensors in the order given). The reader is as strict as the
 * server: offsets must start at 0, be contiguous and end with the body; dtypes are
 * F16/BF16/F32/F64; shape x itemsize must equal the byte length.
 */
import { type Tensors } from "./tensors.js";
export declare class SafetensorsError extends Error {
    name: string;
}
/** Serialise tensors (in the object's insertion order) and optional metadata. */
export declare function encodeSafetensors(tensors: Tensors, metadata?: Record<string, string>): Uint8Array;
export interface Decoded {
    tensors: Tensors;
    metadata: Record<string, string>;
}
/** Parse a safetensors body; tensors come back in data (offset) order, F16/BF16 widened. */
export declare function decodeSafetensors(body: Uint8Array | ArrayBuffer): Decoded;
