package optd

import (
	"fmt"
	"math"
	"sort"
)

// DType is a wire dtype, as safetensors names it.
type DType string

// The dtypes optd accepts. F16 and BF16 are decoded into Tensor.Data (float32).
const (
	F16  DType = "F16"
	BF16 DType = "BF16"
	F32  DType = "F32"
	F64  DType = "F64"
)

var itemSize = map[DType]int{F16: 2, BF16: 2, F32: 4, F64: 8}

// Tensor is a flat, row-major array and its shape. Exactly one of Data (float32) and
// Data64 (float64) holds the values. DType is the dtype on the wire: decoded tensors
// say what the server sent; when sending, "" means F32 for Data and F64 for Data64,
// and F16 or BF16 halve a gradient's bytes (rounded to nearest even).
type Tensor struct {
	Shape  []int
	Data   []float32
	Data64 []float64
	DType  DType
}

// Tensors maps parameter names to tensors.
type Tensors map[string]Tensor

// NewTensor is a float32 tensor; the shape defaults to 1-D.
func NewTensor(data []float32, shape ...int) Tensor {
	if shape == nil {
		shape = []int{len(data)}
	}
	return Tensor{Shape: shape, Data: data}
}

// NewTensor64 is a float64 tensor; the shape defaults to 1-D.
func NewTensor64(data []float64, shape ...int) Tensor {
	if shape == nil {
		shape = []int{len(data)}
	}
	return Tensor{Shape: shape, Data64: data}
}

// Scalar is a 0-dimensional float32 tensor.
func Scalar(v float32) Tensor { return Tensor{Shape: []int{}, Data: []float32{v}} }

// Len is the number of values.
func (t Tensor) Len() int {
	if t.Data64 != nil {
		return len(t.Data64)
	}
	return len(t.Data)
}

// At is the i-th value (flat, row-major) as float64.
func (t Tensor) At(i int) float64 {
	if t.Data64 != nil {
		return t.Data64[i]
	}
	return float64(t.Data[i])
}

// Float64s returns the values as float64 (a copy unless the tensor is float64).
func (t Tensor) Float64s() []float64 {
	if t.Data64 != nil {
		return t.Data64
	}
	out := make([]float64, len(t.Data))
	for i, v := range t.Data {
		out[i] = float64(v)
	}
	return out
}

// WireDType is the dtype the tensor is sent as.
func (t Tensor) WireDType() DType {
	switch {
	case t.DType != "":
		return t.DType
	case t.Data64 != nil:
		return F64
	}
	return F32
}

func (t Tensor) check(name string) error {
	if t.Data != nil && t.Data64 != nil {
		return fmt.Errorf("optd: tensor %q: set Data or Data64, not both", name)
	}
	n := 1
	for _, d := range t.Shape {
		if d < 0 {
			return fmt.Errorf("optd: tensor %q: negative dimension in shape %v", name, t.Shape)
		}
		n *= d
	}
	if n != t.Len() {
		return fmt.Errorf("optd: tensor %q: shape %v needs %d values, got %d", name, t.Shape, n, t.Len())
	}
	if encodeSize(t.WireDType()) == 0 {
		return fmt.Errorf("optd: tensor %q: dtype %q is not F16, BF16, F32 or F64", name, t.DType)
	}
	return nil
}

func sortedNames(t Tensors) []string {
	names := make([]string, 0, len(t))
	for n := range t {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// F16Bits converts to IEEE 754 binary16, rounding to nearest even.
func F16Bits(v float32) uint16 {
	x := math.Float32bits(v)
	sign := uint16(x>>16) & 0x8000
	exp := int(x>>23) & 0xff
	mant := x & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		if e < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint(14 - e)
		half := mant >> shift
		rest, mid := mant&(1<<shift-1), uint32(1)<<(shift-1)
		if rest > mid || (rest == mid && half&1 == 1) {
			half++
		}
		return sign | uint16(half)
	}
	bits := uint32(sign) | uint32(e)<<10 | mant>>13
	if rest := mant & 0x1fff; rest > 0x1000 || (rest == 0x1000 && bits&1 == 1) {
		bits++
	}
	return uint16(bits)
}

// FromF16Bits converts binary16 bits to float32 (exactly).
func FromF16Bits(h uint16) float32 {
	sign := float32(1)
	if h&0x8000 != 0 {
		sign = -1
	}
	exp, mant := int(h>>10)&0x1f, float32(h&0x3ff)
	switch exp {
	case 0:
		return sign * mant * float32(math.Ldexp(1, -24))
	case 0x1f:
		if mant != 0 {
			return float32(math.NaN())
		}
		return sign * float32(math.Inf(1))
	}
	return sign * (1 + mant/1024) * float32(math.Ldexp(1, exp-15))
}

// BF16Bits converts to bfloat16 (the top half of float32), rounding to nearest even.
func BF16Bits(v float32) uint16 {
	x := math.Float32bits(v)
	if x&0x7f800000 == 0x7f800000 && x&0x7fffff != 0 {
		return uint16(x>>16) | 0x40 // quiet NaN
	}
	return uint16((x + 0x7fff + (x>>16)&1) >> 16)
}

// FromBF16Bits converts bfloat16 bits to float32 (exactly).
func FromBF16Bits(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }
