/** bfloat16 and int8-block encoders against testdata/wire/compress.json (DESIGN §3). */

import assert from "node:assert/strict";
import { test } from "node:test";
import { bfloat16Bits, dequantizeInt8Block, encodeInt8Block, int8Block } from "@optd/client";
import { hex, readJSON } from "./helpers.js";

const vectors = readJSON("compress.json");
const f32 = (h: string): Float32Array => new Float32Array(new Uint8Array(Buffer.from(h, "hex")).buffer);
const bytes = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

for (const c of vectors.bfloat16) {
  test(`bfloat16 ${c.name}`, () => {
    assert.equal(hex(bytes(bfloat16Bits(f32(c.float32_hex)))), c.bfloat16_hex);
  });
}

for (const c of vectors.int8_block) {
  test(`int8-block ${c.name}`, () => {
    const { q, scale } = int8Block(f32(c.float32_hex), c.block);
    assert.equal(hex(bytes(q)), c.int8_hex);
    assert.equal(hex(bytes(scale)), c.scale_hex);
    assert.equal(hex(bytes(dequantizeInt8Block(q, scale, c.block))), c.dequantized_hex);
  });
}

test("int8-block step body: F32 scales first, then I8, metadata with the block", () => {
  const body = encodeInt8Block(
    { w: { data: Float32Array.of(0.5, -1, 0.25), shape: [3] }, b: { data: Float32Array.of(2), shape: [] } },
    { worker: "é" },
    2,
  );
  const n = Number(new DataView(body.buffer).getBigUint64(0, true));
  const header = new TextDecoder().decode(body.subarray(8, 8 + n)).trimEnd();
  assert.equal(
    header,
    '{"__metadata__":{"worker":"é","optd.quant":"int8-block","optd.block":"2"},' +
      '"w.__scale__":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},' +
      '"b.__scale__":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},' +
      '"w":{"dtype":"I8","shape":[3],"data_offsets":[12,15]},' +
      '"b":{"dtype":"I8","shape":[],"data_offsets":[15,16]}}',
  );
  assert.deepEqual(Array.from(new Int8Array(body.buffer, 8 + n + 12)), [64, -127, 127, 127]);
});
