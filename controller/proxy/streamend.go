package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// How a proxied request can be ended from outside its own flow: by a
// shutdown whose drain timeout passed, or by its client no longer reading.
var (
	// errShutdown is the cause given to requests still running when a
	// shutdown's drain timeout passes: streams end with an error record
	// saying so, requests not yet answered get 503.
	errShutdown = errors.New("gpuctl serve is shutting down")
	// errStalled is the cause given to a request whose client made no
	// write progress for WriteStall.
	errStalled = errors.New("the client stopped reading")
)

// cutGrace is how long requests cut at the end of a drain get to write
// their error record before their connections are closed.
const cutGrace = 2 * time.Second

// cuttable derives r's context so that the shutdown's cut and a stalled
// client end it, with a cause. release frees what it holds.
func (p *Proxy) cuttable(r *http.Request) (_ *http.Request, abort context.CancelCauseFunc, release func()) {
	ctx, cancel := context.WithCancelCause(r.Context())
	stop := context.AfterFunc(p.cutCtx, func() { cancel(context.Cause(p.cutCtx)) })
	return r.WithContext(ctx), cancel, func() { stop(); cancel(nil) }
}

// shuttingDown reports whether ctx was ended by the shutdown's cut.
func shuttingDown(ctx context.Context) bool { return errors.Is(context.Cause(ctx), errShutdown) }

// cutRequests ends every request still running: streams get an error
// record in their own format, requests waiting for a backend get 503.
func (p *Proxy) cutRequests() {
	p.cut(fmt.Errorf("%w: the request was cut after the %s drain; send it again", errShutdown, p.o.DrainTimeout))
}

// shutdown stops srv: no new connections, requests and streams may finish
// for DrainTimeout; then the ones left are cut with an error record and
// get cutGrace to write it before their connections are closed.
func (p *Proxy) shutdown(srv *http.Server) {
	p.log.Info("shutting down", "drain", p.o.DrainTimeout)
	sctx, scancel := context.WithCancel(context.Background())
	defer scancel()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTimer(p.o.DrainTimeout)
		defer t.Stop()
		select {
		case <-done:
			return
		case <-t.C:
		}
		p.log.Warn("requests still open after the drain timeout; ending them with an error", "drain", p.o.DrainTimeout)
		p.cutRequests()
		t.Reset(cutGrace)
		select {
		case <-done:
		case <-t.C:
			scancel()
		}
	})
	if err := srv.Shutdown(sctx); err != nil {
		p.log.Warn("connections still open after the drain; closing them", "err", err)
		_ = srv.Close()
	}
	close(done)
	wg.Wait()
}

// progress renews the connection's write deadline before a write to the
// client, so each write must make progress within WriteStall (a client
// that stops reading loses its stream, however long a stream that is read
// lasts). Renewals are spaced by a sixteenth of the limit.
func (w *respWriter) progress() {
	if w.stall <= 0 {
		return
	}
	now := time.Now()
	if !w.renewed.IsZero() && now.Sub(w.renewed) < w.stall/16 {
		return
	}
	w.renewed = now
	_ = http.NewResponseController(w.ResponseWriter).SetWriteDeadline(now.Add(w.stall))
}

// writeFailed ends the request when a write to its client failed: the
// backend request is cancelled at once rather than at its next chunk.
func (w *respWriter) writeFailed(err error) {
	if w.abort == nil {
		return
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		w.stalled = true
		w.abort(fmt.Errorf("%w for %s", errStalled, w.stall))
		return
	}
	w.abort(err)
}
