package optd

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
)

// Sharded sessions (DESIGN.md §3): a session created with Shards: K keeps its
// parameters in K shard sessions "{id}-s{k}". Step splits the gradient over them,
// prepares every shard, commits shard 0 and then the others, and assembles the result
// (shardstep.go). Params on the session itself are assembled by the server.

// ShardInfo is one shard session in the session info's "shards" list.
type ShardInfo struct {
	ID      string `json:"id"`
	Index   int    `json:"index"`
	Start   int    `json:"start"` // positions in the flat layout (the order of params)
	Stop    int    `json:"stop"`
	Version int    `json:"version"`
	// Tensors are the shard's pieces: element ranges of tensors flattened row-major.
	Tensors []ShardPiece `json:"tensors"`
}

// ShardRepair is the session info's "repair": shard 0's last commit while some shards have
// not taken it. Each shard at Version-1 is finished with its token Tokens[index], Sumsq,
// Loss and Worker, and If-Match Version-1 (Step does it; DESIGN.md §3).
type ShardRepair struct {
	Version int               `json:"version"`
	Tokens  []string          `json:"tokens"`
	Sumsq   []json.RawMessage `json:"sumsq"` // verbatim ("NaN" too)
	Loss    *float64          `json:"loss,omitempty"`
	Worker  string            `json:"worker,omitempty"`
}

// ShardPiece is elements [Start, Stop) of the tensor Name, flattened row-major.
type ShardPiece struct {
	Name  string `json:"name"`
	Start int    `json:"start"`
	Stop  int    `json:"stop"`
}

// shardLayout is what a sharded step needs: the shards and every tensor's shape.
type shardLayout struct {
	shards []ShardInfo
	shapes map[string][]int
}

// shardState is a session handle's knowledge of its shards.
type shardState struct {
	mu      sync.Mutex
	known   bool
	layout  *shardLayout // nil: not sharded (or not known yet)
	pending *pendingCommit
}

func (st *shardState) learn(info *SessionInfo) {
	l := layoutOf(info)
	st.mu.Lock()
	defer st.mu.Unlock()
	st.known, st.layout = true, l
}

func (st *shardState) get() (known bool, l *shardLayout, p *pendingCommit) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.known, st.layout, st.pending
}

// hold keeps p as the step to finish (done: forgets it, if it is still the one kept).
func (st *shardState) hold(p *pendingCommit, done bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !done {
		st.pending = p
	} else if st.pending == p {
		st.pending = nil
	}
}

// layoutOf is the layout of a sharded session's info, nil when it is not sharded.
func layoutOf(info *SessionInfo) *shardLayout {
	if len(info.Shards) == 0 {
		return nil
	}
	l := &shardLayout{shards: append([]ShardInfo(nil), info.Shards...), shapes: map[string][]int{}}
	sort.SliceStable(l.shards, func(i, j int) bool { return l.shards[i].Index < l.shards[j].Index })
	for name, p := range info.Params {
		l.shapes[name] = p.Shape
	}
	return l
}

func numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// splitGrads is each shard's part of grads: 1-D pieces under the tensors' names.
func splitGrads(l *shardLayout, grads Tensors) ([]Tensors, error) {
	for name, t := range grads {
		shape, ok := l.shapes[name]
		if !ok {
			return nil, fmt.Errorf("optd: grads: unknown parameter %q", name)
		}
		if t.Len() != numel(shape) {
			return nil, fmt.Errorf("optd: grads[%q]: shape %v does not match the parameter's %v", name, t.Shape, shape)
		}
	}
	parts := make([]Tensors, len(l.shards))
	for k, shard := range l.shards {
		parts[k] = Tensors{}
		for _, p := range shard.Tensors {
			g, ok := grads[p.Name]
			if !ok {
				continue
			}
			piece := Tensor{Shape: []int{p.Stop - p.Start}, DType: g.DType}
			if g.Data64 != nil {
				piece.Data64 = g.Data64[p.Start:p.Stop]
			} else {
				piece.Data = g.Data[p.Start:p.Stop]
			}
			parts[k][p.Name] = piece
		}
	}
	return parts, nil
}

// assembleParts makes whole tensors from the shards' pieces; a tensor with a piece
// missing (OnlyUpdated) is left out.
func assembleParts(l *shardLayout, parts []Tensors) Tensors {
	out := Tensors{}
	type at struct {
		start int
		t     Tensor
		ok    bool
	}
	pieces := map[string][]at{}
	for k, shard := range l.shards {
		for _, p := range shard.Tensors {
			var t Tensor
			ok := false
			if k < len(parts) {
				t, ok = parts[k][p.Name]
			}
			pieces[p.Name] = append(pieces[p.Name], at{p.Start, t, ok})
		}
	}
	for name, shape := range l.shapes {
		list, complete := pieces[name], len(pieces[name]) > 0
		for _, p := range list {
			complete = complete && p.ok
		}
		if !complete {
			continue
		}
		first, n := list[0].t, numel(shape)
		whole := Tensor{Shape: append([]int{}, shape...), DType: first.DType}
		if first.Data64 != nil {
			whole.Data64 = make([]float64, n)
		} else {
			whole.Data = make([]float32, n)
		}
		for _, p := range list {
			if whole.Data64 != nil {
				copy(whole.Data64[p.start:], p.t.Data64)
			} else {
				copy(whole.Data[p.start:], p.t.Data)
			}
		}
		out[name] = whole
	}
	return out
}

// Step applies gradients (all parameters or a subset) and returns the new parameters.
//
// On a sharded session (CreateRequest.Shards) the step is the two-phase protocol over
// the shard sessions. A handle learns that a session is sharded from CreateSession,
// Info, or the 409 a step on a sharded session answers. A step that an error left
// half-applied (shard 0 committed, others not) is finished by this handle's next Step,
// which returns that step's result when given the same IdempotencyKey. Shards that stay
// at different versions give an error wrapping ErrShardsDiverged.
func (s *Session) Step(ctx context.Context, grads Tensors, opts StepOptions) (*StepResult, error) {
	worker := opts.Worker
	if worker == "" {
		worker = s.Worker
	}
	known, layout, p := s.shards.get()
	if p != nil && layout != nil { // this handle's last step may not be on every shard yet
		res, err := commitAll(ctx, s.client, layout, p, s.shards.hold)
		if err != nil {
			return nil, err
		}
		if res != nil {
			s.setVersion(res.Version)
			if opts.IdempotencyKey != "" && opts.IdempotencyKey == p.key {
				return res, nil
			}
		}
	}
	if !known || layout == nil {
		res, err := s.plainStep(ctx, grads, opts, worker)
		if known || !IsSlug(err, SlugConflict) {
			return res, err
		}
		if _, ierr := s.Info(ctx); ierr != nil { // a step on a sharded session is 409: learn its shards
			return nil, err
		}
		if _, layout, _ = s.shards.get(); layout == nil {
			return nil, err
		}
	}
	res, err := shardedStep(ctx, s.client, layout, grads, opts, worker, s.shards.hold)
	if err != nil {
		return nil, err
	}
	s.setVersion(res.Version)
	return res, nil
}
