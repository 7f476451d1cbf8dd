package optd

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// Patch changes a session between steps (PATCH /v1/sessions/{id}); nil and empty
// fields are left as they are.
type Patch struct {
	// Hyperparams by torch name, merged into the session's: {"lr": 1e-4}.
	Hyperparams  map[string]any    `json:"hyperparams,omitempty"`
	Schedule     map[string]any    `json:"schedule,omitempty"`
	MaxGradNorm  *float64          `json:"max_grad_norm,omitempty"`
	CheckFinite  *bool             `json:"check_finite,omitempty"`
	MaxStaleness *int              `json:"max_staleness,omitempty"`
	StalenessLR  string            `json:"staleness_lr,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	TTLSeconds   *int              `json:"ttl_s,omitempty"`
	// Elastic rounds (sync mode), see CreateRequest.
	MinWorkers    *int     `json:"min_workers,omitempty"`
	RoundTimeoutS *float64 `json:"round_timeout_s,omitempty"`
	WorkerLeaseS  *float64 `json:"worker_lease_s,omitempty"`
	IfMatch       *int     `json:"-"`
}

// Update applies a Patch and returns the new session document.
func (s *Session) Update(ctx context.Context, p Patch) (*SessionInfo, error) {
	body, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	var info SessionInfo
	r := request{method: "PATCH", path: s.path(""), body: body, contentType: mediaJSON, header: ifMatch(p.IfMatch)}
	if err := s.client.doJSON(ctx, r, &info); err != nil {
		return nil, err
	}
	s.setVersion(info.Version)
	return &info, nil
}

// Info returns the session document: config, version, step counts, shapes, lr.
func (s *Session) Info(ctx context.Context) (*SessionInfo, error) {
	var info SessionInfo
	if err := s.client.doJSON(ctx, request{method: "GET", path: s.path("")}, &info); err != nil {
		return nil, err
	}
	s.setVersion(info.Version)
	s.shards.learn(&info)
	return &info, nil
}

// Delete removes the session and all its state.
func (s *Session) Delete(ctx context.Context) error {
	return s.client.doJSON(ctx, request{method: "DELETE", path: s.path("")}, nil)
}

// SetParams overwrites some or all parameter values, keeping the optimizer state;
// it returns the new version.
func (s *Session) SetParams(ctx context.Context, params Tensors, ifMatchVersion *int) (int, error) {
	c := s.client
	body, err := c.tensorBody(params, "params", nil)
	if err != nil {
		return 0, err
	}
	return s.putVersion(ctx, request{method: "PUT", path: s.path("/params"), body: body, contentType: c.tensorType(), header: ifMatch(ifMatchVersion)})
}

func (s *Session) putVersion(ctx context.Context, r request) (int, error) {
	var doc struct{ Version int }
	if err := s.client.doJSON(ctx, r, &doc); err != nil {
		return 0, err
	}
	s.setVersion(doc.Version)
	return doc.Version, nil
}

// Checkpoint is a full session state: tensors "<slot>/<param name>" (param/w,
// exp_avg/w, ...) and the server's meta document (config, layout, step counts).
type Checkpoint struct {
	Version int
	Meta    map[string]any
	Tensors Tensors
}

// Slot returns {param name: tensor} of one slot ("param", "exp_avg", ...).
func (c *Checkpoint) Slot(slot string) Tensors {
	out := Tensors{}
	for k, t := range c.Tensors {
		if name := strings.TrimPrefix(k, slot+"/"); name != k {
			out[name] = t
		}
	}
	return out
}

// State returns the full checkpoint of the session.
func (s *Session) State(ctx context.Context) (*Checkpoint, error) {
	c := s.client
	r, err := c.send(ctx, request{method: "GET", path: s.path("/state"), accept: c.tensorType()})
	if err != nil {
		return nil, err
	}
	f, tensors, err := parseTensors(r, "tensors")
	if err != nil {
		return nil, err
	}
	ck := &Checkpoint{Tensors: tensors}
	meta, ok := f["meta"] // JSON; safetensors carries it as __metadata__["optd"]
	if !ok {
		meta = f["optd"]
	}
	if err := json.Unmarshal(meta, &ck.Meta); err != nil || ck.Meta == nil {
		return nil, fmt.Errorf("optd: malformed checkpoint response: no meta document")
	}
	if err := json.Unmarshal(f["version"], &ck.Version); err != nil {
		return nil, fmt.Errorf("optd: malformed checkpoint response: %v", err)
	}
	s.setVersion(ck.Version)
	return ck, nil
}

// LoadState restores a checkpoint into this session, creating it under this id when
// it does not exist; it returns the new version.
func (s *Session) LoadState(ctx context.Context, ck *Checkpoint, ifMatchVersion *int) (int, error) {
	c := s.client
	meta, err := json.Marshal(ck.Meta)
	if err != nil {
		return 0, err
	}
	fields := map[string]any{"optd": string(meta)}
	if c.json {
		fields = map[string]any{"version": ck.Version, "meta": ck.Meta}
	}
	body, err := c.tensorBody(ck.Tensors, "tensors", fields)
	if err != nil {
		return 0, err
	}
	return s.putVersion(ctx, request{method: "PUT", path: s.path("/state"), body: body, contentType: c.tensorType(), header: ifMatch(ifMatchVersion)})
}
