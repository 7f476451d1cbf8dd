package optd

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// Session owners: the client follows 307s itself, remembers the owner per session, fails
// over to its base URL when the owner is gone, and bounds redirects.

type hits struct {
	mu   sync.Mutex
	seen []string
}

func (h *hits) add(s string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen = append(h.seen, s)
}

func info(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"id":"s1","version":3}`))
}

func TestOwnersFollowCacheFailOver(t *testing.T) {
	var h hits
	owner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.add("owner " + r.Header.Get("Authorization"))
		info(w)
	}))
	base := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Optd-Owner-Unreachable") == owner.URL {
			h.add("base, owner unreachable")
			info(w)
			return
		}
		h.add("base")
		w.Header().Set("Location", owner.URL+r.URL.RequestURI())
		w.Header().Set("Optd-Owner", owner.URL)
		w.WriteHeader(http.StatusTemporaryRedirect)
	}))
	defer base.Close()
	c := NewClient(base.URL, WithAPIKey("k"), WithBackoff(time.Millisecond, time.Millisecond))
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if _, err := c.Session("s1", "").Info(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if c.Owner("s1") != owner.URL {
		t.Fatalf("owner %q", c.Owner("s1"))
	}
	owner.Close()
	if _, err := c.Session("s1", "").Info(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{"base", "owner Bearer k", "owner Bearer k", "base, owner unreachable"}
	if len(h.seen) != len(want) {
		t.Fatalf("requests %q, want %q", h.seen, want)
	}
	for i := range want {
		if h.seen[i] != want[i] {
			t.Fatalf("requests %q, want %q", h.seen, want)
		}
	}
	if c.Owner("s1") != "" {
		t.Fatal("a dead owner stays remembered")
	}
}

func TestOwnersRedirectLoop(t *testing.T) {
	n := 0
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n++
		w.Header().Set("Location", srv.URL+r.URL.RequestURI())
		w.Header().Set("Optd-Owner", srv.URL)
		w.WriteHeader(http.StatusTemporaryRedirect)
	}))
	defer srv.Close()
	_, err := NewClient(srv.URL).Session("s1", "").Info(context.Background())
	var loop *RedirectLoopError
	if !errors.As(err, &loop) || n != 6 {
		t.Fatalf("err %v after %d requests", err, n)
	}
}
