package optd

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Against a real `optd serve`, on the embedded store and on a private Redis.

var stores = []string{"memory", "redis"}

func near(t *testing.T, got Tensor, want []float64, tol float64) {
	t.Helper()
	for i, w := range want {
		if math.Abs(got.At(i)-w) > tol {
			t.Fatalf("[%d] %v != %v", i, got.At(i), w)
		}
	}
}

func forStores(t *testing.T, test func(t *testing.T, url string)) {
	for _, store := range stores {
		store := store
		t.Run(store, func(t *testing.T) {
			t.Parallel()
			test(t, serverFor(t, store))
		})
	}
}

func TestServerBothWires(t *testing.T) {
	forStores(t, func(t *testing.T, url string) {
		ctx := context.Background()
		sc, jc := NewClient(url), NewClient(url, WithJSON())
		s, err := sc.CreateSession(ctx, CreateRequest{Optimizer: "adam", Hyperparams: map[string]any{"lr": 0.1},
			Params: Tensors{"w": NewTensor([]float32{0.5, -0.5, 1, 2}, 2, 2), "b": Scalar(0)}})
		if err != nil {
			t.Fatal(err)
		}
		r1, err := s.Step(ctx, Tensors{"w": NewTensor([]float32{1, -1, 0.5, 0}, 2, 2), "b": Scalar(-2)}, StepOptions{Loss: Ptr(1.0)})
		if err != nil || r1.Version != 1 || r1.Step != 1 || r1.LR != 0.1 || r1.Replayed {
			t.Fatal(r1, err)
		}
		near(t, r1.Params["w"], []float64{0.4, -0.4, 0.9, 2}, 1e-6) // Adam's first step: lr*sign(g)
		near(t, r1.Params["b"], []float64{0.1}, 1e-6)
		if !reflect.DeepEqual(r1.Params["w"].Shape, []int{2, 2}) || len(r1.Params["b"].Shape) != 0 {
			t.Fatal(r1.Params)
		}
		r2, err := jc.Session(s.ID, "").Step(ctx, Tensors{"b": Scalar(1)}, StepOptions{Loss: Ptr(0.5)})
		if err != nil || r2.Version != 2 {
			t.Fatal(r2, err)
		}
		a, err1 := s.Params(ctx, ParamsOptions{})
		b, err2 := jc.Session(s.ID, "").Params(ctx, ParamsOptions{})
		if err1 != nil || err2 != nil || a.Version != 2 || s.Version() != 2 {
			t.Fatal(err1, err2, a)
		}
		for n, ta := range a.Params {
			tb := b.Params[n]
			ta.DType, tb.DType = "", ""
			if !reflect.DeepEqual(ta, tb) {
				t.Fatalf("%s: %v != %v", n, ta, tb)
			}
		}
		info, err := s.Info(ctx)
		if err != nil || info.Step != 2 || *info.LastLoss != 0.5 || info.Params["b"].Step != 2 || info.Params["w"].Step != 1 {
			t.Fatal(info, err)
		}
	})
}

