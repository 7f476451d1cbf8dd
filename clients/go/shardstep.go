package optd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"
)

// DivergenceWait is how long a sharded step waits for the shards' versions to agree
// (another client's step between its commits) before it gives up.
var DivergenceWait = 10 * time.Second

// problemPrepareExpired is the type of a commit whose prepared token is unknown.
const problemPrepareExpired = ProblemPrefix + "prepare-expired"

// ErrShardsDiverged is wrapped when a sharded session's shards stay at different
// versions: another client's step was between its commits for longer than DivergenceWait,
// or it died there, or a shard refused a commit after shard 0 took it. The session is
// half-applied: restore the shards from checkpoints (DESIGN.md §3).
var ErrShardsDiverged = errors.New("optd: the shards of a sharded session diverged")

// maxReprepare is how many prepare-expired answers in a row one commit takes.
const maxReprepare = 5

// pendingCommit is a sharded step from its prepare on: kept on the session while a
// commit's outcome is unknown.
type pendingCommit struct {
	key     string // the step's Idempotency-Key (the caller's, or a fresh one)
	version int
	sumsq   []json.RawMessage // every shard's list, in shard order, verbatim ("NaN" too)
	bodies  [][]byte          // each shard's prepare body (encoded once)
	tokens  []string
	keys    []string // each shard commit's Idempotency-Key (new whenever its body changes)
	answers []*StepResult
	opts    StepOptions
	worker  string
}

type prepared struct {
	Prepared string            `json:"prepared"`
	Version  int               `json:"version"`
	Sumsq    []json.RawMessage `json:"sumsq"`
}

