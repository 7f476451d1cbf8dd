package optd

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"testing"
)

type goldenTensor struct {
	Name   string
	DType  DType
	Shape  []int
	Hex    string
	Values []float64
}

type goldenManifest struct {
	Files map[string]struct {
		Metadata [][2]string
		Tensors  []goldenTensor
	}
	Invalid map[string]struct{ Why, Problem string }
}

func manifest(t *testing.T) goldenManifest {
	var m goldenManifest
	readWireJSON(t, "safetensors/manifest.json", &m)
	if len(m.Files) == 0 || len(m.Invalid) == 0 {
		t.Fatal("empty manifest")
	}
	return m
}

func sameBits(a, b float64) bool { return math.Float64bits(a) == math.Float64bits(b) }

func TestGoldenDecode(t *testing.T) {
	for file, entry := range manifest(t).Files {
		f, err := DecodeSafetensors(readWire(t, "safetensors/"+file))
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		var names []string
		for _, g := range entry.Tensors {
			names = append(names, g.Name)
			got := f.Tensors[g.Name]
			if got.DType != g.DType || !reflect.DeepEqual(got.Shape, g.Shape) || got.Len() != len(g.Values) {
				t.Fatalf("%s/%s: got %s %v (%d values)", file, g.Name, got.DType, got.Shape, got.Len())
			}
			if (g.DType == F64) != (got.Data64 != nil) {
				t.Fatalf("%s/%s: F64 decodes to Data64, the rest to Data", file, g.Name)
			}
			for i, v := range g.Values {
				if !sameBits(got.At(i), v) {
					t.Fatalf("%s/%s[%d]: %v != %v", file, g.Name, i, got.At(i), v)
				}
			}
		}
		if !reflect.DeepEqual(f.Order, names) && len(names) > 0 {
			t.Fatalf("%s: order %v, want %v", file, f.Order, names)
		}
		want := map[string]string{}
		for _, kv := range entry.Metadata {
			want[kv[0]] = kv[1]
		}
		if len(f.Metadata)+len(want) > 0 && !reflect.DeepEqual(f.Metadata, want) {
			t.Fatalf("%s: metadata %q, want %q", file, f.Metadata, want)
		}
	}
}

func TestGoldenEncode(t *testing.T) {
	for file, entry := range manifest(t).Files {
		f := Safetensors{Tensors: Tensors{}, Order: []string{}}
		if entry.Metadata != nil {
			f.Metadata = map[string]string{}
			for _, kv := range entry.Metadata {
				f.Metadata[kv[0]] = kv[1]
			}
		}
		for _, g := range entry.Tensors {
			tt := Tensor{Shape: g.Shape, DType: g.DType}
			if g.DType == F64 {
				tt.Data64 = g.Values
			} else {
				tt.Data = make([]float32, len(g.Values))
				for i, v := range g.Values {
					tt.Data[i] = float32(v)
				}
			}
			f.Tensors[g.Name] = tt
			f.Order = append(f.Order, g.Name)
		}
		got, err := EncodeSafetensors(f)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if want := readWire(t, "safetensors/"+file); !bytes.Equal(got, want) {
			t.Fatalf("%s:\n got %q\nwant %q", file, got, want)
		}
	}
}

func TestGoldenInvalid(t *testing.T) {
	for file, bad := range manifest(t).Invalid {
		if _, err := DecodeSafetensors(readWire(t, "safetensors/"+file)); !errors.Is(err, ErrSafetensors) {
			t.Errorf("%s (%s): got %v, want ErrSafetensors", file, bad.Why, err)
		}
	}
}

func TestEncodeDefaultsAndConversions(t *testing.T) {
	f := Safetensors{Tensors: Tensors{
		"b": {Shape: []int{2}, Data: []float32{0.5, -1}, DType: F64},
		"a": {Shape: []int{}, Data64: []float64{0.25}, DType: F32},
	}}
	body, err := EncodeSafetensors(f)
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeSafetensors(body)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Order, []string{"a", "b"}) || back.Metadata != nil {
		t.Fatalf("sorted names, no metadata: %v %v", back.Order, back.Metadata)
	}
	if !reflect.DeepEqual(back.Tensors["b"].Data64, []float64{0.5, -1}) || back.Tensors["a"].Data[0] != 0.25 {
		t.Fatalf("conversions: %+v", back.Tensors)
	}
	if _, err := EncodeSafetensors(Safetensors{Tensors: Tensors{"x": {Shape: []int{3}, Data: []float32{1}}}}); err == nil {
		t.Fatal("a shape that does not match the data must be refused")
	}
}

func TestHalfPrecision(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		v := FromF16Bits(uint16(h))
		if v == v && F16Bits(v) != uint16(h) {
			t.Fatalf("F16 0x%04x -> %v -> 0x%04x", h, v, F16Bits(v))
		}
		b := FromBF16Bits(uint16(h))
		if b == b && BF16Bits(b) != uint16(h) {
			t.Fatalf("BF16 0x%04x -> %v -> 0x%04x", h, b, BF16Bits(b))
		}
	}
	cases := []struct {
		v    float64
		f16  uint16
		bf16 uint16
	}{
		{1 + math.Ldexp(1, -11), 0x3c00, 0x3f80}, // ties to even
		{1 + 3*math.Ldexp(1, -11), 0x3c02, 0x3f80},
		{1 + 3*math.Ldexp(1, -8), 0x3c0c, 0x3f82},
		{65520, 0x7c00, 0x4780},
		{math.Ldexp(1, -25), 0, 0x3300},
		{0.1, 0x2e66, 0x3dcd},
	}
	for _, c := range cases {
		if got := F16Bits(float32(c.v)); got != c.f16 {
			t.Errorf("F16(%v) = 0x%04x, want 0x%04x", c.v, got, c.f16)
		}
		if got := BF16Bits(float32(c.v)); got != c.bf16 {
			t.Errorf("BF16(%v) = 0x%04x, want 0x%04x", c.v, got, c.bf16)
		}
	}
}

func TestJSONBody(t *testing.T) {
	nan := float32(math.NaN())
	body, err := jsonBody(map[string]any{"loss": 0.5}, "grads", Tensors{
		"w": NewTensor([]float32{0.1, nan}, 1, 2),
		"b": NewTensor64([]float64{math.Inf(-1)}),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"loss":0.5,"grads":{"b":{"shape":[1],"dtype":"float64","data":[-Infinity]},` +
		`"w":{"shape":[1,2],"dtype":"float32","data":[0.10000000149011612,NaN]}}}`
	if string(body) != want {
		t.Fatalf("\n got %s\nwant %s", body, want)
	}
	if body, _ := jsonBody(nil, "params", Tensors{}); string(body) != `{"params":{}}` {
		t.Fatal(string(body))
	}
}
