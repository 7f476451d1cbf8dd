package optd

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"math"
	"reflect"
	"testing"
)

// bfloat16 and int8-block encoders against testdata/wire/compress.json (DESIGN §3).

type compressVectors struct {
	BFloat16 []struct {
		Name        string `json:"name"`
		Float32Hex  string `json:"float32_hex"`
		BFloat16Hex string `json:"bfloat16_hex"`
	} `json:"bfloat16"`
	Int8Block []struct {
		Name           string `json:"name"`
		Block          int    `json:"block"`
		Shape          []int  `json:"shape"`
		Float32Hex     string `json:"float32_hex"`
		Int8Hex        string `json:"int8_hex"`
		ScaleHex       string `json:"scale_hex"`
		DequantizedHex string `json:"dequantized_hex"`
	} `json:"int8_block"`
}

func f32FromHex(t *testing.T, h string) []float32 {
	t.Helper()
	b, err := hex.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

func f32Hex(v []float32) string {
	b := make([]byte, 0, 4*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return hex.EncodeToString(b)
}

func TestCompressGolden(t *testing.T) {
	var v compressVectors
	readWireJSON(t, "compress.json", &v)
	if len(v.BFloat16) == 0 || len(v.Int8Block) == 0 {
		t.Fatal("no vectors")
	}
	for _, c := range v.BFloat16 {
		var b []byte
		for _, h := range BFloat16Bits(f32FromHex(t, c.Float32Hex)) {
			b = binary.LittleEndian.AppendUint16(b, h)
		}
		if got := hex.EncodeToString(b); got != c.BFloat16Hex {
			t.Errorf("bfloat16 %s: %s, want %s", c.Name, got, c.BFloat16Hex)
		}
	}
	for _, c := range v.Int8Block {
		q, scale, err := Int8Block(f32FromHex(t, c.Float32Hex), c.Block)
		if err != nil {
			t.Fatal(c.Name, err)
		}
		qb := make([]byte, len(q))
		for i, x := range q {
			qb[i] = byte(x)
		}
		if got := hex.EncodeToString(qb); got != c.Int8Hex {
			t.Errorf("int8-block %s: q %s, want %s", c.Name, got, c.Int8Hex)
		}
		if got := f32Hex(scale); got != c.ScaleHex {
			t.Errorf("int8-block %s: scale %s, want %s", c.Name, got, c.ScaleHex)
		}
		if got := f32Hex(DequantizeInt8Block(q, scale, c.Block)); got != c.DequantizedHex {
			t.Errorf("int8-block %s: dequantized %s, want %s", c.Name, got, c.DequantizedHex)
		}
	}
}

func TestInt8BlockRefuses(t *testing.T) {
	if _, _, err := Int8Block([]float32{1}, 0); err == nil {
		t.Fatal("block 0 accepted")
	}
	if _, _, err := Int8Block([]float32{1, float32(math.Inf(1))}, 4); err == nil {
		t.Fatal("Inf accepted")
	}
	if _, err := NewClient("http://x", WithJSON()).gradBody(Tensors{"w": NewTensor([]float32{1})}, nil, StepOptions{GradDType: GradInt8}); err == nil {
		t.Fatal("int8 over JSON accepted")
	}
}

// The int8 body: F32 scales first, then the I8 values, metadata with the block.
func TestInt8Body(t *testing.T) {
	c := NewClient("http://x")
	body, err := c.gradBody(Tensors{"w": NewTensor([]float32{0.5, -1, 0.25}), "b": Scalar(2)},
		map[string]any{"worker": "é"}, StepOptions{GradDType: GradInt8, Block: 2})
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(body)
	want := `{"__metadata__":{"optd.block":"2","optd.quant":"int8-block","worker":"é"},` +
		`"b.__scale__":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},` +
		`"w.__scale__":{"dtype":"F32","shape":[2],"data_offsets":[4,12]},` +
		`"b":{"dtype":"I8","shape":[],"data_offsets":[12,13]},` +
		`"w":{"dtype":"I8","shape":[3],"data_offsets":[13,16]}}`
	if got := string(body[8 : 8+n]); got[:len(want)] != want {
		t.Fatalf("header %s", got)
	}
	if got := body[8+n+12:]; !reflect.DeepEqual(got, []byte{127, 64, 129, 127}) {
		t.Fatalf("data %v", got)
	}
}

// A float32 session stepped with bfloat16 and int8 gradients, answered in bfloat16.
func TestServerCompressed(t *testing.T) {
	forStores(t, func(t *testing.T, url string) {
		ctx := context.Background()
		for _, wireJSON := range []bool{false, true} {
			var opts []Option
			if wireJSON {
				opts = append(opts, WithJSON())
			}
			c := NewClient(url, opts...)
			s, err := c.CreateSession(ctx, CreateRequest{Optimizer: "sgd", Hyperparams: map[string]any{"lr": 1.0},
				Params: Tensors{"w": NewTensor([]float32{0, 0, 0, 0}, 2, 2)}})
			if err != nil {
				t.Fatal(err)
			}
			g := []float32{1.001, -0.5, 0.25, 0.3}
			r, err := s.Step(ctx, Tensors{"w": NewTensor(g, 2, 2)}, StepOptions{GradDType: GradBFloat16, ParamsDType: ParamsBFloat16})
			if err != nil {
				t.Fatal(err)
			}
			want := BFloat16Round([]float32{-1.001, 0.5, -0.25, -0.3})
			if w := r.Params["w"]; w.DType != BF16 || !reflect.DeepEqual(w.Data, want) || !reflect.DeepEqual(w.Shape, []int{2, 2}) {
				t.Fatal(wireJSON, w, want)
			}
			p, err := s.Params(ctx, ParamsOptions{})
			if err != nil || p.Params["w"].DType == BF16 {
				t.Fatal(p, err)
			}
			if wireJSON {
				continue
			}
			r, err = s.Step(ctx, Tensors{"w": NewTensor(g, 2, 2)}, StepOptions{GradDType: GradInt8, Block: 3})
			if err != nil {
				t.Fatal(err)
			}
			q, scale, _ := Int8Block(g, 3)
			dq := DequantizeInt8Block(q, scale, 3)
			for i := range dq {
				if got, w := r.Params["w"].Data[i], p.Params["w"].Data[i]-dq[i]; got != w {
					t.Fatalf("[%d] %v != %v", i, got, w)
				}
			}
		}
	})
}
