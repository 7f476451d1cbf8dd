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

// pendingCommit is a sharded step from its prepare on: kept on the session while
// shard 0 may have applied it and others have not.
type pendingCommit struct {
	key     string // the step's Idempotency-Key (the caller's, or a fresh one)
	version int
	sumsq   []json.RawMessage // every shard's list, in shard order, verbatim ("NaN" too)
	parts   []Tensors
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

func (c *Client) prepareShard(ctx context.Context, sh ShardInfo, part Tensors, opts StepOptions) (*prepared, error) {
	body, err := c.gradBody(part, nil, opts)
	if err != nil {
		return nil, err
	}
	var p prepared
	r := request{method: "POST", path: shardPath(sh, "/prepare"), body: body, contentType: c.tensorType()}
	if err := c.doJSON(ctx, r, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// parallel runs f(k) for every k in ks at once; the first error (by k) is returned.
func parallel(ks []int, f func(k int) error) error {
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
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// prepareAll prepares every shard, again after a short wait while their versions differ.
func (c *Client) prepareAll(ctx context.Context, l *shardLayout, parts []Tensors, opts StepOptions) ([]*prepared, error) {
	deadline := time.Now().Add(DivergenceWait)
	all := make([]int, len(l.shards))
	for k := range all {
		all[k] = k
	}
	for i := 0; ; i++ {
		got := make([]*prepared, len(l.shards))
		if err := parallel(all, func(k int) (err error) {
			got[k], err = c.prepareShard(ctx, l.shards[k], parts[k], opts)
			return err
		}); err != nil {
			return nil, err
		}
		same := true
		for _, p := range got {
			same = same && p.Version == got[0].Version
		}
		if same {
			return got, nil
		}
		if time.Now().After(deadline) {
			named := make([]string, len(got))
			for k, p := range got {
				named[k] = fmt.Sprintf("%s at %d", l.shards[k].ID, p.Version)
			}
			return nil, fmt.Errorf("optd: the shards' versions differ for %v (%s): a step is half-applied "+
				"(its client died between commits?); restore the shards from checkpoints", DivergenceWait, strings.Join(named, ", "))
		}
		d := 20 * time.Millisecond << i
		if d > time.Second || i > 10 {
			d = time.Second
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
	for {
		doc := map[string]any{"prepared": p.tokens[k], "sumsq": p.sumsq}
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
		if errors.As(err, &prob) && prob.Type == problemPrepareExpired {
			np, perr := c.prepareShard(ctx, l.shards[k], p.parts[k], o)
			if perr != nil {
				return perr
			}
			p.tokens[k], p.keys[k] = np.Prepared, newKey()
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

// finishCommits commits the shards of p not committed yet: shard 0 first, then the
// others in parallel; it assembles the result.
func finishCommits(ctx context.Context, c *Client, l *shardLayout, p *pendingCommit) (*StepResult, error) {
	if p.answers[0] == nil {
		if err := c.commitShard(ctx, l, p, 0); err != nil {
			return nil, err
		}
	}
	var rest []int
	for k := 1; k < len(l.shards); k++ {
		if p.answers[k] == nil {
			rest = append(rest, k)
		}
	}
	if err := parallel(rest, func(k int) error { return c.commitShard(ctx, l, p, k) }); err != nil {
		return nil, err
	}
	parts := make([]Tensors, len(p.answers))
	for k, a := range p.answers {
		parts[k] = a.Params
	}
	res := *p.answers[0]
	res.Params = assembleParts(l, parts)
	return &res, nil
}

// shardedStep is one step of a sharded session; hold keeps the step on the session
// once shard 0 may have applied it, and forgets it once every shard has.
func shardedStep(ctx context.Context, c *Client, l *shardLayout, grads Tensors, opts StepOptions, worker string,
	hold func(p *pendingCommit, done bool)) (*StepResult, error) {
	parts, err := splitGrads(l, grads)
	if err != nil {
		return nil, err
	}
	key := opts.IdempotencyKey
	if key == "" {
		key = newKey()
	}
	for {
		got, err := c.prepareAll(ctx, l, parts, opts)
		if err != nil {
			return nil, err
		}
		v := got[0].Version
		if opts.IfMatch != nil && *opts.IfMatch != v {
			return nil, &Problem{Status: 412, Type: ProblemPrefix + SlugPreconditionFailed, Slug: SlugPreconditionFailed,
				Title: "Precondition Failed", Detail: fmt.Sprintf("the shards are at version %d, not %d", v, *opts.IfMatch),
				Body: map[string]any{"current_version": float64(v)}}
		}
		p := &pendingCommit{key: key, version: v, parts: parts, opts: opts, worker: worker,
			answers: make([]*StepResult, len(got))}
		for _, g := range got {
			p.sumsq = append(p.sumsq, g.Sumsq...)
			p.tokens = append(p.tokens, g.Prepared)
			p.keys = append(p.keys, newKey())
		}
		if err := c.commitShard(ctx, l, p, 0); err != nil {
			if IsSlug(err, SlugPreconditionFailed) && opts.IfMatch == nil {
				continue // another step took version v + 1 first: nothing of this one was applied
			}
			var prob *Problem
			if !errors.As(err, &prob) {
				hold(p, false) // no answer: shard 0 may have applied it
			}
			return nil, err
		}
		hold(p, false)
		res, err := finishCommits(ctx, c, l, p)
		if err != nil {
			return nil, err
		}
		hold(p, true)
		return res, nil
	}
}
