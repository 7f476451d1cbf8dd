package optd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Sharded sessions: splitting and assembling, and the two-phase step against a fake
// server (prepare, equal versions, shard 0 first, 412, prepare-expired, half-applied).

var testLayout = &shardLayout{
	shapes: map[string][]int{"w": {3, 4}, "b": {}},
	shards: []ShardInfo{
		{ID: "x-s0", Index: 0, Start: 0, Stop: 5, Tensors: []ShardPiece{{"w", 0, 5}}},
		{ID: "x-s1", Index: 1, Start: 5, Stop: 13, Tensors: []ShardPiece{{"w", 5, 12}, {"b", 0, 1}}},
	},
}

func testGrads() Tensors {
	w := make([]float32, 12)
	for i := range w {
		w[i] = float32(i + 1)
	}
	return Tensors{"w": NewTensor(w, 3, 4), "b": Scalar(-1)}
}

func TestShardSplitAssemble(t *testing.T) {
	parts, err := splitGrads(testLayout, testGrads())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(parts[0]["w"].Data, []float32{1, 2, 3, 4, 5}) || !reflect.DeepEqual(parts[1]["w"].Shape, []int{7}) ||
		!reflect.DeepEqual(parts[1]["b"], Tensor{Shape: []int{1}, Data: []float32{-1}}) {
		t.Fatal(parts)
	}
	whole := assembleParts(testLayout, parts)
	if !reflect.DeepEqual(whole["w"], testGrads()["w"]) || !reflect.DeepEqual(whole["b"].Shape, []int{}) || whole["b"].Data[0] != -1 {
		t.Fatal(whole)
	}
	if got := assembleParts(testLayout, []Tensors{{}, parts[1]}); len(got) != 1 || got["b"].Len() != 1 {
		t.Fatal(got) // w has a piece missing
	}
	if _, err := splitGrads(testLayout, Tensors{"v": Scalar(1)}); err == nil {
		t.Fatal("unknown name accepted")
	}
	if _, err := splitGrads(testLayout, Tensors{"w": NewTensor(make([]float32, 11))}); err == nil {
		t.Fatal("wrong size accepted")
	}
}

// fakeShards serves a session "x" of two shards: SGD with lr 0.1, JSON only.
type fakeShards struct {
	mu       sync.Mutex
	params   [2][]float32
	versions [2]int
	tokens   map[string][]float64
	replies  map[string][]byte
	log      []string
	diverge  int              // shard 1 answers a prepare one version behind, this many times
	conflict int              // shard 0's commit: another client took v + 1 first
	expire   int              // shard 1's commit: prepare-expired
	cut      int              // shard 1's commit: the connection is cut (not applied)
	bump     int              // shard 1's commit: another client's commit landed first
	repair   map[string]any   // the session info's repair
	commits  []map[string]any // the bodies of the shards' commits
	n        int
}

