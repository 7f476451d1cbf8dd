/**
 * The safetensors format: 8-byte little-endian header length, a JSON header padded
 * with spaces to a multiple of 8 bytes, then the tensors packed back to back.
 *
 * The writer produces the same bytes as the server's encoder (compact header,
 * `__metadata__` first, tensors in the order given). The reader is as strict as the
 * server: offsets must start at 0, be contiguous and end with the body; dtypes are
 * F16/BF16/F32/F64; shape x itemsize must equal the byte length.
 */
import { ITEMSIZE, checkTensor, setOwn, fromBF16Bits, fromF16Bits, size, toBF16Bits, toF16Bits, wireDType, } from "./tensors.js";
export class SafetensorsError extends Error {
    name = "SafetensorsError";
}
const LITTLE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const utf8 = new TextEncoder();
/** Serialise tensors (in the object's insertion order) and optional metadata. */
export function encodeSafetensors(tensors, metadata) {
    const parts = [];
    if (metadata !== undefined) {
        for (const v of Object.values(metadata)) {
            if (typeof v !== "string")
                throw new SafetensorsError("__metadata__ values must be strings");
        }
        parts.push(`"__metadata__":${metaJSON(metadata)}`);
    }
    const entries = Object.entries(tensors);
    let offset = 0;
    const layout = [];
    for (const [name, t] of entries) {
        if (!name || name === "__metadata__")
            throw new SafetensorsError(`cannot write a tensor named ${JSON.stringify(name)}`);
        checkTensor(name, t);
        const dtype = wireDType(t);
        const nbytes = t.data.length * ITEMSIZE[dtype];
        parts.push(`${JSON.stringify(name)}:{"dtype":"${dtype}","shape":[${t.shape.join(",")}],"data_offsets":[${offset},${offset + nbytes}]}`);
        layout.push([t, dtype, offset]);
        offset += nbytes;
    }
    let header = utf8.encode(`{${parts.join(",")}}`);
    const padded = header.length + ((8 - (header.length % 8)) % 8);
    const out = new Uint8Array(8 + padded + offset);
    const view = new DataView(out.buffer);
    view.setBigUint64(0, BigInt(padded), true);
    out.set(header, 8);
    out.fill(0x20, 8 + header.length, 8 + padded);
    const base = 8 + padded;
    for (const [t, dtype, at] of layout)
        writeData(view, base + at, t.data, dtype);
    return out;
}
/** Metadata keys in insertion order (JSON.stringify would move integer-like keys first). */
function metaJSON(metadata) {
    return `{${Object.keys(metadata)
        .map((k) => `${JSON.stringify(k)}:${JSON.stringify(metadata[k])}`)
        .join(",")}}`;
}
function writeData(view, at, data, dtype) {
    const n = data.length;
    if (dtype === "F32" || dtype === "F64") {
        const fast = LITTLE && (dtype === "F32") === data instanceof Float32Array;
        if (fast) {
            new Uint8Array(view.buffer, at, data.byteLength).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
        }
        else if (dtype === "F32")
            for (let i = 0; i < n; i++)
                view.setFloat32(at + 4 * i, data[i], true);
        else
            for (let i = 0; i < n; i++)
                view.setFloat64(at + 8 * i, data[i], true);
    }
    else {
        const convert = dtype === "F16" ? toF16Bits : toBF16Bits;
        for (let i = 0; i < n; i++)
            view.setUint16(at + 2 * i, convert(data[i]), true);
    }
}
function fail(message) {
    throw new SafetensorsError(`invalid safetensors: ${message}`);
}
const isUint = (v) => Number.isSafeInteger(v) && v >= 0;
/** Parse a safetensors body; tensors come back in data (offset) order, F16/BF16 widened. */
export function decodeSafetensors(body) {
    const bytes = body instanceof Uint8Array ? body : new Uint8Array(body);
    if (bytes.length < 8)
        fail(`${bytes.length} bytes, shorter than the 8-byte header length`);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const n = view.getBigUint64(0, true);
    if (n > BigInt(bytes.length - 8))
        fail(`header length ${n} exceeds the ${bytes.length - 8} bytes that follow`);
    const hlen = Number(n);
    let header;
    try {
        header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + hlen)));
    }
    catch (e) {
        fail(`header is not UTF-8 JSON (${e.message})`);
    }
    if (header === null || typeof header !== "object" || Array.isArray(header))
        fail("header is not a JSON object");
    const { __metadata__: rawMeta, ...rest } = header;
    const metadata = {};
    if (rawMeta !== undefined && rawMeta !== null) {
        if (typeof rawMeta !== "object" || Array.isArray(rawMeta))
            fail("__metadata__ is not an object");
        for (const [k, v] of Object.entries(rawMeta)) {
            if (typeof v !== "string")
                fail(`__metadata__[${JSON.stringify(k)}] is not a string`);
            setOwn(metadata, k, v);
        }
    }
    const entries = [];
    for (const [name, raw] of Object.entries(rest)) {
        const e = raw;
        if (e === null || typeof e !== "object" || Array.isArray(e))
            fail(`tensor ${JSON.stringify(name)} is not an object`);
        const { dtype, shape, data_offsets: offs } = e;
        if (typeof dtype !== "string" || !Object.hasOwn(ITEMSIZE, dtype))
            fail(`tensor ${JSON.stringify(name)}: dtype ${JSON.stringify(dtype)} is not F16, BF16, F32 or F64`);
        if (!Array.isArray(shape) || !shape.every(isUint))
            fail(`tensor ${JSON.stringify(name)}: bad shape`);
        if (!Array.isArray(offs) || offs.length !== 2 || !offs.every(isUint))
            fail(`tensor ${JSON.stringify(name)}: bad data_offsets`);
        const [begin, end] = offs;
        if (end < begin)
            fail(`tensor ${JSON.stringify(name)}: data_offsets end before they begin`);
        if (size(shape) * ITEMSIZE[dtype] !== end - begin) {
            fail(`tensor ${JSON.stringify(name)}: shape [${shape}] of ${dtype} does not fill data_offsets [${begin}, ${end}]`);
        }
        entries.push({ name, dtype: dtype, shape: shape, begin, end });
    }
    entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
    const base = 8 + hlen;
    const dataLen = bytes.length - base;
    let pos = 0;
    for (const e of entries) {
        if (e.begin !== pos)
            fail(`tensor ${JSON.stringify(e.name)} ${e.begin < pos ? "overlaps the previous one" : "leaves a gap"}`);
        pos = e.end;
    }
    if (pos !== dataLen)
        fail(`tensors cover ${pos} data bytes but the body holds ${dataLen}`);
    const tensors = {};
    for (const e of entries) {
        const data = readData(view, base + e.begin, e.end - e.begin, e.dtype);
        setOwn(tensors, e.name, { data, shape: e.shape, dtype: e.dtype });
    }
    return { tensors, metadata };
}
function readData(view, at, nbytes, dtype) {
    const n = nbytes / ITEMSIZE[dtype];
    if (dtype === "F32" || dtype === "F64") {
        const Ctor = dtype === "F32" ? Float32Array : Float64Array;
        if (LITTLE) {
            const copy = new Uint8Array(view.buffer, view.byteOffset + at, nbytes).slice();
            return new Ctor(copy.buffer);
        }
        const out = new Ctor(n);
        for (let i = 0; i < n; i++)
            out[i] = dtype === "F32" ? view.getFloat32(at + 4 * i, true) : view.getFloat64(at + 8 * i, true);
        return out;
    }
    const out = new Float32Array(n);
    const convert = dtype === "F16" ? fromF16Bits : fromBF16Bits;
    for (let i = 0; i < n; i++)
        out[i] = convert(view.getUint16(at + 2 * i, true));
    return out;
}
//# sourceMappingURL=safetensors.js.map