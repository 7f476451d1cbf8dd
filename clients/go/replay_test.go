package optd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

// The recorded exchanges (testdata/wire/exchanges.json) replayed through the SDK: each
// call must send the recorded request and understand the recorded response.

type exchange struct {
	Name    string
	Request struct {
		Method, Path string
		Headers      map[string]string
		JSON         json.RawMessage `json:"json"`
		File         string
	}
	Response struct {
		Status  int
		Headers map[string]string
		JSON    json.RawMessage `json:"json"`
		File    string
	}
}

var ids = strings.NewReplacer("{A}", "sessAAAA", "{B}", "sessBBBB", `"{timestamp}"`, "0")

type replay struct {
	t     *testing.T
	byKey map[string]*exchange
	queue []string
}

func (r *replay) RoundTrip(req *http.Request) (*http.Response, error) {
	t := r.t
	if len(r.queue) == 0 {
		t.Fatalf("unexpected request %s %s", req.Method, req.URL)
	}
	ex := r.byKey[r.queue[0]]
	r.queue = r.queue[1:]
	want, _ := http.NewRequest(ex.Request.Method, "http://x"+ids.Replace(ex.Request.Path), nil)
	if req.Method != want.Method || req.URL.Path != want.URL.Path || !reflect.DeepEqual(req.URL.Query(), want.URL.Query()) {
		t.Errorf("%s: sent %s %s, recorded %s %s", ex.Name, req.Method, req.URL, want.Method, want.URL)
	}
	for _, h := range []string{"content-type", "optd-base-version", "optd-worker", "optd-loss", "if-match", "prefer", "idempotency-key"} {
		if v, ok := ex.Request.Headers[h]; ok && req.Header.Get(h) != v {
			t.Errorf("%s: %s is %q, recorded %q", ex.Name, h, req.Header.Get(h), v)
		}
	}
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
	}
	if ex.Request.JSON != nil {
		var got, rec any
		_ = json.Unmarshal(body, &got)
		_ = json.Unmarshal([]byte(ids.Replace(string(ex.Request.JSON))), &rec)
		if !reflect.DeepEqual(got, rec) {
			t.Errorf("%s: sent %s\nrecorded %s", ex.Name, body, ex.Request.JSON)
		}
	}
	if ex.Request.File != "" {
		sameSafetensors(t, ex.Name, body, readWire(t, "bodies/"+ex.Request.File))
	}
	res := &http.Response{StatusCode: ex.Response.Status, Header: http.Header{}, Request: req}
	for k, v := range ex.Response.Headers {
		res.Header.Set(k, ids.Replace(v))
	}
	out := []byte(ids.Replace(string(ex.Response.JSON)))
	if ex.Response.File != "" {
		out = readWire(t, "bodies/"+ex.Response.File)
	} else if string(out) == "null" || len(out) == 0 {
		out = nil
	}
	res.Body = io.NopCloser(bytes.NewReader(out))
	return res, nil
}

func sameSafetensors(t *testing.T, name string, got, want []byte) {
	a, err1 := DecodeSafetensors(got)
	b, err2 := DecodeSafetensors(want)
	if err1 != nil || err2 != nil {
		t.Fatalf("%s: %v %v", name, err1, err2)
	}
	if !reflect.DeepEqual(a.Tensors, b.Tensors) || len(a.Metadata) != len(b.Metadata) {
		t.Errorf("%s: sent tensors %v, recorded %v", name, a.Tensors, b.Tensors)
	}
	for k, v := range b.Metadata {
		var x, y any
		_ = json.Unmarshal([]byte(v), &y)
		_ = json.Unmarshal([]byte(a.Metadata[k]), &x)
		if !reflect.DeepEqual(x, y) {
			t.Errorf("%s: metadata %s = %s, recorded %s", name, k, a.Metadata[k], v)
		}
	}
}

func recorded(t *testing.T) []exchange {
	var doc struct{ Exchanges []exchange }
	readWireJSON(t, "exchanges.json", &doc)
	return doc.Exchanges
}

