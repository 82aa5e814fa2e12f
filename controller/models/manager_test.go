package models

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ollama/ollama/api"

	"github.com/ollamalive/gpuctl/controller/ollamatest"
)

func TestListDeclaredPresentMissingLoaded(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	e := newEnv(t, ollamatest.Config{Now: func() time.Time { return now },
		Catalogue: []ollamatest.Model{{Name: "tiny", VRAM: 777}, {Name: "extra:1b"}}},
		"tiny", "absent:7b")
	e.srv.Install("tiny")
	e.srv.Install("extra:1b")
	e.srv.Load("tiny", 10*time.Minute)
	rep, err := e.mgr.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Models) != 3 {
		t.Fatalf("%+v", rep.Models)
	}
	tiny, absent, extra := rep.Models[0], rep.Models[1], rep.Models[2]
	man := manifestOf(t, e.srv, "tiny")
	if tiny.Name != "tiny" || !tiny.Declared || !tiny.Present || tiny.Size != man.TotalSize() || !tiny.Loaded ||
		tiny.VRAM != 777 || !tiny.ExpiresAt.Equal(now.Add(10*time.Minute)) {
		t.Errorf("tiny %+v", tiny)
	}
	if absent.Name != "absent:7b" || !absent.Declared || absent.Present || absent.Loaded {
		t.Errorf("absent %+v", absent)
	}
	if extra.Name != "extra:1b" || extra.Declared || !extra.Present || extra.Loaded {
		t.Errorf("extra %+v", extra)
	}
	if !slices.Equal(rep.Missing(), []string{"absent:7b"}) {
		t.Errorf("missing %v", rep.Missing())
	}
}

func TestUnloadOneAndAll(t *testing.T) {
	e := newEnv(t, ollamatest.Config{Catalogue: []ollamatest.Model{{Name: "a"}, {Name: "b"}, {Name: "c"}}})
	for _, n := range []string{"a", "b", "c"} {
		e.srv.Install(n)
		e.srv.Load(n, time.Hour)
	}
	ctx := context.Background()
	done, err := e.mgr.Unload(ctx, names("b"))
	if err != nil || !slices.Equal(done, []string{"b:latest"}) {
		t.Fatalf("unload b: %v %v", done, err)
	}
	if got := e.srv.Loaded(); !slices.Equal(got, []string{"a:latest", "c:latest"}) {
		t.Errorf("loaded after unloading b: %v", got)
	}
	done, err = e.mgr.UnloadAll(ctx)
	slices.Sort(done)
	if err != nil || !slices.Equal(done, []string{"a:latest", "c:latest"}) {
		t.Fatalf("unload all: %v %v", done, err)
	}
	if got := e.srv.Loaded(); len(got) != 0 {
		t.Errorf("still loaded: %v", got)
	}
	if n := e.srv.Requests("POST /api/generate"); n != 3 {
		t.Errorf("%d generate calls", n)
	}
	_, err = e.mgr.Unload(ctx, names("nope"))
	if err == nil || !strings.Contains(err.Error(), "model 'nope:latest' not found") || !strings.Contains(err.Error(), "gpu1") {
		t.Errorf("unload missing: %v", err)
	}
}

func TestUnreachable(t *testing.T) {
	e := newEnv(t, ollamatest.Config{}, "tiny")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("http://" + l.Addr().String())
	l.Close() // nothing listens there now
	e.mgr.Client = api.NewClient(u, &http.Client{})
	_, err = e.mgr.Missing(context.Background())
	var ue *UnreachableError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "gpuctl status gpu1") {
		t.Errorf("missing: %v", err)
	}
	err = e.mgr.Pull(context.Background(), names("tiny"), nil)
	if !errors.As(err, &ue) {
		t.Errorf("pull: %v", err)
	}
}
