package optd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Session owners (the server's DESIGN §4): an API process answers a request for a session
// another process owns with 307 to it (Location, Optd-Owner). The client follows it itself
// (Go's own following drops Authorization when the port differs), remembers the owner per
// session and sends that session's later requests straight there. A network error on the
// way to a remembered owner forgets it and re-sends to the base URL with
// Optd-Owner-Unreachable. A client given WithHTTPClient that follows redirects itself still
// has its owners remembered (from the redirect it followed).

// maxRedirects bounds the redirects to owners (and fail-overs from dead ones) of a request.
const maxRedirects = 5

var sessionPath = regexp.MustCompile(`^/v1/sessions/([^/?]+)`)

// keepRedirect makes the default http.Client hand 307s back to send.
func keepRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// RedirectLoopError: more than 5 redirects to session owners (or fail-overs) for one
// request; do the API processes advertise URLs this client can reach (OPTD_ADVERTISE_URL)?
type RedirectLoopError struct {
	Method, Path, Last string
}

func (e *RedirectLoopError) Error() string {
	return fmt.Sprintf("optd: %s %s: more than %d redirects to session owners (last: %s); "+
		"do the API processes advertise reachable URLs (OPTD_ADVERTISE_URL)?",
		e.Method, e.Path, maxRedirects, e.Last)
}

type ownerCache struct {
	mu     sync.Mutex
	owners map[string]string
}

func (o *ownerCache) get(sid string) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.owners[sid]
}

func (o *ownerCache) set(sid, owner string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.owners == nil || len(o.owners) >= 10000 {
		o.owners = map[string]string{}
	}
	o.owners[sid] = owner
}

func (o *ownerCache) forget(sid, owner string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.owners[sid] == owner {
		delete(o.owners, sid)
	}
}

// Owner is the API process this client sends the session's requests to, when it knows
// one ("" otherwise).
func (c *Client) Owner(sessionID string) string { return c.owners.get(url.PathEscape(sessionID)) }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

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
	sid := ""
	if m := sessionPath.FindStringSubmatch(req.path); m != nil {
		sid = m[1]
	}
	owner := ""
	if sid != "" {
		owner = c.owners.get(sid)
	}
	u := c.baseURL
	if owner != "" {
		u = owner
	}
	u += req.path
	if len(req.query) > 0 {
		u += "?" + req.query.Encode()
	}
	redirects := 0
	for attempt := 0; ; attempt++ {
		r, followed, err := c.once(ctx, u, req)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		moved := err == nil && (r.status == 307 || r.status == 308) && r.header.Get("Location") != ""
		gone := err != nil && owner != "" && strings.HasPrefix(u, owner+"/") && !isTimeout(err)
		if moved || gone {
			if redirects++; redirects > maxRedirects {
				return nil, &RedirectLoopError{req.method, req.path, u}
			}
			if moved {
				from, _ := url.Parse(u)
				to, perr := url.Parse(r.header.Get("Location"))
				if from == nil || perr != nil {
					return nil, &TransportError{req.method, req.path, attempt + 1, perr}
				}
				u = from.ResolveReference(to).String()
				if o := strings.TrimRight(r.header.Get("Optd-Owner"), "/"); o != "" && sid != "" {
					c.owners.set(sid, o)
					owner = o
				}
			} else {
				c.owners.forget(sid, owner)
				u = c.baseURL + u[len(owner):]
				h := map[string]string{"Optd-Owner-Unreachable": owner}
				for k, v := range req.header {
					h[k] = v
				}
				req.header, owner = h, ""
			}
			attempt--
			continue
		}
		if followed != "" && sid != "" {
			c.owners.set(sid, strings.TrimRight(followed, "/"))
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

// once sends one attempt; the string is the Optd-Owner of a 307 that the http.Client
// followed itself (WithHTTPClient), else "".
func (c *Client) once(ctx context.Context, u string, req request) (*reply, string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout+req.wait)
	defer cancel()
	var body io.Reader
	if req.body != nil {
		body = bytes.NewReader(req.body)
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, u, body)
	if err != nil {
		return nil, "", err
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
		return nil, "", err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, "", err
	}
	owner := ""
	if res.Request != nil && res.Request.Response != nil { // the http.Client followed a 307
		owner = res.Request.Response.Header.Get("Optd-Owner")
	}
	return &reply{res.StatusCode, res.Header, data}, owner, nil
}
