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

import { type Tensor, type Tensors, fromBF16Bits, setOwn, toBF16Bits } from "./tensors.js";

export const INT8_BLOCK_METADATA = { "optd.quant": "int8-block" } as const;
export const SCALE_SUFFIX = ".__scale__";

/** bfloat16 bit patterns of `values` (rounded to float32, then to nearest even). */
export function bfloat16Bits(values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = toBF16Bits(values[i]!);
  return out;
}

function roundHalfEven(v: number): number {
  const r = Math.round(v); // halves go up
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Quantize float values (flat, row-major) to int8 blocks with one float32 scale each. */
export function int8Block(values: ArrayLike<number>, block = 256): { q: Int8Array; scale: Float32Array } {
  if (!(Number.isInteger(block) && block >= 1 && block <= 1 << 20)) {
    throw new RangeError(`block must be 1 to 2**20, got ${block}`);
  }
  const n = values.length;
  const x = Float32Array.from(values as ArrayLike<number>);
  const blocks = Math.ceil(n / block);
  const q = new Int8Array(n);
  const scale = new Float32Array(blocks);
  for (let b = 0; b < blocks; b++) {
    const end = Math.min(n, (b + 1) * block);
    let absmax = 0;
    for (let i = b * block; i < end; i++) {
      const v = x[i]!;
      if (!Number.isFinite(v)) throw new RangeError("cannot quantize non-finite values");
      absmax = Math.max(absmax, Math.abs(v));
    }
    const s = Math.fround(absmax / 127);
    scale[b] = s;
    if (s === 0) continue;
    for (let i = b * block; i < end; i++) {
      const r = roundHalfEven(Math.fround(x[i]! / s));
      q[i] = Math.max(-127, Math.min(127, r));
    }
  }
  return { q, scale };
}

/** What the server computes from (q, scale): float32 `q[i] * scale[i / block]`. */
export function dequantizeInt8Block(q: Int8Array, scale: Float32Array, block = 256): Float32Array {
  const out = new Float32Array(q.length);
  for (let i = 0; i < q.length; i++) out[i] = Math.fround(q[i]! * scale[Math.floor(i / block)]!);
  return out;
}

/** How gradients travel (`StepOptions.gradDtype`). */
export type GradDtype = "float32" | "bfloat16" | "int8";
/** The parameters' dtype in answers (`Optd-Response-Dtype`). */
export type ParamsDtype = "float32" | "bfloat16";

const utf8 = new TextEncoder();

/** @internal Gradients rounded to bfloat16 (values and wire dtype BF16, also in JSON). */
export function bfloat16Tensors(grads: Tensors): Tensors {
  const out: Tensors = {};
  for (const [name, t] of Object.entries(grads)) {
    const data = new Float32Array(t.data.length);
    for (let i = 0; i < data.length; i++) data[i] = fromBF16Bits(toBF16Bits(t.data[i]!));
    setOwn<Tensor>(out, name, { data, shape: t.shape, dtype: "BF16" });
  }
  return out;
}

/**
 * A safetensors step body of int8-block gradients: every `w` as I8 plus `w.__scale__`
 * as F32 (the scales first, as the Python SDK writes them), `__metadata__` = `metadata`
 * then `optd.quant` and `optd.block`.
 */
export function encodeInt8Block(grads: Tensors, metadata: Record<string, string> = {}, block = 256): Uint8Array {
  const wide: [string, number[], Uint8Array][] = [];
  const narrow: [string, number[], Uint8Array][] = [];
  for (const [name, t] of Object.entries(grads)) {
    const { q, scale } = int8Block(t.data, block);
    const le = new DataView(new ArrayBuffer(4 * scale.length));
    scale.forEach((v, i) => le.setFloat32(4 * i, v, true));
    wide.push([name + SCALE_SUFFIX, [scale.length], new Uint8Array(le.buffer)]);
    narrow.push([name, t.shape, new Uint8Array(q.buffer)]);
  }
  const meta = { ...metadata, ...INT8_BLOCK_METADATA, "optd.block": String(block) };
  const metaText = Object.entries(meta).map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`);
  const parts = [`"__metadata__":{${metaText.join(",")}}`];
  let offset = 0;
  const all = [...wide.map((p) => [...p, "F32"] as const), ...narrow.map((p) => [...p, "I8"] as const)];
  for (const [name, shape, bytes, dtype] of all) {
    const offsets = `[${offset},${offset + bytes.length}]`;
    parts.push(`${JSON.stringify(name)}:{"dtype":"${dtype}","shape":[${shape.join(",")}],"data_offsets":${offsets}}`);
    offset += bytes.length;
  }
  const header = utf8.encode(`{${parts.join(",")}}`);
  const padded = header.length + ((8 - (header.length % 8)) % 8);
  const out = new Uint8Array(8 + padded + offset).fill(0x20, 8 + header.length, 8 + padded);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(header, 8);
  let at = 8 + padded;
  for (const [, , bytes] of all) {
    out.set(bytes, at);
    at += bytes.length;
  }
  return out;
}
