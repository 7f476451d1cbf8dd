package optd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"reflect"
	"sort"
	"sync"
	"testing"
)

// Sharded sessions against a real `optd serve`: a session with Shards: 2 steps
// bit-identically to an unsharded one, and its params read whole; a step a dead client
// left half-applied is repaired.

const shardW = 120000 // w [3, 40000]: over 32768, so a cut falls inside it

type xorshift uint32

func (x *xorshift) next() float32 {
	*x ^= *x << 13
	*x ^= *x >> 17
	*x ^= *x << 5
	return float32(float64(*x)/(1<<32)*2 - 1)
}

func shardGrads(x *xorshift, scale float32) Tensors {
	w, b := make([]float32, shardW), make([]float32, 10)
	for i := range w {
		w[i] = x.next() * scale
	}
	for i := range b {
		b[i] = x.next() * scale
	}
	return Tensors{"w": NewTensor(w, 3, shardW/3), "b": NewTensor(b, 2, 5)}
}

func sameTensors(t *testing.T, what string, got, want Tensors) {
	t.Helper()
	names := func(ts Tensors) (n []string) {
		for k := range ts {
			n = append(n, k)
		}
		sort.Strings(n)
		return n
	}
	if !reflect.DeepEqual(names(got), names(want)) {
		t.Fatalf("%s: names %v != %v", what, names(got), names(want))
	}
	for k, w := range want {
		g := got[k]
		if !reflect.DeepEqual(g.Shape, w.Shape) || !reflect.DeepEqual(g.Float64s(), w.Float64s()) {
			t.Fatalf("%s: %s differs (shape %v vs %v)", what, k, g.Shape, w.Shape)
		}
	}
}