func TestServerLifecycle(t *testing.T) {
	forStores(t, func(t *testing.T, url string) {
		ctx := context.Background()
		c := NewClient(url)
		label := strconv.FormatInt(time.Now().UnixNano(), 36)
		s, err := c.CreateSession(ctx, CreateRequest{Optimizer: "adamw", Labels: map[string]string{"run": label},
			Hyperparams: map[string]any{"lr": 0.01, "weight_decay": 0.1}, Params: Tensors{"w": NewTensor64([]float64{1, 2, 3})}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Step(ctx, Tensors{"w": NewTensor([]float32{0.1, 0.2, 0.3})}, StepOptions{}); err != nil {
			t.Fatal(err)
		}
		info, err := s.Update(ctx, Patch{Hyperparams: map[string]any{"lr": 0.005}, MaxGradNorm: Ptr(1.0)})
		if err != nil || info.Hyperparams["lr"] != 0.005 || info.Hyperparams["weight_decay"] != 0.1 || *info.MaxGradNorm != 1 || info.Version != 2 {
			t.Fatal(info, err)
		}
		page, err := c.ListSessions(ctx, ListOptions{Labels: map[string]string{"run": label}})
		if err != nil || len(page.Sessions) != 1 || page.Sessions[0].ID != s.ID {
			t.Fatal(page, err)
		}
		for _, cc := range []*Client{NewClient(url), NewClient(url, WithJSON())} {
			ck, err := cc.Session(s.ID, "").State(ctx)
			if err != nil || len(ck.Slot("exp_avg")) != 1 || ck.Version != s.Version() {
				t.Fatal(ck, err)
			}
			cp := cc.Session(fmt.Sprintf("copy-%s-%t", label, cc.json), "")
			if v, err := cp.LoadState(ctx, ck, nil); err != nil || v != 0 {
				t.Fatal(v, err)
			}
			g := Tensors{"w": NewTensor([]float32{0.1, 0.2, 0.3})}
			r1, err1 := cp.Step(ctx, g, StepOptions{})
			r2, err2 := cc.Session(s.ID, "").Step(ctx, g, StepOptions{IfMatch: Ptr(s.Version())})
			if err1 != nil || err2 != nil || !reflect.DeepEqual(r1.Params, r2.Params) {
				t.Fatal(err1, err2, r1, r2)
			}
			s.setVersion(r2.Version)
			if err := cp.Delete(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if v, err := s.SetParams(ctx, Tensors{"w": NewTensor([]float32{7, 8, 9})}, nil); err != nil || v != s.Version() {
			t.Fatal(v, err)
		}
		if p, err := s.Params(ctx, ParamsOptions{Names: []string{"w"}}); err != nil || !reflect.DeepEqual(p.Params["w"].Float64s(), []float64{7, 8, 9}) {
			t.Fatal(p, err)
		}
		if err := s.Delete(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Info(ctx); !IsSlug(err, SlugNotFound) {
			t.Fatal(err)
		}
	})
}

func TestServerProblems(t *testing.T) {
	forStores(t, func(t *testing.T, url string) {
		ctx := context.Background()
		c := NewClient(url)
		s, err := c.CreateSession(ctx, CreateRequest{Optimizer: "sgd", MaxStaleness: Ptr(1), Hyperparams: map[string]any{"lr": 0.1},
			Params: Tensors{"w": NewTensor([]float32{0, 0})}})
		if err != nil {
			t.Fatal(err)
		}
		g := Tensors{"w": NewTensor([]float32{1, 1})}
		for i := 0; i < 3; i++ {
			if _, err := s.Step(ctx, g, StepOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		_, err = s.Step(ctx, g, StepOptions{BaseVersion: Ptr(0)})
		var p *Problem
		if !errors.As(err, &p) || p.Slug != SlugStaleGradient || p.Status != 409 {
			t.Fatal(err)
		}
		if v, ok := p.CurrentVersion(); !ok || v != 3 {
			t.Fatal(p.Body)
		}
		checks := []struct {
			slug string
			err  error
		}{
			{SlugInvalidTensor, second(s.Step(ctx, Tensors{"nope": NewTensor([]float32{1})}, StepOptions{}))},
			{SlugInvalidTensor, second(s.Step(ctx, Tensors{"w": NewTensor([]float32{1, 2, 3})}, StepOptions{}))},
			{SlugInvalidTensor, second(s.Step(ctx, Tensors{"w": NewTensor([]float32{1, float32(math.NaN())})}, StepOptions{}))},
			{SlugInvalidTensor, second(NewClient(url, WithJSON()).Session(s.ID, "").Step(ctx, Tensors{"w": NewTensor64([]float64{math.Inf(1), 0})}, StepOptions{}))},
			{SlugPreconditionFailed, second(s.Step(ctx, g, StepOptions{IfMatch: Ptr(1)}))},
			{SlugConflict, second(s.Step(ctx, g, StepOptions{BaseVersion: Ptr(99)}))},
			{SlugInvalidConfig, second(c.CreateSession(ctx, CreateRequest{Optimizer: "adam", Hyperparams: map[string]any{"betas": []float64{2, 0}}, Params: g}))},
			{SlugNotFound, second(c.Session("no-such-session", "").Params(ctx, ParamsOptions{}))},
		}
		for _, ch := range checks {
			if !IsSlug(ch.err, ch.slug) {
				t.Errorf("want %s, got %v", ch.slug, ch.err)
			}
		}
		if info, err := s.Info(ctx); err != nil || info.Version != 3 {
			t.Fatal(info, err)
		}
	})
}

func second[T any](_ T, err error) error { return err }

// flaky drops the answer of the first step after the server has applied it.
type flaky struct{ steps atomic.Int32 }

func (f *flaky) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := http.DefaultTransport.RoundTrip(r)
	if err == nil && strings.HasSuffix(r.URL.Path, "/step") && f.steps.Add(1) == 1 {
		res.Body.Close()
		return nil, errors.New("connection reset (simulated, after the server answered)")
	}
	return res, err
}

func TestServerRetryIsAppliedOnce(t *testing.T) {
	forStores(t, func(t *testing.T, url string) {
		ctx := context.Background()
		f := &flaky{}
		c := NewClient(url, WithHTTPClient(&http.Client{Transport: f}), WithBackoff(10*time.Millisecond, time.Second))
		s, err := c.CreateSession(ctx, CreateRequest{Optimizer: "adam", Hyperparams: map[string]any{"lr": 0.1}, Params: Tensors{"w": NewTensor([]float32{1, 1})}})
		if err != nil {
			t.Fatal(err)
		}
		r, err := s.Step(ctx, Tensors{"w": NewTensor([]float32{1, -1})}, StepOptions{})
		if err != nil || f.steps.Load() != 2 || r.Version != 1 || !r.Replayed {
			t.Fatal(r, err, f.steps.Load())
		}
		near(t, r.Params["w"], []float64{0.9, 1.1}, 1e-6)
		if info, err := s.Info(ctx); err != nil || info.Step != 1 {
			t.Fatal(info, err)
		}
	})
}

func TestServerSyncBarrier(t *testing.T) {
	forStores(t, func(t *testing.T, url string) {
		ctx := context.Background()
		c := NewClient(url, WithBarrier(time.Minute, 5*time.Second))
		s, err := c.CreateSession(ctx, CreateRequest{Optimizer: "sgd", Mode: "sync", Workers: 2, Hyperparams: map[string]any{"lr": 1.0},
			Params: Tensors{"w": NewTensor([]float32{0, 0})}})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var w1 *StepResult
		var err1 error
		wg.Add(1)
		go func() {
			defer wg.Done()
			zero := time.Duration(0)
			w1, err1 = c.Session(s.ID, "w1").Step(ctx, Tensors{"w": NewTensor([]float32{1, 0})}, StepOptions{BaseVersion: Ptr(0), Wait: &zero})
		}()
		time.Sleep(300 * time.Millisecond)
		w2, err2 := c.Session(s.ID, "w2").Step(ctx, Tensors{"w": NewTensor([]float32{0, 1})}, StepOptions{BaseVersion: Ptr(0)})
		wg.Wait()
		if err1 != nil || err2 != nil || w1.Barrier == nil || *w1.Barrier != (Barrier{0, 1, 2}) || w1.Version != 1 || w2.Version != 1 {
			t.Fatal(err1, err2, w1, w2)
		}
		if !reflect.DeepEqual(w1.Params["w"].Data, []float32{-0.5, -0.5}) || !reflect.DeepEqual(w1.Params, w2.Params) {
			t.Fatal(w1.Params, w2.Params)
		}
	})
}

func TestServerPrecisions(t *testing.T) {
	forStores(t, func(t *testing.T, url string) {
		ctx := context.Background()
		c := NewClient(url)
		s, err := c.CreateSession(ctx, CreateRequest{Optimizer: "sgd", DType: "float64", Hyperparams: map[string]any{"lr": 1.0},
			Params: Tensors{"w": NewTensor64([]float64{0.1, 0.2})}})
		if err != nil {
			t.Fatal(err)
		}
		r, err := s.Step(ctx, Tensors{"w": {Shape: []int{2}, Data: []float32{0.5, -0.25}, DType: BF16}}, StepOptions{})
		if err != nil || r.Params["w"].Data64 == nil {
			t.Fatal(r, err)
		}
		near(t, r.Params["w"], []float64{0.1 - 0.5, 0.2 + 0.25}, 1e-15)
		r, err = s.Step(ctx, Tensors{"w": {Shape: []int{2}, Data: []float32{0.5, 0.5}, DType: F16}}, StepOptions{})
		if err != nil {
			t.Fatal(err)
		}
		near(t, r.Params["w"], []float64{-0.9, -0.05}, 1e-15)
		if opt, err := c.Optimizers(ctx); err != nil || !strings.Contains(fmt.Sprint(opt), "adam") {
			t.Fatal(opt, err)
		}
	})
}

func TestExampleLinreg(t *testing.T) {
	url := serverFor(t, "memory")
	bin := filepath.Join(t.TempDir(), "linreg")
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if out, err := exec.Command(goTool, "build", "-o", bin, "./examples/linreg").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	out, err := exec.Command(bin, "-url", url, "-steps", "120").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	m := regexp.MustCompile(`mse (\S+)`).FindSubmatch(out)
	if mse, err := strconv.ParseFloat(string(m[1]), 64); err != nil || mse > 1e-3 {
		t.Fatalf("did not converge: %s", out)
	}
}
