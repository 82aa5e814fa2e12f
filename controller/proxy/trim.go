package proxy

import (
	"context"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"time"
)

// DefaultTrimInterval is how often serve looks whether it went quiet.
const DefaultTrimInterval = time.Minute

// trimmer gives memory back once serve goes quiet after a burst of work.
// Under load the Go heap grows with connections (each client connection
// holds read and write buffers, each kept-alive backend connection 128 KiB
// of them) and the runtime returns freed memory to the OS only slowly:
// RSS would stay near its peak for a long time on a box that idles most
// of the day. So once a whole interval passed without a request, and
// something happened since the last trim (requests, connections opened or
// closed), idle backend connections are closed (they are redialled on
// demand) and the runtime collects and returns free memory at once.
type trimmer struct {
	requests atomic.Int64 // proxied requests begun (not listings, /metrics, /healthz)
	connEvts atomic.Int64 // client connections opened or closed
}

// connState counts client connections opened and closed (http.Server's
// ConnState hook).
func (t *trimmer) connState(_ net.Conn, s http.ConnState) {
	switch s {
	case http.StateNew, http.StateClosed, http.StateHijacked:
		t.connEvts.Add(1)
	}
}

// trimLoop trims after each quiet interval that follows activity, until
// ctx ends.
func (p *Proxy) trimLoop(ctx context.Context) {
	tk := time.NewTicker(p.o.TrimInterval)
	defer tk.Stop()
	last := p.trim.requests.Load()
	trimmedReq, trimmedConn := last, p.trim.connEvts.Load()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		r, c := p.trim.requests.Load(), p.trim.connEvts.Load()
		quiet := r == last
		last = r
		if !quiet || r == trimmedReq && c == trimmedConn {
			continue
		}
		if t, ok := p.tr.(interface{ CloseIdleConnections() }); ok {
			t.CloseIdleConnections()
		}
		p.freeMemory()
		trimmedReq, trimmedConn = r, p.trim.connEvts.Load()
	}
}

// freeOSMemory is the trim: two collections, then every free page goes
// back to the OS. One is not enough: what the closed connections put back
// in sync.Pools (net/http's 4 KiB bufio readers and writers, the copy
// buffers) only moves to the pools' victim caches at the first collection
// and is freed at the second; a heap profile taken after a single
// collection still shows them (bufio.NewReaderSize, bufio.NewWriterSize).
func freeOSMemory() {
	runtime.GC()
	debug.FreeOSMemory()
}
