// Package optd is the Go SDK of optd, an optimizer-as-a-service: a server keeps
// Adam-family optimizer state, workers send gradients and get new parameters back.
//
//	c := optd.NewClient("http://127.0.0.1:8000")
//	s, err := c.CreateSession(ctx, optd.CreateRequest{Optimizer: "adam",
//		Hyperparams: map[string]any{"lr": 0.1}, Params: optd.Tensors{"w": optd.NewTensor(w)}})
//	res, err := s.Step(ctx, optd.Tensors{"w": optd.NewTensor(grad)}, optd.StepOptions{})
//	w = res.Params["w"].Data
//
// Standard library only; every call takes a context.Context.
package optd

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

const (
	mediaJSON        = "application/json"
	mediaSafetensors = "application/x-safetensors"
	// Version of this SDK.
	Version = "0.1.0"
)

// Client talks to one optd server. It is safe for concurrent use.
type Client struct {
	baseURL        string
	http           *http.Client
	header         map[string]string
	json           bool
	retries        int
	backoff        time.Duration
	maxBackoff     time.Duration
	timeout        time.Duration
	barrierTimeout time.Duration
	pollWait       time.Duration
	owners         ownerCache // sessions' owner processes, learnt from 307s (http.go)
}

// Option configures a Client.
type Option func(*Client)

// WithAPIKey sends `Authorization: Bearer <key>`.
func WithAPIKey(key string) Option {
	return func(c *Client) { c.header["Authorization"] = "Bearer " + key }
}

// WithRetries sets how many times a failed request is retried (default 5).
func WithRetries(n int) Option { return func(c *Client) { c.retries = n } }

// WithBackoff sets the exponential backoff: retry k waits uniform(0, min(max, base*2^k)).
func WithBackoff(base, max time.Duration) Option {
	return func(c *Client) { c.backoff, c.maxBackoff = base, max }
}

// WithHTTPClient uses hc instead of a client of its own.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http = hc } }

// WithJSON sends and receives tensors as JSON instead of safetensors.
func WithJSON() Option { return func(c *Client) { c.json = true } }

// WithTimeout bounds each attempt (default 120 s); long-polls add their wait.
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithBarrier sets how long a sync-mode step may wait for its round in total
// (default 10 min) and the wait of each long-poll after a 202 (default 30 s).
func WithBarrier(total, poll time.Duration) Option {
	return func(c *Client) { c.barrierTimeout, c.pollWait = total, poll }
}

// WithHeader adds a header to every request.
func WithHeader(key, value string) Option { return func(c *Client) { c.header[key] = value } }