func shardPath(sh ShardInfo, tail string) string {
	return "/v1/sessions/" + url.PathEscape(sh.ID) + tail
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (c *Client) prepareShard(ctx context.Context, sh ShardInfo, body []byte) (*prepared, error) {
	var p prepared
	r := request{method: "POST", path: shardPath(sh, "/prepare"), body: body, contentType: c.tensorType()}
	if err := c.doJSON(ctx, r, &p); err != nil {
		return nil, err
	}
	if p.Prepared == "" {
		return nil, fmt.Errorf("optd: malformed prepare answer from shard %s", sh.ID)
	}
	return &p, nil
}

// parallel runs f(k) for every k in ks at once and returns their errors.
func parallel(ks []int, f func(k int) error) []error {
	errs := make([]error, len(ks))
	var wg sync.WaitGroup
	for i, k := range ks {
		wg.Add(1)
		go func(i, k int) {
			defer wg.Done()
			errs[i] = f(k)
		}(i, k)
	}
	wg.Wait()
	return errs
}

func firstErr(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// repairAfter is how long the shards' versions stay apart before a step looks for a
// repair (the step's own client may still be committing), and then between looks.
const repairAfter = 500 * time.Millisecond

// sessionOf is the session "{id}" of a layout: its shards are "{id}-s{k}" (DESIGN.md §3).
func sessionOf(l *shardLayout) string {
	return strings.TrimSuffix(l.shards[0].ID, "-s0")
}

// repairShards finishes a step a dead client left half-applied, if the session info says
// there is one (Repair): it commits every shard still at Repair.Version-1 with that
// step's token. A 412 there means another client finished it; prepare-expired means it
// cannot be finished (ErrShardsDiverged).
func (c *Client) repairShards(ctx context.Context, l *shardLayout) error {
	var info SessionInfo
	if err := c.doJSON(ctx, request{method: "GET", path: "/v1/sessions/" + url.PathEscape(sessionOf(l))}, &info); err != nil {
		return err
	}
	r := info.Repair
	if r == nil {
		return nil
	}
	var behind []ShardInfo
	for _, sh := range info.Shards {
		if sh.Version == r.Version-1 && sh.Index >= 0 && sh.Index < len(r.Tokens) {
			behind = append(behind, sh)
		}
	}
	ks := make([]int, len(behind))
	for i := range ks {
		ks[i] = i
	}
	v := r.Version - 1
	errs := parallel(ks, func(i int) error {
		sh := behind[i]
		doc := map[string]any{"prepared": r.Tokens[sh.Index], "sumsq": r.Sumsq}
		if r.Loss != nil {
			doc["loss"] = *r.Loss
		}
		if r.Worker != "" {
			doc["worker"] = r.Worker
		}
		body, err := json.Marshal(doc)
		if err != nil {
			return err
		}
		header := ifMatch(&v)
		header["Idempotency-Key"] = newKey()
		header["Prefer"] = "return=minimal"
		_, err = c.send(ctx, request{method: "POST", path: shardPath(sh, "/step"), body: body, contentType: mediaJSON, header: header})
		return err
	})
	for i, err := range errs {
		var prob *Problem
		if errors.As(err, &prob) && prob.Type == problemPrepareExpired {
			return fmt.Errorf("%w: shard %s is at version %d and the part of the step of version %d that another client "+
				"left half-applied is gone (%v): that step cannot be finished; restore the shards from checkpoints (DESIGN.md §3)",
				ErrShardsDiverged, behind[i].ID, v, r.Version, err)
		}
	}
	for _, err := range errs {
		if err != nil && !IsSlug(err, SlugPreconditionFailed) { // 412: another client repaired it
			return err
		}
	}
	return nil
}

// prepareAll prepares every shard; while their versions differ it waits a little and
// prepares the ones behind again (up to DivergenceWait, then ErrShardsDiverged). From half
// a second on, a step another client left half-applied is finished first (repairShards).
func (c *Client) prepareAll(ctx context.Context, l *shardLayout, bodies [][]byte) ([]*prepared, error) {
	got := make([]*prepared, len(l.shards))
	todo := make([]int, len(l.shards))
	for k := range todo {
		todo[k] = k
	}
	start := time.Now()
	deadline := start.Add(DivergenceWait)
	repairAt := start.Add(repairAfter)
	if DivergenceWait < repairAfter {
		repairAt = deadline
	}
	for i := 0; ; i++ {
		if err := firstErr(parallel(todo, func(k int) (err error) {
			got[k], err = c.prepareShard(ctx, l.shards[k], bodies[k])
			return err
		})); err != nil {
			return nil, err
		}
		top := got[0].Version
		for _, p := range got {
			if p.Version > top {
				top = p.Version
			}
		}
		todo = todo[:0]
		for k, p := range got {
			if p.Version < top {
				todo = append(todo, k)
			}
		}
		if len(todo) == 0 {
			return got, nil
		}
		now := time.Now()
		if !now.Before(repairAt) {
			if err := c.repairShards(ctx, l); err != nil {
				return nil, err
			}
			repairAt = time.Now().Add(repairAfter)
			continue // then prepare the shards behind again
		}
		if now.After(deadline) {
			named := make([]string, len(got))
			for k, p := range got {
				named[k] = fmt.Sprintf("%s at %d", l.shards[k].ID, p.Version)
			}
			return nil, fmt.Errorf("%w: the versions differ for %v (%s): a step of another client is half-applied "+
				"(restore the shards from checkpoints if it died; DESIGN.md §3)", ErrShardsDiverged, DivergenceWait, strings.Join(named, ", "))
		}
		d := 10 * time.Millisecond << i
		if d > 500*time.Millisecond || i > 10 {
			d = 500 * time.Millisecond
		}
		if rest := repairAt.Sub(now); rest < d {
			d = rest
		}
		if err := sleepCtx(ctx, d); err != nil {
			return nil, err
		}
	}
}

// commitShard commits shard k of p; prepare-expired prepares that shard again and
// commits with the same sumsq and If-Match.
func (c *Client) commitShard(ctx context.Context, l *shardLayout, p *pendingCommit, k int) error {
	o := p.opts
	for expired := 0; ; expired++ {
		doc := map[string]any{"prepared": p.tokens[k], "sumsq": p.sumsq}
		if k == 0 {
			// shard 0 keeps every shard's token: what finishes this step if this client dies
			// before the other commits (another shard's token prepared again later is its own)
			doc["tokens"] = append([]string(nil), p.tokens...)
		}
		if o.Loss != nil {
			doc["loss"] = *o.Loss
		}
		if p.worker != "" {
			doc["worker"] = p.worker
		}
		body, err := json.Marshal(doc)
		if err != nil {
			return err
		}
		header := ifMatch(&p.version)
		header["Idempotency-Key"] = p.keys[k]
		if o.ParamsDType != "" && o.ParamsDType != ParamsFloat32 {
			header["Optd-Response-Dtype"] = o.ParamsDType
		}
		q := url.Values{}
		if o.OnlyUpdated {
			q.Set("return", "updated")
		}
		r, err := c.send(ctx, request{method: "POST", path: shardPath(l.shards[k], "/step"), query: q, body: body,
			contentType: mediaJSON, accept: c.tensorType(), header: header})
		var prob *Problem
		if errors.As(err, &prob) && prob.Type == problemPrepareExpired && expired+1 < maxReprepare {
			np, perr := c.prepareShard(ctx, l.shards[k], p.bodies[k])
			if perr != nil {
				return perr
			}
			p.tokens[k], p.keys[k] = np.Prepared, newKey() // a new body needs a new key
			continue
		}
		if err != nil {
			return err
		}
		res, err := parseStep(r)
		if err != nil {
			return err
		}
		if res.Version == 0 {
			res.Version = p.version + 1
		}
		p.answers[k] = res
		return nil
	}
}

// outcomeUnknown is whether a failed commit may still have been applied (or may apply
// when sent again).
func outcomeUnknown(err error) bool {
	var p *Problem
	if !errors.As(err, &p) {
		return true
	}
	return p.Status >= 500 || p.Status == 408 || p.Status == 409 || p.Status == 429
}

// commitAll commits what p has left: shard 0 first, then the others in parallel. It
// returns the assembled result, or nil, nil when shard 0 refused the version (412:
// nothing of this step was applied). It fails with p held while a commit may be owed.
func commitAll(ctx context.Context, c *Client, l *shardLayout, p *pendingCommit, hold func(*pendingCommit, bool)) (*StepResult, error) {
	hold(p, false)
	if p.answers[0] == nil {
		if err := c.commitShard(ctx, l, p, 0); err != nil {
			stale := IsSlug(err, SlugPreconditionFailed)
			if stale || !outcomeUnknown(err) {
				hold(p, true)
			}
			if stale {
				return nil, nil
			}
			return nil, err
		}
	}
	var rest []int
	for k := 1; k < len(l.shards); k++ {
		if p.answers[k] == nil {
			rest = append(rest, k)
		}
	}
	errs := parallel(rest, func(k int) error { return c.commitShard(ctx, l, p, k) })
	if err := firstErr(errs); err != nil {
		for i, e := range errs { // a refusal (412, 404, 422, ...) is final: that shard will not take the step
			if e != nil && !outcomeUnknown(e) {
				hold(p, true)
				return nil, fmt.Errorf("%w: shard %s refused the commit of version %d after shard 0 took it (%v); "+
					"the session is half-applied: restore the shards from checkpoints (DESIGN.md §3)",
					ErrShardsDiverged, l.shards[rest[i]].ID, p.version, e)
			}
		}
		return nil, err // held: the next Step sends these commits again
	}
	hold(p, true)
	parts := make([]Tensors, len(p.answers))
	for k, a := range p.answers {
		parts[k] = a.Params
	}
	res := *p.answers[0]
	res.Params = assembleParts(l, parts)
	return &res, nil
}

// shardedStep is Step on a sharded session.
func shardedStep(ctx context.Context, c *Client, l *shardLayout, grads Tensors, opts StepOptions, worker string,
	hold func(*pendingCommit, bool)) (*StepResult, error) {
	parts, err := splitGrads(l, grads)
	if err != nil {
		return nil, err
	}
	bodies := make([][]byte, len(parts))
	for k, part := range parts {
		if bodies[k], err = c.gradBody(part, nil, opts); err != nil {
			return nil, err
		}
	}
	key := opts.IdempotencyKey
	if key == "" {
		key = newKey()
	}
	for {
		got, err := c.prepareAll(ctx, l, bodies)
		if err != nil {
			return nil, err
		}
		v := got[0].Version
		stale := &Problem{Status: 412, Type: ProblemPrefix + SlugPreconditionFailed, Slug: SlugPreconditionFailed,
			Title: "Precondition Failed", Detail: fmt.Sprintf("the shards are at version %d, not the If-Match", v),
			Body: map[string]any{"current_version": float64(v)}}
		if opts.IfMatch != nil && *opts.IfMatch != v {
			return nil, stale
		}
		p := &pendingCommit{key: key, version: v, bodies: bodies, opts: opts, worker: worker,
			answers: make([]*StepResult, len(got))}
		for _, g := range got {
			p.sumsq = append(p.sumsq, g.Sumsq...)
			p.tokens = append(p.tokens, g.Prepared)
			p.keys = append(p.keys, newKey())
		}
		res, err := commitAll(ctx, c, l, p, hold)
		if err != nil || res != nil {
			return res, err
		}
		if opts.IfMatch != nil {
			return nil, stale // 412 from shard 0: another step took v + 1
		}
	}
}
