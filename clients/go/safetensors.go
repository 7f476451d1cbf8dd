package optd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"unicode/utf8"
)

// Safetensors is one safetensors file: tensors, their order, and __metadata__.
type Safetensors struct {
	Tensors Tensors
	// Order lists the names in file order. Encoding uses it when it is set (it must
	// name every tensor once), else the names sorted.
	Order []string
	// Metadata is written sorted by key; nil writes no __metadata__, empty writes {}.
	Metadata map[string]string
}

// ErrSafetensors is wrapped by every decoding error.
var ErrSafetensors = errors.New("invalid safetensors")

func stErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrSafetensors, fmt.Sprintf(format, args...))
}

// EncodeSafetensors writes the bytes the server's encoder writes: a compact JSON
// header (__metadata__ first, then the tensors in order) padded with spaces to a
// multiple of 8, then the data little-endian, back to back.
func EncodeSafetensors(f Safetensors) ([]byte, error) {
	order := f.Order
	if order == nil {
		order = sortedNames(f.Tensors)
	} else if len(order) != len(f.Tensors) {
		return nil, fmt.Errorf("optd: Order names %d tensors, Tensors holds %d", len(order), len(f.Tensors))
	}
	var h bytes.Buffer
	h.WriteByte('{')
	if f.Metadata != nil {
		h.WriteString(`"__metadata__":{`)
		keys := make([]string, 0, len(f.Metadata))
		for k := range f.Metadata {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for i, k := range keys {
			if i > 0 {
				h.WriteByte(',')
			}
			if err := quote(&h, k); err != nil {
				return nil, err
			}
			h.WriteByte(':')
			if err := quote(&h, f.Metadata[k]); err != nil {
				return nil, err
			}
		}
		h.WriteByte('}')
	}
	offset := 0
	for i, name := range order {
		t, ok := f.Tensors[name]
		if !ok || name == "" || name == "__metadata__" {
			return nil, fmt.Errorf("optd: cannot write tensor %q", name)
		}
		if err := t.check(name); err != nil {
			return nil, err
		}
		if i > 0 || f.Metadata != nil {
			h.WriteByte(',')
		}
		if err := quote(&h, name); err != nil {
			return nil, err
		}
		n := t.Len() * encodeSize(t.WireDType())
		fmt.Fprintf(&h, `:{"dtype":"%s","shape":[%s],"data_offsets":[%d,%d]}`, t.WireDType(), joinInts(t.Shape), offset, offset+n)
		offset += n
	}
	h.WriteByte('}')
	for h.Len()%8 != 0 {
		h.WriteByte(' ')
	}
	out := make([]byte, 8, 8+h.Len()+offset)
	binary.LittleEndian.PutUint64(out, uint64(h.Len()))
	out = append(out, h.Bytes()...)
	for _, name := range order {
		out = appendData(out, f.Tensors[name])
	}
	return out, nil
}

// quote writes a JSON string as orjson (the server) and JSON.stringify do: only '"',
// '\\' and control characters are escaped, \b \f \n \r \t in short form.
func quote(b *bytes.Buffer, s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("optd: %q is not valid UTF-8", s)
	}
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if r < 0x20 {
				fmt.Fprintf(b, `\u%04x`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return nil
}

func joinInts(v []int) string {
	var b []byte
	for i, d := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(d), 10)
	}
	return string(b)
}

func appendData(out []byte, t Tensor) []byte {
	le := binary.LittleEndian
	for i, n := 0, t.Len(); i < n; i++ {
		v := t.At(i)
		switch t.WireDType() {
		case F64:
			out = le.AppendUint64(out, math.Float64bits(v))
		case F32:
			out = le.AppendUint32(out, math.Float32bits(float32(v)))
		case F16:
			out = le.AppendUint16(out, F16Bits(float32(v)))
		case BF16:
			out = le.AppendUint16(out, BF16Bits(float32(v)))
		case I8: // int8-block values (compress.go), -127..127
			out = append(out, byte(int8(v)))
		}
	}
	return out
}
