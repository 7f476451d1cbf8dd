package optd

import (
	"bytes"
	"context"
	"io"
	"math"
	"math/rand"
	"net/http"
	"net/url"
	"regexp"
	"time"
)

type request struct {
	method, path string
	query        url.Values
	body         []byte
	contentType  string
	accept       string
	header       map[string]string
	wait         time.Duration // the server may hold the request this long (long-polls)
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

var inFlight = regexp.MustCompile(`(?i)in[ -]?flight|in progress|still running|being processed`)

// retryDelay is how long to wait before retry attempt+1, or false for no retry.
// Retried: network errors and timeouts (every request is idempotent or carries an
// Idempotency-Key), 503, 429, and 409 `conflict` when the same request is still in
// flight or the server asks to retry later; Retry-After is honoured.
func (c *Client) retryDelay(attempt int, r *reply, err error) (time.Duration, bool) {
	if attempt >= c.retries {
		return 0, false
	}
	jitter := func() time.Duration {
		ceil := math.Min(float64(c.maxBackoff), float64(c.backoff)*math.Pow(2, float64(attempt)))
		return time.Duration(rand.Float64() * ceil)
	}
	if err != nil {
		return jitter(), true
	}
	if r.status != 409 && r.status != 429 && r.status != 503 {
		return 0, false
	}
	p := ProblemFromResponse(r.status, r.header, r.body)
	_, hasRetryAfter := p.Body["retry_after"]
	hasRetryAfter = hasRetryAfter || r.header.Get("Retry-After") != ""
	if r.status == 409 {
		if p.Slug != SlugConflict {
			return 0, false // stale-gradient: the same gradient cannot succeed
		}
		if p.Body["in_flight"] != true && !inFlight.MatchString(p.Detail) && !hasRetryAfter {
			return 0, false // e.g. base_version ahead of the session
		}
	}
	if hasRetryAfter {
		d := p.RetryAfter
		if d > 2*time.Minute {
			d = 2 * time.Minute
		}
		return d + time.Duration(rand.Float64()*float64(c.backoff)), true
	}
	return jitter(), true
}

// send runs one request until success, a final failure or the last retry; the same
// body and headers (so the same Idempotency-Key) go out every time.
func (c *Client) send(ctx context.Context, req request) (*reply, error) {
	u := c.baseURL + req.path
	if len(req.query) > 0 {
		u += "?" + req.query.Encode()
	}
	for attempt := 0; ; attempt++ {
		r, err := c.once(ctx, u, req)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		delay, retry := c.retryDelay(attempt, r, err)
		if !retry {
			if err != nil {
				return nil, &TransportError{req.method, req.path, attempt + 1, err}
			}
			if r.status >= 400 {
				return nil, ProblemFromResponse(r.status, r.header, r.body)
			}
			return r, nil
		}
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		case <-timer.C:
		}
	}
}

func (c *Client) once(ctx context.Context, u string, req request) (*reply, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout+req.wait)
	defer cancel()
	var body io.Reader
	if req.body != nil {
		body = bytes.NewReader(req.body)
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, u, body)
	if err != nil {
		return nil, err
	}
	for k, v := range c.header {
		hr.Header.Set(k, v)
	}
	if req.accept == "" {
		req.accept = mediaJSON
	}
	hr.Header.Set("Accept", req.accept)
	if req.contentType != "" {
		hr.Header.Set("Content-Type", req.contentType)
	}
	for k, v := range req.header {
		hr.Header.Set(k, v)
	}
	res, err := c.http.Do(hr)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	return &reply{res.StatusCode, res.Header, data}, nil
}