func (f *fakeShards) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/v1/sessions/"), "/", 2)
	sid, tail := parts[0], ""
	if len(parts) == 2 {
		tail = parts[1]
	}
	f.log = append(f.log, r.Method+" "+sid+"/"+tail)
	reply := func(status int, doc any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(doc)
	}
	problem := func(slug string, status int) {
		reply(status, map[string]any{"type": ProblemPrefix + slug, "title": slug, "status": status, "detail": slug})
	}
	if sid == "x" {
		if tail != "" {
			problem(SlugConflict, 409)
			return
		}
		shards := append([]ShardInfo(nil), testLayout.shards...)
		for k := range shards {
			shards[k].Version = f.versions[k]
		}
		doc := map[string]any{"id": "x", "version": f.versions[1], "shards": shards,
			"params": map[string]any{"w": map[string]any{"shape": []int{3, 4}}, "b": map[string]any{"shape": []int{}}}}
		if f.repair != nil {
			doc["repair"] = f.repair
		}
		reply(200, doc)
		return
	}
	k, _ := strconv.Atoi(strings.TrimPrefix(sid, "x-s"))
	var body struct {
		Grads    map[string]struct{ Data []float64 } `json:"grads"`
		Prepared string                              `json:"prepared"`
		Sumsq    []any                               `json:"sumsq"`
	}
	raw, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(raw, &body)
	if tail == "prepare" {
		var g []float64
		for _, name := range []string{"w", "b"} {
			g = append(g, body.Grads[name].Data...)
		}
		f.n++
		token := fmt.Sprint("t", f.n)
		f.tokens[token] = g
		v := f.versions[k]
		if k == 1 && f.diverge > 0 {
			f.diverge--
			v--
		}
		sumsq := []any{len(g)}
		if k == 1 {
			sumsq = []any{"NaN", len(g)}
		}
		reply(200, map[string]any{"prepared": token, "version": v, "sumsq": sumsq})
		return
	}
	commit := map[string]any{"shard": k}
	_ = json.Unmarshal(raw, &commit)
	f.commits = append(f.commits, commit)
	key := r.Header.Get("Idempotency-Key")
	if b, ok := f.replies[key]; ok {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Idempotent-Replayed", "true")
		_, _ = w.Write(b)
		return
	}
	switch {
	case k == 0 && f.conflict > 0:
		f.conflict--
		f.versions[0]++
		f.versions[1]++
		problem(SlugPreconditionFailed, 412)
		return
	case k == 1 && f.expire > 0:
		f.expire--
		problem("prepare-expired", 409)
		return
	case k == 1 && f.bump > 0:
		f.bump--
		f.versions[1]++
		problem(SlugPreconditionFailed, 412)
		return
	case r.Header.Get("If-Match") != fmt.Sprintf(`"%d"`, f.versions[k]):
		problem(SlugPreconditionFailed, 412)
		return
	case fmt.Sprint(body.Sumsq) != "[5 NaN 8]":
		problem(SlugInvalidBody, 400)
		return
	}
	if k == 1 && f.cut > 0 {
		f.cut--
		panic(http.ErrAbortHandler)
	}
	g, ok := f.tokens[body.Prepared]
	if !ok || len(g) != len(f.params[k]) {
		problem("prepare-expired", 409)
		return
	}
	delete(f.tokens, body.Prepared)
	for i, x := range g {
		f.params[k][i] -= float32(0.1 * x)
	}
	f.versions[k]++
	pieces := map[string]any{"w": map[string]any{"shape": []int{5}, "data": f.params[0]}}
	if k == 1 {
		pieces = map[string]any{"w": map[string]any{"shape": []int{7}, "data": f.params[1][:7]},
			"b": map[string]any{"shape": []int{1}, "data": f.params[1][7:]}}
	}
	b, _ := json.Marshal(map[string]any{"version": f.versions[k], "step": f.versions[k], "lr": 0.1, "grad_norm": 42, "params": pieces})
	f.replies[key] = b
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// vs is the shards' versions (under the lock: the race detector does not see HTTP as a sync).
func (f *fakeShards) vs() [2]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.versions
}

func (f *fakeShards) logged() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.log...)
}

func (f *fakeShards) set(do func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	do()
}

