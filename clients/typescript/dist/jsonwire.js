/** JSON tensors: `{"shape": [2, 3], "dtype": "float32", "data": [flat, row-major]}`. */
import { setOwn, size, wireDType } from "./tensors.js";
const JSON_DTYPE = { F16: "float16", BF16: "bfloat16", F32: "float32", F64: "float64" };
/**
 * One tensor as JSON text. Non-finite values are written as `NaN`/`Infinity`, which
 * is not JSON: the server then answers 422 invalid-tensor naming the tensor, as it
 * does for the other SDKs, instead of the value silently becoming `null`.
 */
export function tensorJSON(t) {
    const data = Array.from(t.data, String).join(",");
    return `{"shape":[${t.shape.join(",")}],"dtype":"${JSON_DTYPE[wireDType(t)]}","data":[${data}]}`;
}
/** `{...fields, [key]: {name: tensor}}` as JSON text. */
export function jsonBody(fields, key, tensors) {
    const named = Object.entries(tensors).map(([n, t]) => `${JSON.stringify(n)}:${tensorJSON(t)}`);
    const head = JSON.stringify(fields).slice(1, -1);
    return `{${head}${head ? "," : ""}${JSON.stringify(key)}:{${named.join(",")}}}`;
}
function flatten(value, out, shape, depth) {
    if (typeof value === "number") {
        out.push(value);
        return;
    }
    if (!Array.isArray(value))
        throw new TypeError(`malformed JSON tensor: ${typeof value} among the values`);
    if (shape.length === depth)
        shape.push(value.length);
    for (const v of value)
        flatten(v, out, shape, depth + 1);
}
/** A tensor from a response: an object with shape/dtype/data, a nested list or a number. */
export function decodeJSONTensor(name, obj) {
    if (obj !== null && typeof obj === "object" && !Array.isArray(obj)) {
        const { shape, dtype, data } = obj;
        const values = [];
        const inferred = [];
        flatten(data ?? [], values, inferred, 0);
        const dims = Array.isArray(shape) ? shape : inferred;
        if (size(dims) !== values.length)
            throw new TypeError(`malformed JSON tensor ${JSON.stringify(name)}: shape mismatch`);
        const wide = dtype === "float64";
        const code = Object.keys(JSON_DTYPE).find((k) => JSON_DTYPE[k] === dtype);
        const t = { data: wide ? Float64Array.from(values) : Float32Array.from(values), shape: dims };
        if (code !== undefined)
            t.dtype = code;
        return t;
    }
    const values = [];
    const shape = [];
    flatten(obj, values, shape, 0);
    return { data: Float64Array.from(values), shape };
}
export function decodeJSONTensors(obj) {
    if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
        throw new TypeError("malformed response: expected an object of tensors");
    }
    const out = {};
    for (const [name, v] of Object.entries(obj))
        setOwn(out, name, decodeJSONTensor(name, v));
    return out;
}
//# sourceMappingURL=jsonwire.js.map