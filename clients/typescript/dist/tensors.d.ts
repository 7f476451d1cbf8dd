/** Tensors as the SDK sees them: a flat row-major typed array and a shape. */
/** Wire dtypes: safetensors codes. F16 and BF16 are decoded to Float32Array. */
export type DType = "F16" | "BF16" | "F32" | "F64";
export interface Tensor {
    /** Flat, row-major values. */
    data: Float32Array | Float64Array;
    /** Dimensions; `[]` is a scalar (one value). */
    shape: number[];
    /**
     * The dtype on the wire. Decoded tensors say what the server sent; when sending,
     * it defaults to F32 for a Float32Array and F64 for a Float64Array, and F16 or
     * BF16 halve the bytes of a gradient (rounded to nearest even).
     */
    dtype?: DType;
}
export type Tensors = Record<string, Tensor>;
/** What requests accept: a Tensor, a typed array (1-D), a number array (1-D,
 * float64) or a number (a scalar, float64). */
export type TensorInput = Tensor | Float32Array | Float64Array | number[] | number;
export type TensorInputs = Record<string, TensorInput>;
export declare const ITEMSIZE: Record<DType, number>;
/** Build a tensor; `shape` defaults to 1-D. */
export declare function tensor(data: Float32Array | Float64Array | number[], shape?: number[]): Tensor;
export declare function size(shape: readonly number[]): number;
export declare function checkTensor(name: string, t: Tensor): void;
export declare function toTensor(name: string, value: TensorInput): Tensor;
export declare function toTensors(what: string, values: TensorInputs): Tensors;
export declare function wireDType(t: Tensor): DType;
/** float -> IEEE 754 binary16 bits, rounding to nearest even. */
export declare function toF16Bits(value: number): number;
export declare function fromF16Bits(h: number): number;
/** float -> bfloat16 bits (the top half of float32), rounding to nearest even. */
export declare function toBF16Bits(value: number): number;
export declare function fromBF16Bits(h: number): number;
/** obj[key] = value, also for a key such as "__proto__" (names are any string). */
export declare function setOwn<T>(obj: Record<string, T>, key: string, value: T): void;