func TestServerShardedBitIdentical(t *testing.T) {
	forStores(t, func(t *testing.T, url string) {
		ctx := context.Background()
		c := NewClient(url)
		x := xorshift(7)
		req := CreateRequest{Optimizer: "adam", Hyperparams: map[string]any{"lr": 0.01}, Params: shardGrads(&x, 1),
			MaxGradNorm: Ptr(50.0), Schedule: map[string]any{"name": "cosine", "warmup_steps": 2, "total_steps": 10}}
		plain, err := c.CreateSession(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		req.Shards = 2
		sharded, err := c.CreateSession(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		info, err := sharded.Info(ctx)
		if err != nil || len(info.Shards) != 2 || info.Shards[0].ID != sharded.ID+"-s0" {
			t.Fatal(info, err)
		}
		var wPieces []ShardPiece // w is split across the shards
		for _, sh := range info.Shards {
			for _, p := range sh.Tensors {
				if p.Name == "w" {
					wPieces = append(wPieces, p)
				}
			}
		}
		if len(wPieces) != 2 || wPieces[0].Stop != wPieces[1].Start || wPieces[1].Stop != shardW || info.Shards[0].Stop%32768 != 0 {
			t.Fatal(info.Shards)
		}
		// handles that learn the layout from the 409, on both wires
		handles := []*Session{sharded, NewClient(url).Session(sharded.ID, ""), NewClient(url, WithJSON()).Session(sharded.ID, "")}
		for i := 0; i < 5; i++ {
			scale := float32(1)
			if i == 3 {
				scale = 0.001 // not clipped
			}
			g := shardGrads(&x, scale)
			a, err := plain.Step(ctx, g, StepOptions{Loss: Ptr(float64(i))})
			if err != nil {
				t.Fatal(err)
			}
			b, err := handles[i%3].Step(ctx, g, StepOptions{Loss: Ptr(float64(i))})
			if err != nil {
				t.Fatal(i, err)
			}
			if b.Version != a.Version || b.Step != a.Step || b.LR != a.LR || b.GradNorm != a.GradNorm {
				t.Fatalf("step %d: %+v vs %+v", i, b, a)
			}
			sameTensors(t, "step", b.Params, a.Params)
		}
		pa, err := plain.Params(ctx, ParamsOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pb, err := NewClient(url, WithJSON()).Session(sharded.ID, "").Params(ctx, ParamsOptions{})
		if err != nil || pb.Version != 5 {
			t.Fatal(pb, err)
		}
		sameTensors(t, "params", pb.Params, pa.Params)
		if info, err = sharded.Info(ctx); err != nil || info.Version != 5 || info.Step != 5 ||
			info.Shards[0].Version != 5 || info.Shards[1].Version != 5 {
			t.Fatal(info, err)
		}
		// PATCH is carried to every shard: the next step is still the unsharded one's
		for _, sess := range []*Session{plain, sharded} {
			if _, err := sess.Update(ctx, Patch{MaxGradNorm: Ptr(20.0), Hyperparams: map[string]any{"lr": 0.005}}); err != nil {
				t.Fatal(err)
			}
		}
		g := shardGrads(&x, 1)
		a, err := plain.Step(ctx, g, StepOptions{})
		if err != nil {
			t.Fatal(err)
		}
		b, err := sharded.Step(ctx, g, StepOptions{})
		if err != nil || b.Version != a.Version || b.LR != a.LR || b.GradNorm != a.GradNorm {
			t.Fatal(a, b, err)
		}
		sameTensors(t, "after PATCH", b.Params, a.Params)
		// a subset of the gradients with OnlyUpdated, and a stale If-Match
		sub := Tensors{"b": g["b"]}
		if a, err = plain.Step(ctx, sub, StepOptions{OnlyUpdated: true}); err != nil {
			t.Fatal(err)
		}
		if b, err = sharded.Step(ctx, sub, StepOptions{OnlyUpdated: true}); err != nil {
			t.Fatal(err)
		}
		sameTensors(t, "subset", b.Params, a.Params)
		if _, err := sharded.Step(ctx, sub, StepOptions{IfMatch: Ptr(1)}); !IsSlug(err, SlugPreconditionFailed) {
			t.Fatal(err)
		}
		if _, err := sharded.SetParams(ctx, Tensors{"b": NewTensor(make([]float32, 10), 2, 5)}, nil); !IsSlug(err, SlugConflict) {
			t.Fatal(err)
		}
		if err := sharded.Delete(ctx); err != nil {
			t.Fatal(err)
		}
		_ = plain.Delete(ctx)
	})
}

func TestServerShardedNonFiniteAndConcurrent(t *testing.T) {
	forStores(t, func(t *testing.T, url string) {
		ctx := context.Background()
		c := NewClient(url)
		x := xorshift(3)
		params := shardGrads(&x, 1)
		sharded, err := c.CreateSession(ctx, CreateRequest{Optimizer: "sgd", Hyperparams: map[string]any{"lr": 0.1}, Params: params, Shards: 2})
		if err != nil {
			t.Fatal(err)
		}
		g := shardGrads(&x, 1)
		g["w"].Data[shardW-1] = float32(math.Inf(1))
		if _, err := sharded.Step(ctx, g, StepOptions{}); !IsSlug(err, SlugInvalidTensor) {
			t.Fatal(err) // check_finite: refused at prepare, nothing applied
		}
		loose, err := c.CreateSession(ctx, CreateRequest{Optimizer: "sgd", Hyperparams: map[string]any{"lr": 0.1}, Params: params,
			Shards: 2, CheckFinite: Ptr(false), MaxGradNorm: Ptr(1.0)})
		if err != nil {
			t.Fatal(err)
		}
		// refused at the commit of the shard it falls in, after shard 0 took it: half-applied
		if _, err := loose.Step(ctx, g, StepOptions{}); !errors.Is(err, ErrShardsDiverged) && !IsSlug(err, SlugInvalidTensor) {
			t.Fatal(err)
		}
		if _, _, p := loose.shards.get(); p != nil {
			t.Fatal("a refused commit is kept to be sent again")
		}
		// three clients, four steps each, the same gradient: every step applied once, in one order
		one := Tensors{"w": NewTensor(make([]float32, shardW), 3, shardW/3), "b": NewTensor([]float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 2, 5)}
		var wg sync.WaitGroup
		errs := make(chan error, 12)
		for i := 0; i < 3; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := NewClient(url).Session(sharded.ID, "")
				for j := 0; j < 4; j++ {
					if _, err := s.Step(ctx, one, StepOptions{}); err != nil {
						errs <- err
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		info, err := sharded.Info(ctx)
		if err != nil || info.Version != 12 || info.Step != 12 || info.Shards[0].Version != 12 || info.Shards[1].Version != 12 {
			t.Fatal(info, err)
		}
		p, err := sharded.Params(ctx, ParamsOptions{Names: []string{"b"}})
		if err != nil {
			t.Fatal(err)
		}
		want := params["b"].Data[9]
		for i := 0; i < 12; i++ {
			want -= float32(0.1) * 10
		}
		if got := float32(p.Params["b"].At(9)); got != want {
			t.Fatal(got, want)
		}
		_ = sharded.Delete(ctx)
		_ = loose.Delete(ctx)
	})
}

func TestServerShardedRepair(t *testing.T) {
	forStores(t, func(t *testing.T, url string) {
		ctx := context.Background()
		c := NewClient(url)
		x := xorshift(13)
		const n = 100000 // over 2 * 32768: three shards
		vec := func() Tensors {
			w := make([]float32, n)
			for i := range w {
				w[i] = x.next()
			}
			return Tensors{"w": NewTensor(w, n)}
		}
		req := CreateRequest{Optimizer: "adam", Hyperparams: map[string]any{"lr": 0.01}, Params: vec(), MaxGradNorm: Ptr(50.0)}
		plain, err := c.CreateSession(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		req.Shards = 3
		sharded, err := c.CreateSession(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		g1, g2, g3 := vec(), vec(), vec()
		for _, s := range []*Session{plain, sharded} {
			if _, err := s.Step(ctx, g1, StepOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		// the dead client, in raw HTTP: prepares every shard with g2, commits shards 0 and 2
		raw := func(method, path string, body any, header map[string]string, out any) int {
			t.Helper()
			var b []byte
			if body != nil {
				var err error
				if b, err = json.Marshal(body); err != nil {
					t.Fatal(err)
				}
			}
			hr, err := http.NewRequest(method, url+path, bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			hr.Header.Set("Content-Type", "application/json")
			hr.Header.Set("Accept", "application/json")
			for k, v := range header {
				hr.Header.Set(k, v)
			}
			r, err := http.DefaultClient.Do(hr)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Body.Close()
			if err := json.NewDecoder(r.Body).Decode(out); err != nil {
				t.Fatal(err)
			}
			return r.StatusCode
		}
		var info struct {
			Shards []ShardInfo  `json:"shards"`
			Repair *ShardRepair `json:"repair"`
		}
		if raw("GET", "/v1/sessions/"+sharded.ID, nil, nil, &info) != 200 || len(info.Shards) != 3 {
			t.Fatal(info)
		}
		var sumsq []json.RawMessage
		tokens := make([]string, 3)
		for k, sh := range info.Shards {
			p := sh.Tensors[0]
			data := make([]float64, 0, p.Stop-p.Start) // float32 values, exactly
			for _, v := range g2["w"].Data[p.Start:p.Stop] {
				data = append(data, float64(v))
			}
			grads := map[string]any{"w": map[string]any{"shape": []int{p.Stop - p.Start}, "dtype": "float32", "data": data}}
			var got prepared
			if st := raw("POST", "/v1/sessions/"+sh.ID+"/prepare", map[string]any{"grads": grads}, nil, &got); st != 200 || got.Version != 1 {
				t.Fatal(st, got)
			}
			sumsq, tokens[k] = append(sumsq, got.Sumsq...), got.Prepared
		}
		commit := func(k int, extra map[string]any) int {
			doc := map[string]any{"prepared": tokens[k], "sumsq": sumsq}
			for key, v := range extra {
				doc[key] = v
			}
			var out map[string]any
			return raw("POST", "/v1/sessions/"+info.Shards[k].ID+"/step", doc,
				map[string]string{"If-Match": `"1"`, "Idempotency-Key": fmt.Sprint("dead-", k)}, &out)
		}
		if st := commit(0, map[string]any{"tokens": tokens, "loss": 1.5}); st != 200 {
			t.Fatal(st)
		}
		if st := commit(2, nil); st != 200 {
			t.Fatal(st)
		}
		info.Repair = nil
		if raw("GET", "/v1/sessions/"+sharded.ID, nil, nil, &info); info.Repair == nil || info.Repair.Version != 2 ||
			info.Shards[0].Version != 2 || info.Shards[1].Version != 1 || info.Shards[2].Version != 2 {
			t.Fatal(info.Shards, info.Repair)
		}
		// the SDK's next step finishes the dead client's step on shard 1, then takes its own
		b, err := sharded.Step(ctx, g3, StepOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := plain.Step(ctx, g2, StepOptions{Loss: Ptr(1.5)}); err != nil {
			t.Fatal(err)
		}
		a, err := plain.Step(ctx, g3, StepOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if b.Version != 3 || b.Version != a.Version || b.Step != a.Step || b.LR != a.LR || b.GradNorm != a.GradNorm {
			t.Fatalf("%+v vs %+v", b, a)
		}
		sameTensors(t, "step", b.Params, a.Params)
		pa, err := plain.Params(ctx, ParamsOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pb, err := sharded.Params(ctx, ParamsOptions{})
		if err != nil || pb.Version != 3 {
			t.Fatal(pb, err)
		}
		sameTensors(t, "params", pb.Params, pa.Params)
		done, err := sharded.Info(ctx)
		if err != nil || done.Repair != nil || done.Shards[0].Version != 3 || done.Shards[1].Version != 3 || done.Shards[2].Version != 3 {
			t.Fatal(done, err)
		}
		_ = sharded.Delete(ctx)
		_ = plain.Delete(ctx)
	})
}
