// Command diloco runs DiLoCo (arXiv 2311.08105) over optd: N workers (goroutines here,
// machines in practice) each fit y = x·w + b on their own data shard with H local steps
// of plain SGD, then send the pseudo-gradient global - local to an elastic sync session
// whose optimizer is the outer one (SGD, Nesterov momentum 0.9, lr 0.7); the round's
// mean pseudo-gradient moves the global parameters, every worker continues from them.
//
//	optd serve &
//	cd clients/go && go run ./examples/diloco -workers 2 -rounds 15 -wire int8
//
// -wire int8 sends int8-block pseudo-gradients and gets bfloat16 parameters back
// (DESIGN.md §3); float32 (default) is exact. A worker whose round closed without it
// (409 stale-gradient, e.g. it joined late) adopts the current global parameters.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"math/rand"
	"os"
	"sync"

	optd "github.com/optd-dev/optd/clients/go"
)

var trueW = []float64{1, -2, 0.5}

const trueB = 0.3

type shard struct {
	xs [][3]float64
	ys []float64
}

func newShard(seed int64, n int) shard {
	rng := rand.New(rand.NewSource(seed))
	s := shard{make([][3]float64, n), make([]float64, n)}
	for i := range s.xs {
		s.ys[i] = trueB
		for j := range s.xs[i] {
			s.xs[i][j] = rng.NormFloat64()
			s.ys[i] += s.xs[i][j] * trueW[j]
		}
	}
	return s
}

// grad is the mean squared error of (w, b) on the shard and its gradient.
func (s shard) grad(w []float64, b float64) (mse float64, gw []float64, gb float64) {
	gw, n := make([]float64, len(w)), float64(len(s.xs))
	for i, x := range s.xs {
		e := b - s.ys[i]
		for j := range x {
			e += x[j] * w[j]
		}
		mse += e * e / n
		for j := range x {
			gw[j] += 2 * e * x[j] / n
		}
		gb += 2 * e / n
	}
	return mse, gw, gb
}

type config struct {
	rounds, inner int
	innerLR       float64
	wire          string
}

// worker is one DiLoCo worker: join, read the global parameters, then per round H
// local SGD steps and one pseudo-gradient step of the session.
func worker(ctx context.Context, s *optd.Session, data shard, cfg config, ready *sync.WaitGroup) (stale int, err error) {
	defer func() { _ = s.Leave(ctx, "") }()
	if _, err := s.Join(ctx, ""); err != nil {
		return 0, err
	}
	ready.Done()
	ready.Wait() // the workers start together; one that comes late is waited for from its join on
	p, err := s.Params(ctx, optd.ParamsOptions{Worker: s.Worker})
	if err != nil {
		return 0, err
	}
	global, base := p.Params, p.Version
	opts := optd.StepOptions{}
	if cfg.wire != "float32" {
		opts.GradDType, opts.ParamsDType = cfg.wire, optd.ParamsBFloat16
	}
	for r := 0; r < cfg.rounds; r++ {
		w, b := global["w"].Float64s(), global["b"].At(0)
		local := append([]float64(nil), w...)
		lb, mse := b, 0.0
		for h := 0; h < cfg.inner; h++ {
			var gw []float64
			var gb float64
			mse, gw, gb = data.grad(local, lb)
			for j := range local {
				local[j] -= cfg.innerLR * gw[j]
			}
			lb -= cfg.innerLR * gb
		}
		dw := make([]float32, len(w))
		for j := range w {
			dw[j] = float32(w[j] - local[j])
		}
		o := opts
		o.BaseVersion, o.Loss = optd.Ptr(base), optd.Ptr(mse)
		res, err := s.Step(ctx, optd.Tensors{"w": optd.NewTensor(dw), "b": optd.Scalar(float32(b - lb))}, o)
		if optd.IsSlug(err, optd.SlugStaleGradient) { // the round closed without us
			stale++
			p, err = s.Params(ctx, optd.ParamsOptions{Worker: s.Worker, ParamsDType: opts.ParamsDType})
			if err != nil {
				return stale, err
			}
			global, base = p.Params, p.Version
			continue
		}
		if err != nil {
			return stale, err
		}
		global, base = res.Params, res.Version
	}
	return stale, nil
}

func main() {
	url := flag.String("url", envOr("OPTD_URL", "http://127.0.0.1:8000"), "optd server")
	workers := flag.Int("workers", 2, "workers")
	rounds := flag.Int("rounds", 15, "outer rounds (syncs) per worker")
	inner := flag.Int("inner", 10, "local SGD steps between syncs (H)")
	wire := flag.String("wire", "float32", "pseudo-gradients as float32, bfloat16 or int8 (answers bfloat16)")
	flag.Parse()
	ctx := context.Background()
	client := optd.NewClient(*url)
	s, err := client.CreateSession(ctx, optd.CreateRequest{
		Optimizer:    "sgd",
		Hyperparams:  map[string]any{"lr": 0.7, "momentum": 0.9, "nesterov": true},
		Mode:         "sync",
		Workers:      *workers,
		MinWorkers:   1, // a round closes once every live member has contributed
		WorkerLeaseS: optd.Ptr(10.0),
		Params:       optd.Tensors{"w": optd.NewTensor(make([]float32, 3)), "b": optd.Scalar(0)},
	})
	if err != nil {
		log.Fatal(err)
	}
	all := newShard(1000, 256) // held-out data for the loss of the global parameters
	first, _, _ := all.grad(make([]float64, 3), 0)

	cfg := config{rounds: *rounds, inner: *inner, innerLR: 0.05, wire: *wire}
	var ready, done sync.WaitGroup
	ready.Add(*workers)
	errs, stale := make([]error, *workers), make([]int, *workers)
	for k := 0; k < *workers; k++ {
		done.Add(1)
		go func(k int) {
			defer done.Done()
			stale[k], errs[k] = worker(ctx, client.Session(s.ID, fmt.Sprintf("w%d", k)), newShard(int64(42+k), 64), cfg, &ready)
		}(k)
	}
	done.Wait()
	for _, err := range errs {
		if err != nil {
			log.Fatal(err)
		}
	}
	p, err := s.Params(ctx, optd.ParamsOptions{})
	if err != nil {
		log.Fatal(err)
	}
	last, _, _ := all.grad(p.Params["w"].Float64s(), p.Params["b"].At(0))
	nstale := 0
	for _, n := range stale {
		nstale += n
	}
	fmt.Printf("session %s: %d workers, rounds %d (stale %d), loss %.3e -> %.3e, w=%.3f b=%.3f\n",
		s.ID, *workers, p.Version, nstale, first, last, p.Params["w"].Data, p.Params["b"].At(0))
	if err := s.Delete(ctx); err != nil {
		log.Fatal(err)
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
