package optd

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Session is one optimizer session on the server. Its methods are safe for
// concurrent use.
type Session struct {
	client *Client
	ID     string
	// Worker is the default worker id sent with every step.
	Worker  string
	version atomic.Int64
	shards  shardState // sharded sessions (shards.go)
}

// Version is the session's version as of the last response this handle received.
func (s *Session) Version() int { return int(s.version.Load()) }

func (s *Session) setVersion(v int) { s.version.Store(int64(v)) }

func (s *Session) path(tail string) string { return "/v1/sessions/" + url.PathEscape(s.ID) + tail }

// SessionInfo is the session document (GET /v1/sessions/{id}).
type SessionInfo struct {
	ID           string               `json:"id"`
	Optimizer    string               `json:"optimizer"`
	Hyperparams  map[string]any       `json:"hyperparams"`
	DType        string               `json:"dtype"`
	Schedule     map[string]any       `json:"schedule"`
	MaxGradNorm  *float64             `json:"max_grad_norm"`
	CheckFinite  bool                 `json:"check_finite"`
	Groups       []map[string]any     `json:"groups"`
	Mode         string               `json:"mode"`
	Workers      *int                 `json:"workers"`
	MinWorkers   *int                 `json:"min_workers"`
	RoundTimeout *float64             `json:"round_timeout_s"`
	WorkerLease  *float64             `json:"worker_lease_s"`
	MaxStaleness *int                 `json:"max_staleness"`
	StalenessLR  string               `json:"staleness_lr"`
	Labels       map[string]string    `json:"labels"`
	TTLSeconds   *int                 `json:"ttl_s"`
	Version      int                  `json:"version"`
	Step         int                  `json:"step"`
	LR           float64              `json:"lr"`
	LastLoss     *float64             `json:"last_loss"`
	NumParams    int                  `json:"num_params"`
	StateBytes   int                  `json:"state_bytes"`
	Params       map[string]ParamInfo `json:"params"`
	Shards       []ShardInfo          `json:"shards"`           // a sharded session's shard sessions
	Repair       *ShardRepair         `json:"repair,omitempty"` // a step of a dead client that some shards have not taken
	CreatedAt    float64              `json:"created_at"`
	UpdatedAt    float64              `json:"updated_at"`
}

// ParamInfo is one parameter's shape and step count.
type ParamInfo struct {
	Shape []int `json:"shape"`
	Step  int   `json:"step"`
}

// StepOptions are the optional parts of a step.
type StepOptions struct {
	BaseVersion    *int           // the version the gradient was computed on
	Worker         string         // default: the session's Worker
	Loss           *float64       // kept in the session's history
	Wait           *time.Duration // how long a sync step may wait on the server (default 30 s)
	OnlyUpdated    bool           // return only the stepped parameters
	IfMatch        *int           // apply only at this version, else 412
	IdempotencyKey string         // default: a fresh UUID per call, reused by its retries
	// GradDType is how the gradients travel: GradFloat32 ("" too), GradBFloat16
	// (rounded to nearest even) or GradInt8 (int8-block in blocks of Block values,
	// default DefaultBlock; safetensors only). DESIGN.md §3, compressed tensors.
	GradDType string
	Block     int
	// ParamsDType ParamsBFloat16 asks for the parameters rounded to bfloat16
	// (Optd-Response-Dtype); they decode to float32 with DType BF16.
	ParamsDType string
}

// Barrier is the status of a sync round that was not complete in time (HTTP 202).
type Barrier struct {
	Version int `json:"version"`
	Have    int `json:"have"`
	Need    int `json:"need"`
}

// StepResult is a step's answer. After a 202, Barrier is set, the parameters come
// from a long-poll, and Step, LR and GradNorm are unknown (0).
type StepResult struct {
	Params    Tensors
	Version   int
	Step      int
	LR        float64
	GradNorm  float64
	Staleness *int
	Replayed  bool
	Barrier   *Barrier
}

func seconds(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) }

