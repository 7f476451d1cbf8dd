/** Tensors as the SDK sees them: a flat row-major typed array and a shape. */
export const ITEMSIZE = { F16: 2, BF16: 2, F32: 4, F64: 8 };
/** Build a tensor; `shape` defaults to 1-D. */
export function tensor(data, shape) {
    const arr = Array.isArray(data) ? Float64Array.from(data) : data;
    const t = { data: arr, shape: shape ?? [arr.length] };
    checkTensor("tensor", t);
    return t;
}
export function size(shape) {
    return shape.reduce((a, b) => a * b, 1);
}
export function checkTensor(name, t) {
    if (!(t.data instanceof Float32Array || t.data instanceof Float64Array)) {
        throw new TypeError(`${name}: data must be a Float32Array or Float64Array`);
    }
    if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
        throw new TypeError(`${name}: shape must be an array of non-negative integers`);
    }
    if (size(t.shape) !== t.data.length) {
        throw new TypeError(`${name}: shape [${t.shape}] needs ${size(t.shape)} values, got ${t.data.length}`);
    }
    if (t.dtype !== undefined && !(t.dtype in ITEMSIZE)) {
        throw new TypeError(`${name}: dtype must be one of F16, BF16, F32, F64`);
    }
}
export function toTensor(name, value) {
    let t;
    if (typeof value === "number")
        t = { data: Float64Array.of(value), shape: [] };
    else if (Array.isArray(value))
        t = { data: Float64Array.from(value), shape: [value.length] };
    else if (value instanceof Float32Array || value instanceof Float64Array) {
        t = { data: value, shape: [value.length] };
    }
    else
        t = value;
    checkTensor(name, t);
    return t;
}
export function toTensors(what, values) {
    if (values === null || typeof values !== "object") {
        throw new TypeError(`${what}: expected an object of name -> tensor`);
    }
    const out = {};
    for (const [name, v] of Object.entries(values))
        setOwn(out, name, toTensor(`${what}[${JSON.stringify(name)}]`, v));
    return out;
}
export function wireDType(t) {
    return t.dtype ?? (t.data instanceof Float64Array ? "F64" : "F32");
}
// -- half precision ------------------------------------------------------------------
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
/** float -> IEEE 754 binary16 bits, rounding to nearest even. */
export function toF16Bits(value) {
    f32[0] = value;
    const x = u32[0];
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    if (exp === 0xff)
        return sign | 0x7c00 | (mant ? 0x200 : 0); // Inf, NaN
    const e = exp - 127 + 15;
    if (e >= 0x1f)
        return sign | 0x7c00; // overflow
    if (e <= 0) {
        if (e < -10)
            return sign; // underflows to zero
        mant |= 0x800000;
        const shift = 14 - e;
        let half = mant >>> shift;
        const rest = mant & ((1 << shift) - 1);
        const mid = 1 << (shift - 1);
        if (rest > mid || (rest === mid && half & 1))
            half++;
        return sign | half;
    }
    let bits = sign | (e << 10) | (mant >>> 13);
    const rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest === 0x1000 && bits & 1))
        bits++; // may carry into the exponent
    return bits;
}
export function fromF16Bits(h) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0)
        return sign * mant * 2 ** -24;
    if (exp === 0x1f)
        return mant ? NaN : sign * Infinity;
    return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}
/** float -> bfloat16 bits (the top half of float32), rounding to nearest even. */
export function toBF16Bits(value) {
    f32[0] = value;
    const x = u32[0];
    if ((x & 0x7f800000) === 0x7f800000 && x & 0x7fffff)
        return (x >>> 16) | 0x40; // quiet NaN
    return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}
export function fromBF16Bits(h) {
    u32[0] = h << 16;
    return f32[0];
}
/** obj[key] = value, also for a key such as "__proto__" (names are any string). */
export function setOwn(obj, key, value) {
    Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}
//# sourceMappingURL=tensors.js.map