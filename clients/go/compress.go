package optd

import (
	"fmt"
	"math"
	"sort"
	"strconv"
)

// Compressed gradients (DESIGN.md §3, "Compressed tensors"), bit-identical to the
// Python and TypeScript SDKs (testdata/wire/compress.json).
//
// int8-block: row-major float32 values in blocks of `block`; per block
// scale = float32(absmax / 127), q = roundHalfEven(float32(x / scale)) clamped to
// [-127, 127], 0 where the scale is 0. A gradient w travels as an I8 tensor w and an
// F32 tensor w.__scale__, with __metadata__ {"optd.quant": "int8-block",
// "optd.block": "<block>"}. (A float32 quotient computed in float64 and rounded once
// more is correctly rounded: 53 >= 2*24 + 2.)

// Gradient dtypes on the wire (StepOptions.GradDType).
const (
	GradFloat32  = "float32"  // exact (float64 sessions: Data64 travels as F64)
	GradBFloat16 = "bfloat16" // rounded to nearest even, half the bytes
	GradInt8     = "int8"     // int8-block quantized, about a quarter (safetensors only)
)

// Parameter dtypes of answers (StepOptions.ParamsDType, ParamsOptions.ParamsDType),
// sent as the Optd-Response-Dtype header.
const (
	ParamsFloat32  = "float32"
	ParamsBFloat16 = "bfloat16"
)

// I8 is the int8-block quantized gradients' dtype; only the step encoder writes it.
const I8 DType = "I8"

// DefaultBlock is the int8-block block size used when StepOptions.Block is 0.
const DefaultBlock = 256

// ScaleSuffix names a quantized tensor's scales: "w" + ScaleSuffix.
const ScaleSuffix = ".__scale__"

// BFloat16Bits is the bfloat16 bit pattern of every value (rounded to nearest even).
func BFloat16Bits(values []float32) []uint16 {
	out := make([]uint16, len(values))
	for i, v := range values {
		out[i] = BF16Bits(v)
	}
	return out
}

// BFloat16Round is every value rounded to bfloat16, as float32.
func BFloat16Round(values []float32) []float32 {
	out := make([]float32, len(values))
	for i, v := range values {
		out[i] = FromBF16Bits(BF16Bits(v))
	}
	return out
}

// Int8Block quantizes float32 values (flat, row-major) in blocks of `block` (1 to
// 2^20): int8 values in -127..127 and one float32 scale per block.
func Int8Block(values []float32, block int) (q []int8, scale []float32, err error) {
	if block < 1 || block > 1<<20 {
		return nil, nil, fmt.Errorf("optd: block must be 1 to 2**20, got %d", block)
	}
	n := len(values)
	blocks := (n + block - 1) / block
	q, scale = make([]int8, n), make([]float32, blocks)
	for b := 0; b < blocks; b++ {
		lo, hi := b*block, (b+1)*block
		if hi > n {
			hi = n
		}
		absmax := float32(0)
		for _, v := range values[lo:hi] {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nil, nil, fmt.Errorf("optd: cannot quantize non-finite values")
			}
			if a := float32(math.Abs(float64(v))); a > absmax {
				absmax = a
			}
		}
		s := float32(float64(absmax) / 127)
		scale[b] = s
		if s == 0 {
			continue
		}
		for i := lo; i < hi; i++ {
			r := math.RoundToEven(float64(float32(float64(values[i]) / float64(s))))
			q[i] = int8(math.Max(-127, math.Min(127, r)))
		}
	}
	return q, scale, nil
}

// DequantizeInt8Block is what the server makes of (q, scale): float32 q[i]*scale[i/block].
func DequantizeInt8Block(q []int8, scale []float32, block int) []float32 {
	out := make([]float32, len(q))
	for i, v := range q {
		out[i] = float32(v) * scale[i/block]
	}
	return out
}

// gradTensors converts gradients for the wire: bfloat16 (rounded, named BF16) or
// int8-block (an I8 tensor and its F32 scales each, plus the metadata to send).
func gradTensors(grads Tensors, dtype string, block int, json bool) (Tensors, map[string]string, error) {
	switch dtype {
	case "", GradFloat32:
		return grads, nil, nil
	case GradBFloat16:
		out := make(Tensors, len(grads))
		for name, t := range grads {
			if err := t.check(name); err != nil {
				return nil, nil, err
			}
			out[name] = Tensor{Shape: t.Shape, Data: BFloat16Round(float32s(t)), DType: BF16}
		}
		return out, nil, nil
	case GradInt8:
		if json {
			return nil, nil, fmt.Errorf("optd: int8 gradients travel as safetensors only (not WithJSON)")
		}
		if block == 0 {
			block = DefaultBlock
		}
		out := make(Tensors, 2*len(grads))
		for name, t := range grads {
			if err := t.check(name); err != nil {
				return nil, nil, err
			}
			q, scale, err := Int8Block(float32s(t), block)
			if err != nil {
				return nil, nil, fmt.Errorf("%v (tensor %q)", err, name)
			}
			data := make([]float32, len(q))
			for i, v := range q {
				data[i] = float32(v)
			}
			out[name] = Tensor{Shape: t.Shape, Data: data, DType: I8}
			out[name+ScaleSuffix] = NewTensor(scale)
		}
		return out, map[string]string{"optd.quant": "int8-block", "optd.block": strconv.Itoa(block)}, nil
	}
	return nil, nil, fmt.Errorf("optd: gradient dtype %q is not float32, bfloat16 or int8", dtype)
}

// wideFirst orders names by item size, widest first, then by name (aligned data).
func wideFirst(t Tensors) []string {
	names := sortedNames(t)
	sort.SliceStable(names, func(i, j int) bool {
		return encodeSize(t[names[i]].WireDType()) > encodeSize(t[names[j]].WireDType())
	})
	return names
}

func encodeSize(d DType) int {
	if d == I8 {
		return 1
	}
	return itemSize[d]
}

func float32s(t Tensor) []float32 {
	if t.Data64 == nil {
		return t.Data
	}
	out := make([]float32, len(t.Data64))
	for i, v := range t.Data64 {
		out[i] = float32(v)
	}
	return out
}

// gradBody is a step body: the gradients in opts.GradDType, the fields as JSON
// members or as __metadata__ (with the int8-block metadata when quantized).
func (c *Client) gradBody(grads Tensors, fields map[string]any, opts StepOptions) ([]byte, error) {
	tensors, quant, err := gradTensors(grads, opts.GradDType, opts.Block, c.json)
	if err != nil || quant == nil {
		if err != nil {
			return nil, err
		}
		return c.tensorBody(tensors, "grads", fields)
	}
	meta, err := metadataFields(quant, fields)
	if err != nil {
		return nil, err
	}
	return EncodeSafetensors(Safetensors{Tensors: tensors, Order: wideFirst(tensors), Metadata: meta})
}
