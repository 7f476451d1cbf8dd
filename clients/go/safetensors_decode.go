package optd

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"math/bits"
	"sort"
	"strconv"
)

type entry struct {
	name       string
	dtype      DType
	shape      []int
	begin, end uint64
}

// DecodeSafetensors parses a body as strictly as the server: offsets start at 0,
// are contiguous and end with the body; dtypes are F16/BF16/F32/F64; shape x itemsize
// equals the byte length; names are unique. F16 and BF16 are widened to float32.
func DecodeSafetensors(body []byte) (Safetensors, error) {
	var f Safetensors
	if len(body) < 8 {
		return f, stErr("%d bytes, shorter than the 8-byte header length", len(body))
	}
	n := binary.LittleEndian.Uint64(body)
	if n > uint64(len(body)-8) {
		return f, stErr("header length %d exceeds the %d bytes that follow", n, len(body)-8)
	}
	raw, err := objectFields(body[8 : 8+n])
	if err != nil {
		return f, err
	}
	var entries []entry
	for _, kv := range raw {
		if kv.key == "__metadata__" {
			if f.Metadata, err = parseMetadata(kv.value); err != nil {
				return f, err
			}
			continue
		}
		e, err := parseEntry(kv.key, kv.value)
		if err != nil {
			return f, err
		}
		entries = append(entries, e)
	}
	sort.SliceStable(entries, func(i, j int) bool {
		a, b := entries[i], entries[j]
		return a.begin < b.begin || (a.begin == b.begin && a.end < b.end)
	})
	data := body[8+n:]
	var pos uint64
	for _, e := range entries {
		if e.begin != pos {
			return f, stErr("tensor %q leaves a gap or overlaps the previous one", e.name)
		}
		pos = e.end
	}
	if pos != uint64(len(data)) {
		return f, stErr("tensors cover %d data bytes but the body holds %d", pos, len(data))
	}
	f.Tensors = make(Tensors, len(entries))
	f.Order = make([]string, 0, len(entries))
	for _, e := range entries {
		f.Tensors[e.name] = readData(data[e.begin:e.end], e.dtype, e.shape)
		f.Order = append(f.Order, e.name)
	}
	return f, nil
}

type field struct {
	key   string
	value json.RawMessage
}

// objectFields reads a JSON object's members in order, refusing repeated keys.
func objectFields(header []byte) ([]field, error) {
	dec := json.NewDecoder(bytes.NewReader(header))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, stErr("header is not a JSON object")
	}
	var out []field
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, stErr("header is not JSON (%v)", err)
		}
		key := tok.(string)
		if seen[key] {
			return nil, stErr("header names %q twice", key)
		}
		seen[key] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, stErr("header is not JSON (%v)", err)
		}
		out = append(out, field{key, v})
	}
	if _, err := dec.Token(); err != nil {
		return nil, stErr("header is not JSON (%v)", err)
	}
	if _, err := dec.Token(); err == nil {
		return nil, stErr("header has data after the object")
	}
	return out, nil
}

func parseMetadata(raw json.RawMessage) (map[string]string, error) {
	if string(raw) == "null" {
		return nil, nil
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, stErr("__metadata__ is not an object")
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		s, ok := v.(string)
		if !ok {
			return nil, stErr("__metadata__[%q] is not a string", k)
		}
		out[k] = s
	}
	return out, nil
}

func parseEntry(name string, raw json.RawMessage) (entry, error) {
	var e struct {
		DType   *string       `json:"dtype"`
		Shape   []json.Number `json:"shape"`
		Offsets []json.Number `json:"data_offsets"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&e); err != nil || e.DType == nil || e.Shape == nil {
		return entry{}, stErr("tensor %q: entry needs dtype, shape and data_offsets", name)
	}
	size, ok := uint64(itemSize[DType(*e.DType)]), true
	if size == 0 {
		return entry{}, stErr("tensor %q: dtype %q is not F16, BF16, F32 or F64", name, *e.DType)
	}
	shape := make([]int, len(e.Shape))
	for i, d := range e.Shape {
		v, err := strconv.ParseUint(string(d), 10, 63)
		if err != nil {
			return entry{}, stErr("tensor %q: bad shape", name)
		}
		shape[i] = int(v)
		hi, lo := bits.Mul64(size, v)
		size, ok = lo, ok && hi == 0
	}
	if len(e.Offsets) != 2 {
		return entry{}, stErr("tensor %q: bad data_offsets", name)
	}
	begin, err1 := strconv.ParseUint(string(e.Offsets[0]), 10, 64)
	end, err2 := strconv.ParseUint(string(e.Offsets[1]), 10, 64)
	if err1 != nil || err2 != nil || end < begin {
		return entry{}, stErr("tensor %q: bad data_offsets", name)
	}
	if !ok || size != end-begin {
		return entry{}, stErr("tensor %q: shape %v of %s does not fill data_offsets [%d, %d]", name, shape, *e.DType, begin, end)
	}
	return entry{name, DType(*e.DType), shape, begin, end}, nil
}

func readData(b []byte, dtype DType, shape []int) Tensor {
	le := binary.LittleEndian
	t := Tensor{Shape: shape, DType: dtype}
	n := len(b) / itemSize[dtype]
	if dtype == F64 {
		t.Data64 = make([]float64, n)
		for i := range t.Data64 {
			t.Data64[i] = math.Float64frombits(le.Uint64(b[8*i:]))
		}
		return t
	}
	t.Data = make([]float32, n)
	for i := range t.Data {
		switch dtype {
		case F32:
			t.Data[i] = math.Float32frombits(le.Uint32(b[4*i:]))
		case F16:
			t.Data[i] = FromF16Bits(le.Uint16(b[2*i:]))
		case BF16:
			t.Data[i] = FromBF16Bits(le.Uint16(b[2*i:]))
		}
	}
	return t
}
