package optd

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ProblemPrefix starts the `type` of every optd problem document.
const ProblemPrefix = "urn:optd:problem:"

// The problem slugs of the optd API (DESIGN.md §3).
const (
	SlugInvalidBody          = "invalid-body"
	SlugUnauthorized         = "unauthorized"
	SlugNotFound             = "not-found"
	SlugNotAcceptable        = "not-acceptable"
	SlugStaleGradient        = "stale-gradient"
	SlugConflict             = "conflict"
	SlugPreconditionFailed   = "precondition-failed"
	SlugTooLarge             = "too-large"
	SlugUnsupportedMediaType = "unsupported-media-type"
	SlugInvalidTensor        = "invalid-tensor"
	SlugInvalidConfig        = "invalid-config"
	SlugIdempotencyMismatch  = "idempotency-mismatch"
	SlugPreconditionRequired = "precondition-required"
	SlugRateLimited          = "rate-limited"
	SlugStoreUnavailable     = "store-unavailable"
)

// Problem is an RFC 9457 error answer from the server. Match it with errors.As, or
// by slug with IsSlug(err, optd.SlugStaleGradient).
type Problem struct {
	Status     int
	Type       string // urn:optd:problem:<slug>
	Slug       string
	Title      string
	Detail     string
	RetryAfter time.Duration // from Retry-After or the problem's retry_after; 0 if absent
	// Body is the whole problem document (extra members such as current_version).
	Body map[string]any
}

func (p *Problem) Error() string {
	return fmt.Sprintf("optd: %d %s: %s", p.Status, p.Title, p.Detail)
}

// CurrentVersion is the session's version when the server names it
// (stale-gradient, conflict, precondition-failed).
func (p *Problem) CurrentVersion() (int, bool) {
	v, ok := p.Body["current_version"].(float64)
	return int(v), ok && v == float64(int(v))
}

// IsSlug reports whether err is (or wraps) a *Problem with that slug.
func IsSlug(err error, slug string) bool {
	var p *Problem
	return errors.As(err, &p) && p.Slug == slug
}

// TransportError is a request that got no HTTP answer, even after the retries.
type TransportError struct {
	Method, Path string
	Attempts     int
	Err          error
}

func (e *TransportError) Error() string {
	return fmt.Sprintf("optd: %s %s: %v (after %d attempts)", e.Method, e.Path, e.Err, e.Attempts)
}

func (e *TransportError) Unwrap() error { return e.Err }

// ErrBarrierTimeout is wrapped when a sync-mode step's round does not complete within
// the client's barrier timeout.
var ErrBarrierTimeout = errors.New("optd: the sync barrier did not complete in time")

func parseProblem(body []byte) map[string]any {
	var doc map[string]any
	if json.Unmarshal(body, &doc) != nil || doc == nil {
		return map[string]any{}
	}
	return doc
}

func parseRetryAfter(header string, doc map[string]any) time.Duration {
	if s, err := strconv.ParseFloat(strings.TrimSpace(header), 64); err == nil && s >= 0 {
		return time.Duration(s * float64(time.Second))
	}
	if s, ok := doc["retry_after"].(float64); ok && s >= 0 {
		return time.Duration(s * float64(time.Second))
	}
	return 0
}

// ProblemFromResponse maps an error response onto a *Problem.
func ProblemFromResponse(status int, header http.Header, body []byte) *Problem {
	doc := parseProblem(body)
	str := func(k string) string { s, _ := doc[k].(string); return s }
	p := &Problem{Status: status, Type: str("type"), Title: str("title"), Detail: str("detail"), Body: doc}
	p.Slug = strings.TrimPrefix(p.Type, ProblemPrefix)
	if !strings.HasPrefix(p.Type, ProblemPrefix) {
		p.Slug = ""
	}
	if _, ok := doc["detail"]; !ok {
		if len(body) > 200 {
			body = body[:200]
		}
		p.Detail = strings.TrimSpace(string(body))
	}
	if p.Title == "" {
		p.Title = "HTTP " + strconv.Itoa(status)
	}
	p.RetryAfter = parseRetryAfter(header.Get("Retry-After"), doc)
	return p
}