func ifMatch(v *int) map[string]string {
	if v == nil {
		return map[string]string{}
	}
	return map[string]string{"If-Match": fmt.Sprintf(`"%d"`, *v)}
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// plainStep is Step on a session that is not sharded.
func (s *Session) plainStep(ctx context.Context, grads Tensors, opts StepOptions, worker string) (*StepResult, error) {
	c := s.client
	key := opts.IdempotencyKey
	if key == "" {
		key = newKey()
	}
	header := ifMatch(opts.IfMatch)
	header["Idempotency-Key"] = key
	fields := map[string]any{}
	if c.json {
		if opts.BaseVersion != nil {
			fields["base_version"] = *opts.BaseVersion
		}
		if worker != "" {
			fields["worker"] = worker
		}
		if opts.Loss != nil {
			fields["loss"] = *opts.Loss
		}
	} else {
		if opts.BaseVersion != nil {
			header["Optd-Base-Version"] = strconv.Itoa(*opts.BaseVersion)
		}
		if opts.Loss != nil {
			header["Optd-Loss"] = strconv.FormatFloat(*opts.Loss, 'g', -1, 64)
		}
		if printableASCII(worker) && worker != "" {
			header["Optd-Worker"] = worker
		} else if worker != "" {
			fields["worker"] = worker // header values are Latin-1; metadata carries any string
		}
	}
	if opts.ParamsDType != "" && opts.ParamsDType != ParamsFloat32 {
		header["Optd-Response-Dtype"] = opts.ParamsDType
	}
	body, err := c.gradBody(grads, fields, opts)
	if err != nil {
		return nil, err
	}
	q, wait := url.Values{}, 30*time.Second
	if opts.Wait != nil {
		q.Set("wait", seconds(*opts.Wait))
		wait = *opts.Wait
	}
	if opts.OnlyUpdated {
		q.Set("return", "updated")
	}
	r, err := c.send(ctx, request{method: "POST", path: s.path("/step"), query: q, body: body,
		contentType: c.tensorType(), accept: c.tensorType(), header: header, wait: wait})
	if err != nil {
		return nil, err
	}
	if r.status == 202 {
		var doc struct{ Barrier Barrier }
		if err := json.Unmarshal(r.body, &doc); err != nil {
			return nil, err
		}
		return s.awaitBarrier(ctx, doc.Barrier, opts.ParamsDType)
	}
	res, err := parseStep(r)
	if err != nil {
		return nil, err
	}
	s.setVersion(res.Version)
	return res, nil
}

// parseStep reads a step's answer.
func parseStep(r *reply) (*StepResult, error) {
	f, params, err := parseTensors(r, "params")
	if err != nil {
		return nil, err
	}
	res := &StepResult{Params: params, Replayed: strings.EqualFold(r.header.Get("Idempotent-Replayed"), "true")}
	for k, dst := range map[string]any{"version": &res.Version, "step": &res.Step, "lr": &res.LR, "grad_norm": &res.GradNorm, "staleness": &res.Staleness} {
		if raw, ok := f[k]; ok {
			if err := json.Unmarshal(raw, dst); err != nil {
				return nil, fmt.Errorf("optd: malformed %s in the step response: %v", k, err)
			}
		}
	}
	return res, nil
}

// awaitBarrier long-polls for version+1 after a sync step answered 202.
func (s *Session) awaitBarrier(ctx context.Context, b Barrier, dtype string) (*StepResult, error) {
	target := b.Version + 1
	deadline := time.Now().Add(s.client.barrierTimeout)
	for {
		p, err := s.Params(ctx, ParamsOptions{MinVersion: &target, Wait: &s.client.pollWait, ParamsDType: dtype})
		if err != nil {
			return nil, err
		}
		if p.Version >= target {
			return &StepResult{Params: p.Params, Version: p.Version, Barrier: &b}, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w: round on version %d (have %d of %d) after %v", ErrBarrierTimeout, b.Version, b.Have, b.Need, s.client.barrierTimeout)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(s.client.backoff):
		}
	}
}

// ParamsOptions selects parameters; MinVersion with Wait long-polls.
type ParamsOptions struct {
	Names      []string
	MinVersion *int
	Wait       *time.Duration
	// ParamsDType ParamsBFloat16 asks for the values rounded to bfloat16.
	ParamsDType string
	// Worker, when set, renews this worker's lease in a sync session (Optd-Worker).
	Worker string
}

// ParamsResult is the parameters at a version.
type ParamsResult struct {
	Version int
	Params  Tensors
}

// Params returns the current parameters; with MinVersion and Wait it waits until the
// session reaches that version or Wait passes (then compare Version).
func (s *Session) Params(ctx context.Context, opts ParamsOptions) (*ParamsResult, error) {
	q, wait := url.Values{}, time.Duration(0)
	if opts.Names != nil {
		q.Set("names", strings.Join(opts.Names, ","))
	}
	if opts.MinVersion != nil {
		q.Set("min_version", strconv.Itoa(*opts.MinVersion))
	}
	if opts.Wait != nil {
		q.Set("wait", seconds(*opts.Wait))
		wait = *opts.Wait
	}
	c := s.client
	header := map[string]string{}
	if opts.ParamsDType != "" && opts.ParamsDType != ParamsFloat32 {
		header["Optd-Response-Dtype"] = opts.ParamsDType
	}
	if opts.Worker != "" && printableASCII(opts.Worker) {
		header["Optd-Worker"] = opts.Worker
	}
	r, err := c.send(ctx, request{method: "GET", path: s.path("/params"), query: q, accept: c.tensorType(), header: header, wait: wait})
	if err != nil {
		return nil, err
	}
	f, params, err := parseTensors(r, "params")
	if err != nil {
		return nil, err
	}
	res := &ParamsResult{Params: params}
	if err := json.Unmarshal(f["version"], &res.Version); err != nil {
		return nil, fmt.Errorf("optd: no version in the params response: %v", err)
	}
	s.setVersion(res.Version)
	return res, nil
}
