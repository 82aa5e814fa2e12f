package activity

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ollamalive/gpuctl/controller/statedir"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestTrackerCountsAndLastEnd(t *testing.T) {
	c := &clock{t: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)}
	tr := NewTracker(c.now)
	end1 := tr.Begin("pc")
	end2 := tr.Begin("pc")
	if got := tr.InFlight("pc"); got != 2 {
		t.Fatalf("in flight = %d, want 2", got)
	}
	c.add(10 * time.Minute)
	end1()
	end1() // idempotent
	if got := tr.InFlight("pc"); got != 1 {
		t.Fatalf("in flight after one end (called twice) = %d, want 1", got)
	}
	c.add(time.Minute)
	end2()
	s := tr.Snapshot()
	h := s.Hosts["pc"]
	if h.InFlight != 0 || h.Requests != 2 {
		t.Fatalf("snapshot = %+v", h)
	}
	if want := c.now(); !h.LastEnd.Equal(want) {
		t.Fatalf("last end = %v, want %v (the end of the last request)", h.LastEnd, want)
	}
}

func TestReadStoppedWhenNoAnnouncement(t *testing.T) {
	r, err := Read(context.Background(), t.TempDir(), nil)
	if err != nil || r.State != Stopped {
		t.Fatalf("Read = %+v, %v; want stopped, nil", r, err)
	}
}

func TestReadStoppedWhenPIDGoneKeepsSavedLastEnd(t *testing.T) {
	dir := t.TempDir()
	last := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	statedir.WriteJSON(statedir.ServeFile(dir), announcement{PID: 1 << 22, Listen: "127.0.0.1:1"})
	statedir.WriteJSON(statedir.ActivityFile(dir), Snapshot{Hosts: map[string]Host{"pc": {LastEnd: last}}})
	old := statedir.Alive
	statedir.Alive = func(int) bool { return false }
	t.Cleanup(func() { statedir.Alive = old })
	r, err := Read(context.Background(), dir, nil)
	if err != nil || r.State != Stopped {
		t.Fatalf("Read = %+v, %v; want stopped", r, err)
	}
	if !r.Snapshot.Hosts["pc"].LastEnd.Equal(last) {
		t.Fatalf("saved last end lost: %+v", r.Snapshot)
	}
}

func TestReadRunningLiveSnapshot(t *testing.T) {
	dir := t.TempDir()
	tr := NewTracker(nil)
	end := tr.Begin("pc")
	defer end()
	srv := httptest.NewServer(tr)
	defer srv.Close()
	statedir.WriteJSON(statedir.ServeFile(dir), announcement{PID: os.Getpid(), Listen: strings.TrimPrefix(srv.URL, "http://")})
	r, err := Read(context.Background(), dir, srv.Client())
	if err != nil || r.State != Running {
		t.Fatalf("Read = %+v, %v", r, err)
	}
	if r.Snapshot.Hosts["pc"].InFlight != 1 {
		t.Fatalf("live in-flight not seen: %+v", r.Snapshot)
	}
}

func TestReadRunningButUnreadableIsAnError(t *testing.T) {
	dir := t.TempDir()
	// A listener that accepts and never answers: the proxy is hung.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { <-done; c.Close() }()
		}
	}()
	statedir.WriteJSON(statedir.ServeFile(dir), announcement{PID: os.Getpid(), Listen: ln.Addr().String()})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	r, err := Read(ctx, dir, nil)
	if !errors.Is(err, ErrUnreadable) || r.State != Running {
		t.Fatalf("Read = %+v, %v; want running + ErrUnreadable", r, err)
	}
}

func TestPublishAnnouncesSavesAndWithdraws(t *testing.T) {
	dir := t.TempDir()
	statedir.WriteJSON(statedir.ActivityFile(dir), Snapshot{Hosts: map[string]Host{"pc": {LastEnd: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), Requests: 3}}})
	tr := NewTracker(nil)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Publish(ctx, dir, "127.0.0.1:11435", tr, 10*time.Millisecond) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(statedir.ServeFile(dir)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("serve.json never written")
		}
		time.Sleep(5 * time.Millisecond)
	}
	tr.Begin("pc")()
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(statedir.ServeFile(dir)); !os.IsNotExist(err) {
		t.Fatalf("serve.json left behind after stop: %v", err)
	}
	var s Snapshot
	b, _ := os.ReadFile(filepath.Join(dir, "activity.json"))
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	if s.Hosts["pc"].Requests != 4 {
		t.Fatalf("saved requests = %d, want 3 restored + 1", s.Hosts["pc"].Requests)
	}
}