func newFake(t *testing.T, retries int) (*fakeShards, *Session) {
	f := &fakeShards{params: [2][]float32{{1, 2, 3, 4, 5}, {6, 7, 8, 9, 10, 11, 12, 13}},
		tokens: map[string][]float64{}, replies: map[string][]byte{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, NewClient(srv.URL, WithJSON(), WithRetries(retries), WithBackoff(time.Millisecond, time.Millisecond)).Session("x", "")
}

func TestShardedStepFake(t *testing.T) {
	ctx := context.Background()
	f, s := newFake(t, 5)
	r, err := s.Step(ctx, testGrads(), StepOptions{Loss: Ptr(0.5)})
	if err != nil {
		t.Fatal(err)
	}
	if log := f.logged(); len(log) != 6 || log[0] != "POST x/step" || log[1] != "GET x/" || log[4] != "POST x-s0/step" || log[5] != "POST x-s1/step" {
		t.Fatal(log) // learns the shards from the 409, commits shard 0 first
	}
	if r.Version != 1 || r.Step != 1 || r.GradNorm != 42 || s.Version() != 1 || !reflect.DeepEqual(r.Params["w"].Shape, []int{3, 4}) {
		t.Fatal(r)
	}
	for i := 0; i < 12; i++ {
		if v, want := float32(r.Params["w"].At(i)), float32(i+1)-float32(0.1*float64(i+1)); v != want {
			t.Fatalf("w[%d] = %v, want %v", i, v, want)
		}
	}
	// shard 0's commit carries every shard's token (what repairs the step), the others not
	if c := f.commits; len(c) != 2 || c[0]["shard"] != 0 || c[1]["shard"] != 1 || c[1]["tokens"] != nil ||
		fmt.Sprint(c[0]["tokens"]) != fmt.Sprint([]any{c[0]["prepared"], c[1]["prepared"]}) {
		t.Fatal(c)
	}
	// versions differ twice, a 412 from shard 0, a prepare-expired from shard 1
	f.set(func() { f.log, f.diverge, f.conflict, f.expire = nil, 2, 1, 1 })
	if r, err = s.Step(ctx, testGrads(), StepOptions{}); err != nil || r.Version != 3 || f.vs() != [2]int{3, 3} {
		t.Fatal(r, err, f.vs())
	}
	prepares := 0
	for _, l := range f.logged() {
		if strings.HasSuffix(l, "/prepare") {
			prepares++
		}
	}
	if prepares != 2+1+1+2+1 { // shard 1 again twice while behind, both after the 412, shard 1 expired
		t.Fatal(f.logged())
	}
}

func TestShardedStepHalfApplied(t *testing.T) {
	ctx := context.Background()
	f, s := newFake(t, 0)
	if _, err := s.Info(ctx); err != nil {
		t.Fatal(err)
	}
	f.set(func() { f.cut = 10 }) // shard 1 unreachable (net/http itself retries a request with an Idempotency-Key once)
	var te *TransportError
	if _, err := s.Step(ctx, testGrads(), StepOptions{IdempotencyKey: "k1"}); !errors.As(err, &te) || f.vs() != [2]int{1, 0} {
		t.Fatal(err, f.vs())
	}
	f.set(func() { f.cut = 0 })
	r, err := s.Step(ctx, testGrads(), StepOptions{IdempotencyKey: "k1"})
	if err != nil || r.Version != 1 || f.vs() != [2]int{1, 1} || float32(r.Params["w"].At(11)) != 12-float32(0.1*12) {
		t.Fatal(r, err, f.vs()) // the next step with that key finishes it (once)
	}
	if _, _, p := s.shards.get(); p != nil {
		t.Fatal("still pending")
	}
	old := DivergenceWait
	DivergenceWait = 200 * time.Millisecond
	defer func() { DivergenceWait = old }()
	f.set(func() { f.versions[0] = 5 })
	if _, err := s.Step(ctx, testGrads(), StepOptions{}); !errors.Is(err, ErrShardsDiverged) || !strings.Contains(err.Error(), "x-s0 at 5, x-s1 at 1") {
		t.Fatal(err)
	}
	f.set(func() { f.versions[1], f.bump = 5, 1 }) // another client's commit lands on shard 1 between ours
	if _, err := s.Step(ctx, testGrads(), StepOptions{}); !errors.Is(err, ErrShardsDiverged) || !strings.Contains(err.Error(), "x-s1 refused") ||
		f.vs() != [2]int{6, 6} {
		t.Fatal(err, f.vs())
	}
	if _, _, p := s.shards.get(); p != nil {
		t.Fatal("still pending")
	}
}

func TestShardedStepRepair(t *testing.T) {
	ctx := context.Background()
	f, s := newFake(t, 5)
	if _, err := s.Info(ctx); err != nil {
		t.Fatal(err)
	}
	// a dead client's step of version 1: prepared on both shards, committed on shard 0 only
	f.set(func() {
		f.versions[0] = 1
		f.tokens["d0"], f.tokens["d1"] = make([]float64, 5), []float64{1, 1, 1, 1, 1, 1, 1, 1}
		f.repair = map[string]any{"version": 1, "tokens": []string{"d0", "d1"}, "sumsq": []any{5, "NaN", 8}, "loss": 2}
	})
	r, err := s.Step(ctx, testGrads(), StepOptions{})
	if err != nil || r.Version != 2 || f.vs() != [2]int{2, 2} {
		t.Fatal(r, err, f.vs())
	}
	f.set(func() {
		c := f.commits
		if len(c) != 3 || fmt.Sprint(c[0]) != "map[loss:2 prepared:d1 shard:1 sumsq:[5 NaN 8]]" || c[1]["shard"] != 0 {
			t.Error(c) // the repair, then this step
		}
		if w := f.params[1][0]; w != 6-float32(0.1)-float32(0.1*6) {
			t.Error(w) // the dead client's gradient, then this step's
		}
		// a part that is gone: the step cannot be finished
		f.versions[0] = 3
		f.repair = map[string]any{"version": 3, "tokens": []string{"gone0", "gone1"}, "sumsq": []any{5, "NaN", 8}}
	})
	_, err = s.Step(ctx, testGrads(), StepOptions{})
	if !errors.Is(err, ErrShardsDiverged) || !strings.Contains(err.Error(), "cannot be finished") ||
		!strings.Contains(err.Error(), "checkpoints") || f.vs() != [2]int{3, 2} {
		t.Fatal(err, f.vs())
	}
}