// NewClient returns a client of the server at baseURL (e.g. http://127.0.0.1:8000).
func NewClient(baseURL string, opts ...Option) *Client {
	c := &Client{
		baseURL: strings.TrimRight(baseURL, "/"), http: &http.Client{CheckRedirect: keepRedirect},
		header:  map[string]string{"User-Agent": "optd-go/" + Version},
		retries: 5, backoff: 200 * time.Millisecond, maxBackoff: 10 * time.Second,
		timeout: 120 * time.Second, barrierTimeout: 10 * time.Minute, pollWait: 30 * time.Second,
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

func (c *Client) tensorType() string {
	if c.json {
		return mediaJSON
	}
	return mediaSafetensors
}

// CreateRequest configures a new session; fields are the server's (DESIGN.md §3).
type CreateRequest struct {
	Optimizer   string           `json:"optimizer"`
	Params      Tensors          `json:"-"`
	DType       string           `json:"dtype,omitempty"` // "float32" (default) or "float64"
	Schedule    map[string]any   `json:"schedule,omitempty"`
	MaxGradNorm *float64         `json:"max_grad_norm,omitempty"`
	CheckFinite *bool            `json:"check_finite,omitempty"`
	Groups      []map[string]any `json:"groups,omitempty"`
	Mode        string           `json:"mode,omitempty"` // "async" (default) or "sync"
	Workers     int              `json:"workers,omitempty"`
	// Elastic rounds (sync mode): close with MinWorkers once every live member (one
	// heard from within WorkerLeaseS seconds) has contributed, or RoundTimeoutS after
	// the round's first contribution.
	MinWorkers    int               `json:"min_workers,omitempty"`
	RoundTimeoutS *float64          `json:"round_timeout_s,omitempty"`
	WorkerLeaseS  *float64          `json:"worker_lease_s,omitempty"`
	MaxStaleness  *int              `json:"max_staleness,omitempty"`
	StalenessLR   string            `json:"staleness_lr,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	TTLSeconds    *int              `json:"ttl_s,omitempty"`
	// Shards splits the parameters over this many shard sessions (1-64, async mode;
	// DESIGN.md §3, sharded sessions); 0 leaves it to the server (unsharded).
	Shards int `json:"shards,omitempty"`
	// Hyperparams by torch name: lr, betas, weight_decay, amsgrad, ...
	Hyperparams map[string]any `json:"hyperparams,omitempty"`
}

// Ptr returns a pointer to v, for the optional fields.
func Ptr[T any](v T) *T { return &v }

// CreateSession creates a session with its initial parameters.
func (c *Client) CreateSession(ctx context.Context, req CreateRequest) (*Session, error) {
	config, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	var body []byte
	if c.json {
		var fields map[string]any
		_ = json.Unmarshal(config, &fields)
		body, err = jsonBody(fields, "params", req.Params)
	} else {
		body, err = EncodeSafetensors(Safetensors{Tensors: req.Params, Metadata: map[string]string{"config": string(config)}})
	}
	if err != nil {
		return nil, err
	}
	var info SessionInfo
	r := request{method: "POST", path: "/v1/sessions", body: body, contentType: c.tensorType(), header: map[string]string{"Idempotency-Key": newKey()}}
	if err := c.doJSON(ctx, r, &info); err != nil {
		return nil, err
	}
	s := c.Session(info.ID, "")
	s.setVersion(info.Version)
	s.shards.learn(&info)
	return s, nil
}

// Session is a handle on an existing session (no request is made); worker is the
// default worker id of its steps (sync mode needs one per worker).
func (c *Client) Session(id, worker string) *Session {
	return &Session{client: c, ID: id, Worker: worker}
}

// ListOptions selects a page of sessions.
type ListOptions struct {
	Labels map[string]string
	Limit  int
	Cursor string
}

// SessionPage is one page of sessions; NextCursor is "" on the last page.
type SessionPage struct {
	Sessions   []SessionInfo `json:"sessions"`
	NextCursor string        `json:"next_cursor"`
}

// ListSessions returns one page of sessions carrying all of opts.Labels.
func (c *Client) ListSessions(ctx context.Context, opts ListOptions) (*SessionPage, error) {
	q := url.Values{}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	if opts.Cursor != "" {
		q.Set("cursor", opts.Cursor)
	}
	for k, v := range opts.Labels {
		q.Add("label", k+"="+v)
	}
	var page SessionPage
	return &page, c.doJSON(ctx, request{method: "GET", path: "/v1/sessions", query: q}, &page)
}

// Optimizers is GET /v1/optimizers: every optimizer with its hyperparameter schema.
func (c *Client) Optimizers(ctx context.Context) (map[string]any, error) {
	var out map[string]any
	return out, c.doJSON(ctx, request{method: "GET", path: "/v1/optimizers"}, &out)
}

func (c *Client) doJSON(ctx context.Context, req request, out any) error {
	r, err := c.send(ctx, req)
	if err != nil || out == nil || len(r.body) == 0 {
		return err
	}
	return json.Unmarshal(r.body, out)
}

// tensorBody encodes tensors and scalar fields in the client's wire format.
func (c *Client) tensorBody(tensors Tensors, key string, fields map[string]any) ([]byte, error) {
	if c.json {
		return jsonBody(fields, key, tensors)
	}
	meta, err := metadataFields(nil, fields)
	if err != nil {
		return nil, err
	}
	return EncodeSafetensors(Safetensors{Tensors: tensors, Metadata: meta})
}

// parseTensors returns the scalar fields (JSON values) and tensors of a tensor reply.
func parseTensors(r *reply, key string) (map[string]json.RawMessage, Tensors, error) {
	ct := strings.ToLower(strings.TrimSpace(strings.Split(r.header.Get("Content-Type"), ";")[0]))
	fields := map[string]json.RawMessage{}
	if ct == mediaSafetensors || ct == "application/octet-stream" {
		f, err := DecodeSafetensors(r.body)
		for k, v := range f.Metadata {
			if json.Valid([]byte(v)) {
				fields[k] = json.RawMessage(v)
			} else {
				fields[k], _ = json.Marshal(v)
			}
		}
		return fields, f.Tensors, err
	}
	if err := json.Unmarshal(r.body, &fields); err != nil {
		return nil, nil, err
	}
	var raw map[string]jsonTensor
	if err := json.Unmarshal(fields[key], &raw); err != nil {
		return nil, nil, fmt.Errorf("optd: malformed %s in the response: %v", key, err)
	}
	delete(fields, key)
	t, err := decodeJSONTensors(raw)
	return fields, t, err
}

// newKey is a random UUID v4 (an Idempotency-Key).
func newKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// metadataFields adds scalar fields to a safetensors __metadata__ map (nil: a new one,
// or none when there are no fields): strings as they are, anything else as JSON.
func metadataFields(meta map[string]string, fields map[string]any) (map[string]string, error) {
	for k, v := range fields {
		if meta == nil {
			meta = map[string]string{}
		}
		if s, ok := v.(string); ok {
			meta[k] = s
			continue
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		meta[k] = string(b)
	}
	return meta, nil
}
