/** bfloat16 and int8-block encoders against testdata/wire/compress.json (DESIGN §3). */

import assert from "node:assert/strict";
import { test } from "node:test";
import { bfloat16Bits, dequantizeInt8Block, int8Block } from "@optd/client";
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