func TestReplayExchanges(t *testing.T) {
	exs := recorded(t)
	rt := &replay{t: t, byKey: map[string]*exchange{}}
	for i := range exs {
		rt.byKey[exs[i].Name] = &exs[i]
	}
	hc := &http.Client{Transport: rt}
	jc := NewClient("http://x", WithHTTPClient(hc), WithJSON(), WithRetries(0), WithBarrier(time.Minute, 0))
	sc := NewClient("http://x", WithHTTPClient(hc), WithRetries(0))
	ctx := context.Background()
	expect := func(names ...string) { rt.queue = append(rt.queue[:0], names...) }
	done := func() {
		t.Helper()
		if len(rt.queue) > 0 {
			t.Fatalf("not requested: %v", rt.queue)
		}
	}
	slug := func(err error, want string) {
		t.Helper()
		if !IsSlug(err, want) {
			t.Fatalf("got %v, want %s", err, want)
		}
		rt.queue = rt.queue[:0]
	}
	tensorsOf := func(name, which string) Tensors {
		ex := rt.byKey[name]
		if file := map[string]string{"request": ex.Request.File, "response": ex.Response.File}[which]; file != "" {
			f, _ := DecodeSafetensors(readWire(t, "bodies/"+file))
			return f.Tensors
		}
		raw := map[string]json.RawMessage{}
		_ = json.Unmarshal(map[string]json.RawMessage{"request": ex.Request.JSON, "response": ex.Response.JSON}[which], &raw)
		var js map[string]jsonTensor
		_ = json.Unmarshal(append(raw["grads"], raw["params"]...), &js)
		out, err := decodeJSONTensors(js)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	grads := tensorsOf("step_json", "request")

	expect("create")
	a, err := jc.CreateSession(ctx, CreateRequest{Optimizer: "adam", Hyperparams: map[string]any{"lr": 0.1}, Params: tensorsOf("create", "request")})
	done()
	if err != nil || a.ID != "sessAAAA" || a.Version() != 0 {
		t.Fatal(a, err)
	}
	expect("info")
	if info, err := a.Info(ctx); err != nil || info.NumParams != 6 || info.Params["w"].Shape[1] != 2 {
		t.Fatal(info, err)
	}
	expect("step_json")
	r1, err := a.Step(ctx, grads, StepOptions{Loss: Ptr(0.5)})
	done()
	if err != nil || r1.Version != 1 || r1.Step != 1 || r1.LR != 0.1 || r1.Staleness != nil || r1.Replayed {
		t.Fatal(r1, err)
	}
	if !reflect.DeepEqual(r1.Params, tensorsOf("step_json", "response")) || r1.Params["w"].Data[2] != 0.90000004 {
		t.Fatal(r1.Params)
	}
	aSt := sc.Session(a.ID, "")
	expect("step_safetensors")
	r2, err := aSt.Step(ctx, tensorsOf("step_safetensors", "request"), StepOptions{BaseVersion: Ptr(1), Worker: "w-1", Loss: Ptr(0.25)})
	done()
	if err != nil || r2.Version != 2 || r2.Step != 2 || *r2.Staleness != 0 || !reflect.DeepEqual(r2.Params, tensorsOf("step_safetensors", "response")) {
		t.Fatal(r2, err)
	}
	expect("params_json")
	if p, err := a.Params(ctx, ParamsOptions{}); err != nil || p.Version != 2 || p.Params["w"].Data[0] != 0.30678207 {
		t.Fatal(p, err)
	}
	expect("params_safetensors")
	if p, err := aSt.Params(ctx, ParamsOptions{Names: []string{"w"}}); err != nil || len(p.Params) != 1 {
		t.Fatal(p, err)
	}
	expect("patch")
	if info, err := a.Update(ctx, Patch{Hyperparams: map[string]any{"lr": 0.05}, MaxStaleness: Ptr(1)}); err != nil || info.Version != 3 || *info.MaxStaleness != 1 {
		t.Fatal(info, err)
	}
	expect("step_stale")
	_, err = a.Step(ctx, grads, StepOptions{BaseVersion: Ptr(0)})
	var p *Problem
	if !errors.As(err, &p) || p.Status != 409 {
		t.Fatal(err)
	}
	if v, ok := p.CurrentVersion(); !ok || v != 3 || p.Slug != SlugStaleGradient {
		t.Fatal(p)
	}
	expect("step_if_match")
	_, err = a.Step(ctx, grads, StepOptions{IfMatch: Ptr(1)})
	slug(err, SlugPreconditionFailed)
	expect("step_ahead")
	_, err = a.Step(ctx, grads, StepOptions{BaseVersion: Ptr(99)})
	slug(err, SlugConflict)
	expect("step_unknown_tensor")
	_, err = a.Step(ctx, Tensors{"nope": NewTensor([]float32{1})}, StepOptions{})
	slug(err, SlugInvalidTensor)
	nine := Tensors{}
	for i := 0; i < 9; i++ {
		nine[fmt.Sprintf("g%d", i)] = NewTensor([]float32{0})
	}
	expect("step_too_many")
	_, err = a.Step(ctx, nine, StepOptions{})
	slug(err, SlugTooLarge)
	expect("create_invalid_config")
	_, err = jc.CreateSession(ctx, CreateRequest{Optimizer: "nope", Params: Tensors{"x": NewTensor([]float32{0})}})
	slug(err, SlugInvalidConfig)
	keyed := StepOptions{Loss: Ptr(0.125), IdempotencyKey: "wire-key-1"}
	expect("step_idempotent", "step_idempotent_replay")
	r3, err1 := a.Step(ctx, grads, keyed)
	r4, err2 := a.Step(ctx, grads, keyed)
	done()
	if err1 != nil || err2 != nil || r3.Replayed || !r4.Replayed || r4.Version != 4 {
		t.Fatal(err1, err2, r3, r4)
	}
	expect("step_idempotency_mismatch")
	keyed.Loss = Ptr(0.25)
	_, err = a.Step(ctx, grads, keyed)
	slug(err, SlugIdempotencyMismatch)
	expect("step_updated_only")
	if r, err := a.Step(ctx, Tensors{"b": NewTensor([]float32{0.5, 0.5})}, StepOptions{OnlyUpdated: true}); err != nil || len(r.Params) != 1 || r.Version != 6 {
		t.Fatal(r, err)
	}
	expect("state_json")
	ck, err := a.State(ctx)
	done()
	keys := make([]string, 0)
	for k := range ck.Tensors {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if err != nil || ck.Version != 6 || ck.Meta["format"] != 1.0 || strings.Join(keys, " ") != "exp_avg/b exp_avg/w exp_avg_sq/b exp_avg_sq/w param/b param/w" || len(ck.Slot("param")) != 2 {
		t.Fatal(ck, err)
	}
	expect("delete", "info_deleted")
	if err := a.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = a.Info(ctx)
	slug(err, SlugNotFound)
	expect("create_sync_safetensors")
	b, err := sc.CreateSession(ctx, CreateRequest{Optimizer: "sgd", Mode: "sync", Workers: 2, Hyperparams: map[string]any{"lr": 0.5}, Params: tensorsOf("create_sync_safetensors", "request")})
	if err != nil || b.ID != "sessBBBB" {
		t.Fatal(b, err)
	}
	bJSON, zero := jc.Session(b.ID, "w1"), time.Duration(0)
	expect("sync_step_w1", "sync_params_wait")
	w1, err := bJSON.Step(ctx, Tensors{"x": NewTensor([]float32{1, 0.5})}, StepOptions{BaseVersion: Ptr(0), Wait: &zero})
	done()
	if err != nil || w1.Barrier == nil || *w1.Barrier != (Barrier{0, 1, 2}) || w1.Version != 1 {
		t.Fatal(w1, err)
	}
	expect("sync_step_w2")
	w2, err := bJSON.Step(ctx, Tensors{"x": NewTensor([]float32{0, 0.5})}, StepOptions{BaseVersion: Ptr(0), Worker: "w2", Wait: &zero})
	if err != nil || !reflect.DeepEqual(w2.Params, w1.Params) || w2.Params["x"].Data[1] != 1.75 {
		t.Fatal(w2, err)
	}
	expect("sync_params_expired")
	if p, err := bJSON.Params(ctx, ParamsOptions{MinVersion: Ptr(2), Wait: &zero}); err != nil || p.Version != 1 {
		t.Fatal(p, err)
	}
}
