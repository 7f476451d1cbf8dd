package optd

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"
)

func TestRecordedProblems(t *testing.T) {
	for _, ex := range recorded(t) {
		if ex.Response.Status < 400 {
			continue
		}
		h := http.Header{}
		for k, v := range ex.Response.Headers {
			h.Set(k, v)
		}
		p := ProblemFromResponse(ex.Response.Status, h, ex.Response.JSON)
		if ProblemPrefix+p.Slug != p.Body["type"] || p.Status != ex.Response.Status || p.Detail == "" || !IsSlug(fmt.Errorf("wrapped: %w", p), p.Slug) {
			t.Errorf("%s: %+v", ex.Name, p)
		}
	}
	var problems map[string]struct {
		Status  int
		Headers map[string]string
		Body    json.RawMessage
	}
	readWireJSON(t, "problems.json", &problems)
	slugs := []string{SlugInvalidBody, SlugUnauthorized, SlugNotFound, SlugNotAcceptable, SlugStaleGradient, SlugConflict, SlugPreconditionFailed, SlugTooLarge, SlugUnsupportedMediaType, SlugInvalidTensor, SlugInvalidConfig, SlugIdempotencyMismatch, SlugPreconditionRequired, SlugRateLimited, SlugStoreUnavailable}
	if len(problems) != len(slugs) {
		t.Fatalf("%d problems recorded, %d slugs known", len(problems), len(slugs))
	}
	for _, s := range slugs {
		rec := problems[s]
		h := http.Header{}
		for k, v := range rec.Headers {
			h.Set(k, v)
		}
		p := ProblemFromResponse(rec.Status, h, rec.Body)
		if p.Slug != s || (s == SlugStoreUnavailable && p.RetryAfter != time.Second) {
			t.Errorf("%s: %+v", s, p)
		}
	}
}

func TestRetryPolicy(t *testing.T) {
	c := NewClient("http://x", WithRetries(2), WithBackoff(100*time.Millisecond, time.Second))
	rep := func(status int, doc string, header ...string) *reply {
		h := http.Header{}
		for i := 0; i+1 < len(header); i += 2 {
			h.Set(header[i], header[i+1])
		}
		return &reply{status, h, []byte(doc)}
	}
	conflict := `{"type":"urn:optd:problem:conflict","detail":"x","in_flight":true}`
	for _, tc := range []struct {
		r       *reply
		err     error
		attempt int
		retry   bool
		min     time.Duration
	}{
		{nil, errors.New("connection reset"), 0, true, 0},
		{nil, errors.New("connection reset"), 2, false, 0},
		{rep(503, `{}`, "Retry-After", "2"), nil, 0, true, 2 * time.Second},
		{rep(429, `{"retry_after": 1}`), nil, 1, true, time.Second},
		{rep(503, `{}`), nil, 0, true, 0},
		{rep(409, conflict), nil, 0, true, 0},
		{rep(409, `{"type":"urn:optd:problem:conflict","detail":"base_version 9 is ahead"}`), nil, 0, false, 0},
		{rep(409, `{"type":"urn:optd:problem:stale-gradient","retry_after":1}`), nil, 0, false, 0},
		{rep(412, `{}`), nil, 0, false, 0},
		{rep(422, `{}`), nil, 0, false, 0},
	} {
		d, retry := c.retryDelay(tc.attempt, tc.r, tc.err)
		if retry != tc.retry || d < tc.min || d > tc.min+time.Second {
			t.Errorf("%+v: got %v %v", tc, d, retry)
		}
	}
}
