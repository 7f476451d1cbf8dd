// Command linreg fits y = x·w + b by least squares against optd: it computes the
// gradients, the server keeps Adam's state and returns the new parameters.
//
//	optd serve &
//	cd clients/go && go run ./examples/linreg -steps 150   # or OPTD_URL=...
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"math/rand"
	"os"

	optd "github.com/optd-dev/optd/clients/go"
)

func main() {
	url := flag.String("url", envOr("OPTD_URL", "http://127.0.0.1:8000"), "optd server")
	steps := flag.Int("steps", 150, "optimizer steps")
	flag.Parse()
	ctx := context.Background()

	// 64 samples of y = x·[1, -2, 0.5] + 0.3
	rng := rand.New(rand.NewSource(42))
	trueW := []float64{1, -2, 0.5}
	xs, ys := make([][3]float64, 64), make([]float64, 64)
	for i := range xs {
		ys[i] = 0.3
		for j := range xs[i] {
			xs[i][j] = rng.NormFloat64()
			ys[i] += xs[i][j] * trueW[j]
		}
	}

	client := optd.NewClient(*url)
	s, err := client.CreateSession(ctx, optd.CreateRequest{
		Optimizer:   "adam",
		Hyperparams: map[string]any{"lr": 0.1},
		Params:      optd.Tensors{"w": optd.NewTensor(make([]float32, 3)), "b": optd.Scalar(0)},
	})
	if err != nil {
		log.Fatal(err)
	}
	w, b, mse := make([]float32, 3), float32(0), 0.0
	for t := 0; t < *steps; t++ {
		gw, gb := make([]float32, 3), float32(0)
		mse = 0
		for i, x := range xs {
			e := float64(b) - ys[i]
			for j := range x {
				e += x[j] * float64(w[j])
			}
			mse += e * e / float64(len(xs))
			for j := range x {
				gw[j] += float32(2 * e * x[j] / float64(len(xs)))
			}
			gb += float32(2 * e / float64(len(xs)))
		}
		res, err := s.Step(ctx, optd.Tensors{"w": optd.NewTensor(gw), "b": optd.Scalar(gb)}, optd.StepOptions{Loss: optd.Ptr(mse)})
		if err != nil {
			log.Fatal(err)
		}
		w, b = res.Params["w"].Data, res.Params["b"].Data[0]
	}
	fmt.Printf("session %s: mse %.3e after %d steps, w=%.3f b=%.3f\n", s.ID, mse, *steps, w, b)
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
