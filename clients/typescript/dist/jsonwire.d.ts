/** JSON tensors: `{"shape": [2, 3], "dtype": "float32", "data": [flat, row-major]}`. */
import { type Tensor, type Tensors } from "./tensors.js";
/**
 * One tensor as JSON text. Non-finite values are written as `NaN`/`Infinity`, which
 * is not JSON: the server then answers 422 invalid-tensor naming the tensor, as it
 * does for the other SDKs, instead of the value silently becoming `null`.
 */
export declare function tensorJSON(t: Tensor): string;
/** `{...fields, [key]: {name: tensor}}` as JSON text. */
export declare function jsonBody(fields: Record<string, unknown>, key: string, tensors: Tensors): string;
/** A tensor from a response: an object with shape/dtype/data, a nested list or a number. */
export declare function decodeJSONTensor(name: string, obj: unknown): Tensor;
export declare function decodeJSONTensors(obj: unknown): Tensors;
