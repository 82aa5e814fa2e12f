package proxy

import (
	"net/http"
	"net/http/pprof"
)

// DebugHandler serves Go's profiler (net/http/pprof) under /debug/pprof/,
// for `[serve] debug_listen` (loopback only: it has no authentication).
// Heap, goroutine and allocation profiles show what holds memory after
// load: go tool pprof http://127.0.0.1:6060/debug/pprof/heap.
func DebugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
