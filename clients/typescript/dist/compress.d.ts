/**
 * Compressed gradients (DESIGN.md §3, "Compressed tensors"), bit-identical to the Python
 * and Go SDKs (testdata/wire/compress.json).
 *
 * int8-block: row-major float32 values in blocks of `block`; per block
 * `scale = float32(absmax / 127)`, `q = roundHalfEven(float32(x / scale))` clamped to
 * [-127, 127], 0 where the scale is 0. Send `w` as I8 and `w.__scale__` as F32 with
 * `__metadata__` {"optd.quant": "int8-block", "optd.block": "<block>"}.
 * (float32 division done in float64 then rounded is correctly rounded: 53 >= 2*24 + 2.)
 */
import { type Tensors } from "./tensors.js";
export declare const INT8_BLOCK_METADATA: {
    readonly "optd.quant": "int8-block";
};
export declare const SCALE_SUFFIX = ".__scale__";
/** bfloat16 bit patterns of `values` (rounded to float32, then to nearest even). */
export declare function bfloat16Bits(values: ArrayLike<number>): Uint16Array;
/** Quantize float values (flat, row-major) to int8 blocks with one float32 scale each. */
export declare function int8Block(values: ArrayLike<number>, block?: number): {
    q: Int8Array;
    scale: Float32Array;
};
/** What the server computes from (q, scale): float32 `q[i] * scale[i / block]`. */
export declare function dequantizeInt8Block(q: Int8Array, scale: Float32Array, block?: number): Float32Array;
/** How gradients travel (`StepOptions.gradDtype`). */
export type GradDtype = "float32" | "bfloat16" | "int8";
/** The parameters' dtype in answers (`Optd-Response-Dtype`). */
export type ParamsDtype = "float32" | "bfloat16";
/** @internal Gradients rounded to bfloat16 (values and wire dtype BF16, also in JSON). */
export declare function bfloat16Tensors(grads: Tensors): Tensors;
/**
 * A safetensors step body of int8-block gradients: every `w` as I8 plus `w.__scale__`
 * as F32 (the scales first, as the Python SDK writes them), `__metadata__` = `metadata`
 * then `optd.quant` and `optd.block`.
 */
export declare function encodeInt8Block(grads: Tensors, metadata?: Record<string, string>, block?: number): Uint8Array;
