/** The shared golden files (testdata/wire/safetensors): decode, encode, refuse. */

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  type DType,
  type Tensor,
  decodeSafetensors,
  encodeSafetensors,
  fromBF16Bits,
  fromF16Bits,
  jsonBody,
  SafetensorsError,
  tensor,
  toBF16Bits,
  toF16Bits,
} from "@optd/client";
import { hex, readBytes, readJSON } from "./helpers.js";

interface Entry {
  name: string;
  dtype: DType;
  shape: number[];
  hex: string;
  values: number[];
}
interface FileEntry {
  metadata: [string, string][] | null;
  tensors: Entry[];
}
const manifest = readJSON("safetensors/manifest.json") as {
  files: Record<string, FileEntry>;
  invalid: Record<string, { why: string; problem: string }>;
};

const asTensor = (e: Entry): Tensor => ({
  data: e.dtype === "F64" ? Float64Array.from(e.values) : Float32Array.from(e.values),
  shape: e.shape,
  dtype: e.dtype,
});

describe("golden safetensors", () => {
  for (const [file, entry] of Object.entries(manifest.files)) {
    test(`decode ${file}`, () => {
      const { tensors, metadata } = decodeSafetensors(readBytes(`safetensors/${file}`));
      assert.deepEqual(
        Object.keys(tensors),
        entry.tensors.map((t) => t.name),
      );
      assert.deepEqual(metadata, Object.fromEntries(entry.metadata ?? []));
      for (const e of entry.tensors) {
        const t = tensors[e.name]!;
        assert.equal(t.dtype, e.dtype);
        assert.deepEqual(t.shape, e.shape);
        assert.ok(t.data instanceof (e.dtype === "F64" ? Float64Array : Float32Array));
        // Object.is per element: exact, and -0 stays -0
        assert.deepEqual(Array.from(t.data), e.values);
      }
    });

    test(`encode ${file}`, () => {
      const tensors = Object.fromEntries(entry.tensors.map((e) => [e.name, asTensor(e)]));
      const meta = entry.metadata === null ? undefined : Object.fromEntries(entry.metadata);
      assert.equal(hex(encodeSafetensors(tensors, meta)), hex(readBytes(`safetensors/${file}`)));
    });
  }

  for (const [file, { why }] of Object.entries(manifest.invalid)) {
    test(`refuse ${file} (${why})`, () => {
      assert.throws(() => decodeSafetensors(readBytes(`safetensors/${file}`)), SafetensorsError);
    });
  }

  test("float32 data written as F64 and float64 data as F32 convert", () => {
    const body = encodeSafetensors({
      a: { data: Float32Array.of(0.5, -1), shape: [2], dtype: "F64" },
      b: { data: Float64Array.of(0.25), shape: [], dtype: "F32" },
    });
    const { tensors } = decodeSafetensors(body);
    assert.ok(tensors.a!.data instanceof Float64Array);
    assert.deepEqual(Array.from(tensors.a!.data), [0.5, -1]);
    assert.deepEqual(Array.from(tensors.b!.data), [0.25]);
  });

  test("a decoded view of a larger buffer works (unaligned offsets)", () => {
    const body = encodeSafetensors({ w: tensor(Float32Array.of(1, 2, 3)) });
    const big = new Uint8Array(body.length + 3);
    big.set(body, 3);
    assert.deepEqual(Array.from(decodeSafetensors(big.subarray(3)).tensors.w!.data), [1, 2, 3]);
  });

  test("names are arbitrary strings, __proto__ and integer-like ones included", () => {
    const tensors: Record<string, Tensor> = {};
    Object.defineProperty(tensors, "__proto__", { value: tensor([1]), enumerable: true });
    tensors["10"] = tensor([2]);
    tensors["ß.w"] = tensor([3]);
    const back = decodeSafetensors(encodeSafetensors(tensors)).tensors;
    assert.deepEqual(Object.getOwnPropertyNames(back).sort(), ["10", "__proto__", "ß.w"]);
  });
});

describe("half precision", () => {
  test("every F16 bit pattern survives decode -> encode", () => {
    for (let h = 0; h < 0x10000; h++) {
      const v = fromF16Bits(h);
      if (Number.isNaN(v)) assert.ok(Number.isNaN(fromF16Bits(toF16Bits(v))));
      else assert.equal(toF16Bits(v), h, `0x${h.toString(16)}`);
    }
  });

  test("F16 rounds to nearest even, overflows to Inf, underflows to 0", () => {
    assert.equal(toF16Bits(1 + 2 ** -11), 0x3c00); // tie -> even
    assert.equal(toF16Bits(1 + 3 * 2 ** -11), 0x3c02); // tie -> even (up)
    assert.equal(toF16Bits(65520), 0x7c00);
    assert.equal(toF16Bits(2 ** -25), 0); // tie with 0 -> 0
    assert.equal(toF16Bits(-(2 ** -24)), 0x8001);
    assert.equal(toF16Bits(0.1), 0x2e66);
  });

  test("BF16 rounds to nearest even", () => {
    for (let h = 0; h < 0x10000; h += 7) {
      const v = fromBF16Bits(h);
      if (!Number.isNaN(v)) assert.equal(toBF16Bits(v), h);
    }
    assert.equal(toBF16Bits(0.1), 0x3dcd);
    assert.equal(toBF16Bits(1 + 2 ** -8), 0x3f80); // tie -> even
    assert.equal(toBF16Bits(1 + 3 * 2 ** -8), 0x3f82);
  });
});

describe("JSON tensors", () => {
  test("body layout and non-finite values left for the server to name", () => {
    const body = jsonBody({ loss: 0.5 }, "grads", { w: tensor(Float32Array.of(0.5, NaN), [1, 2]) });
    assert.equal(body, '{"loss":0.5,"grads":{"w":{"shape":[1,2],"dtype":"float32","data":[0.5,NaN]}}}');
    assert.equal(jsonBody({}, "params", {}), '{"params":{}}');
  });
});
