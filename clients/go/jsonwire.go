package optd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
)

var jsonDType = map[DType]string{F16: "float16", BF16: "bfloat16", F32: "float32", F64: "float64"}

// appendTensorJSON writes {"shape":[..],"dtype":"float32","data":[..]}. Values are
// written exactly (float32 widened to float64 digits, so the server's parse cannot
// round twice); non-finite values as NaN/Infinity, which the server refuses with
// 422 invalid-tensor naming the tensor.
func appendTensorJSON(b []byte, t Tensor) []byte {
	b = append(b, `{"shape":[`...)
	b = append(b, joinInts(t.Shape)...)
	b = append(b, `],"dtype":"`...)
	b = append(b, jsonDType[t.WireDType()]...)
	b = append(b, `","data":[`...)
	for i, n := 0, t.Len(); i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		switch v := t.At(i); {
		case math.IsNaN(v):
			b = append(b, "NaN"...)
		case math.IsInf(v, 1):
			b = append(b, "Infinity"...)
		case math.IsInf(v, -1):
			b = append(b, "-Infinity"...)
		default:
			b = strconv.AppendFloat(b, v, 'g', -1, 64)
		}
	}
	return append(b, "]}"...)
}

// jsonBody is {...fields, key: {name: tensor}} with the tensors sorted by name.
func jsonBody(fields map[string]any, key string, tensors Tensors) ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	if len(fields) > 0 {
		head, err := json.Marshal(fields)
		if err != nil {
			return nil, err
		}
		b.Write(head[1 : len(head)-1])
		b.WriteByte(',')
	}
	_ = quote(&b, key)
	b.WriteString(":{")
	for i, name := range sortedNames(tensors) {
		t := tensors[name]
		if err := t.check(name); err != nil {
			return nil, err
		}
		if t.WireDType() == I8 {
			return nil, fmt.Errorf("optd: tensor %q: I8 travels as safetensors only", name)
		}
		if i > 0 {
			b.WriteByte(',')
		}
		if err := quote(&b, name); err != nil {
			return nil, err
		}
		b.WriteByte(':')
		b.Write(appendTensorJSON(nil, t))
	}
	b.WriteString("}}")
	return b.Bytes(), nil
}

type jsonTensor struct {
	Shape []int         `json:"shape"`
	DType string        `json:"dtype"`
	Data  []json.Number `json:"data"`
}

// decode parses float32 values straight to float32 (no double rounding).
func (j jsonTensor) decode(name string) (Tensor, error) {
	n := 1
	for _, d := range j.Shape {
		n *= d
	}
	if j.Shape == nil || n != len(j.Data) {
		return Tensor{}, fmt.Errorf("optd: malformed JSON tensor %q in the response", name)
	}
	t := Tensor{Shape: j.Shape}
	for code, s := range jsonDType {
		if s == j.DType {
			t.DType = code
		}
	}
	bitSize := 32
	if t.DType == F64 || t.DType == "" {
		bitSize, t.Data64 = 64, make([]float64, n)
	} else {
		t.Data = make([]float32, n)
	}
	for i, s := range j.Data {
		v, err := strconv.ParseFloat(string(s), bitSize)
		if err != nil {
			return Tensor{}, fmt.Errorf("optd: malformed JSON tensor %q: %v", name, err)
		}
		if bitSize == 64 {
			t.Data64[i] = v
		} else {
			t.Data[i] = float32(v)
		}
	}
	return t, nil
}

func decodeJSONTensors(raw map[string]jsonTensor) (Tensors, error) {
	out := make(Tensors, len(raw))
	for name, j := range raw {
		t, err := j.decode(name)
		if err != nil {
			return nil, err
		}
		out[name] = t
	}
	return out, nil
}
