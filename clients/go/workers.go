package optd

import (
	"context"
	"errors"
	"net/url"
)

// Elastic rounds (DESIGN.md §4): the members of a sync session and its open round.

// Round is a sync session's open round.
type Round struct {
	Version      int      `json:"version"`
	Have         int      `json:"have"`
	Need         int      `json:"need"`
	Min          int      `json:"min"`
	Contributors []string `json:"contributors"`
	Missing      []string `json:"missing"`
	ClosesInS    *float64 `json:"closes_in_s"` // the round timeout's countdown, once have >= min
}

// JoinResult is a join's answer: the version to compute the next gradient on (the
// round to join), the open round and the lease (nil: members never expire).
type JoinResult struct {
	Worker  string   `json:"worker"`
	Version int      `json:"version"`
	Round   Round    `json:"round"`
	LeaseS  *float64 `json:"lease_s"`
}

// WorkerInfo is one member of a sync session.
type WorkerInfo struct {
	Worker      string  `json:"worker"`
	Live        bool    `json:"live"`
	LastSeenS   float64 `json:"last_seen_s"`
	Rounds      int     `json:"rounds"`
	LastVersion *int    `json:"last_version"`
}

// Workers is GET /v1/sessions/{id}/workers.
type Workers struct {
	Workers []WorkerInfo `json:"workers"`
	Round   Round        `json:"round"`
	LeaseS  *float64     `json:"lease_s"`
}

func (s *Session) workerPath(worker string) (string, error) {
	if worker == "" {
		worker = s.Worker
	}
	if worker == "" {
		return "", errors.New("optd: no worker id: pass one or set Session.Worker")
	}
	return s.path("/workers/" + url.PathEscape(worker)), nil
}

// Join makes worker ("" = the session's Worker) a member of this sync session, or
// renews its lease (a heartbeat): rounds wait for live members.
func (s *Session) Join(ctx context.Context, worker string) (*JoinResult, error) {
	path, err := s.workerPath(worker)
	if err != nil {
		return nil, err
	}
	var out JoinResult
	if err := s.client.doJSON(ctx, request{method: "PUT", path: path}, &out); err != nil {
		return nil, err
	}
	s.setVersion(out.Version)
	return &out, nil
}

// Leave ends worker's membership now: rounds stop waiting for it.
func (s *Session) Leave(ctx context.Context, worker string) error {
	path, err := s.workerPath(worker)
	if err != nil {
		return err
	}
	return s.client.doJSON(ctx, request{method: "DELETE", path: path}, nil)
}

// Workers lists the members (live, last seen, rounds) and the open round.
func (s *Session) Workers(ctx context.Context) (*Workers, error) {
	var out Workers
	return &out, s.client.doJSON(ctx, request{method: "GET", path: s.path("/workers")}, &out)
}
