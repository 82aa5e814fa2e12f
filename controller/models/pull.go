package models

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"syscall"
	"time"

	"github.com/ollama/ollama/api"

	"github.com/ollamalive/gpuctl/controller/hostcmd"
	"github.com/ollamalive/gpuctl/inventory"
)

// SpaceError refuses a pull that cannot fit on the drive.
type SpaceError struct {
	Host, Model, ModelsDir string
	// Need is the bytes still to download; Avail the drive's free bytes
	// (less what earlier models in the same run will take); MinFree what
	// the host's min_free keeps free.
	Need, Avail, MinFree int64
}

func (e *SpaceError) Error() string {
	return fmt.Sprintf("%s needs %s (%d bytes) but the drive of %s has %s (%d bytes) free at %s, of which min_free keeps %s; free space on the drive or lower min_free",
		e.Model, size(e.Need), e.Need, e.Host, size(e.Avail), e.Avail, e.ModelsDir, size(e.MinFree))
}

// InterruptedError reports a pull cut off part-way (Ctrl-C, the SSH or
// HTTP connection dropping, the box rebooting, a stall). Ollama keeps the
// partial download and resumes it on the next pull.
type InterruptedError struct {
	Host, Model      string
	Completed, Total int64
	Err              error
}

func (e *InterruptedError) Error() string {
	at := ""
	if e.Total > 0 {
		at = fmt.Sprintf(" at %s of %s", size(e.Completed), size(e.Total))
	}
	return fmt.Sprintf("pull of %s on %s was interrupted%s (%v); run `gpuctl pull %s %s` again to resume: Ollama keeps the partial download (blobs/*-partial) and continues from it",
		e.Model, e.Host, at, e.Err, e.Host, e.Model)
}
func (e *InterruptedError) Unwrap() error { return e.Err }

var errStalled = errors.New("no progress from ollama")

// Pull pulls the given models (none: nothing) onto the host's drive.
//
// Before any request it checks, for every model whose manifest the
// Manifests source can fetch, that the blobs not yet on the drive fit in
// the free space (df over SSH) minus min_free; a model that cannot fit is
// refused with a *SpaceError and never requested. The others pull through
// Ollama, Concurrency at a time, and each is verified on the drive (see
// Verify). Events go to sink. The error joins one error per failed model:
// *SpaceError, *OllamaError (Ollama's own message), *InterruptedError,
// *VerifyError or *UnreachableError.
func (m *Manager) Pull(ctx context.Context, names []inventory.ModelName, sink ProgressSink) error {
	if sink == nil {
		sink = Discard
	}
	var refs []Ref
	var errs []error
	for _, n := range names {
		r, err := ParseRef(string(n))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !containsRef(refs, r) {
			refs = append(refs, r)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if len(refs) == 0 {
		return nil
	}
	refused, err := m.plan(ctx, refs, sink)
	if err != nil {
		return err
	}
	results := make([]error, len(refs))
	copy(results, refused)
	sem := make(chan struct{}, max(m.Concurrency, 1))
	var wg sync.WaitGroup
	for i, r := range refs {
		if results[i] != nil {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			results[i] = &InterruptedError{Host: m.Host.Name, Model: r.Short(), Err: fmt.Errorf("not started: %w", ctx.Err())}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			results[i] = m.pullOne(ctx, r, sink)
		}()
	}
	wg.Wait()
	return errors.Join(results...)
}

// emitter stamps events of one model.
func (m *Manager) emitter(r Ref, sink ProgressSink) func(Event) {
	return func(e Event) {
		e.Time, e.Host, e.Model = m.now(), m.Host.Name, r.Short()
		sink.Event(e)
	}
}

// plan runs df once and checks each model's size against what is left;
// it returns a *SpaceError for each model that must not be pulled.
func (m *Manager) plan(ctx context.Context, refs []Ref, sink ProgressSink) ([]error, error) {
	if m.Runner == nil {
		return nil, fmt.Errorf("pulling on %s: no SSH runner to check the models drive", m.Host.Name)
	}
	dir := m.Host.ModelsDir
	cmd := hostcmd.DFCmd(dir)
	res, err := m.Runner.Run(ctx, cmd)
	if err != nil {
		return nil, fmt.Errorf("checking free space on %s over SSH: %w", m.Host.Name, err)
	}
	if res.ExitStatus != 0 {
		return nil, fmt.Errorf("checking free space of %s: %w; is the models drive mounted?", dir, hostcmd.RemoteError(m.Host.Name, cmd, res))
	}
	df, err := hostcmd.ParseDF(res.Stdout)
	avail := df.Avail
	if err != nil {
		return nil, fmt.Errorf("checking free space of %s on %s: %w", dir, m.Host.Name, err)
	}
	minFree := int64(m.Host.MinFree)
	out := make([]error, len(refs))
	var reserved int64
	counted := map[string]bool{}
	for i, r := range refs {
		emit := m.emitter(r, sink)
		if m.Manifests == nil {
			emit(Event{Kind: EventCheck, AvailBytes: avail - reserved,
				Message: fmt.Sprintf("size unknown (no registry lookup); %s free on the drive, pulling without a space check", size(avail-reserved))})
			continue
		}
		man, err := m.Manifests.Manifest(ctx, r)
		if err != nil {
			m.log().Debug("manifest lookup failed", "model", r.Short(), "err", err)
			emit(Event{Kind: EventCheck, AvailBytes: avail - reserved,
				Message: fmt.Sprintf("size unknown (%v); %s free on the drive, pulling without a space check", err, size(avail-reserved))})
			continue
		}
		need, err := m.need(ctx, man, counted)
		if err != nil {
			return nil, err
		}
		left := avail - reserved
		if need > 0 && need > left-minFree {
			serr := &SpaceError{Host: m.Host.Name, Model: r.Short(), ModelsDir: dir, Need: need, Avail: left, MinFree: minFree}
			emit(Event{Kind: EventRefused, NeedBytes: need, AvailBytes: left, Error: serr.Error()})
			out[i] = serr
			continue
		}
		for _, b := range man.Blobs() {
			counted[b.Digest] = true
		}
		reserved += need
		emit(Event{Kind: EventCheck, NeedBytes: need, AvailBytes: left})
	}
	return out, nil
}

// need is the bytes of man's blobs that are neither complete on the drive
// nor already counted for an earlier model of this run.
func (m *Manager) need(ctx context.Context, man *Manifest, counted map[string]bool) (int64, error) {
	dir := m.store(ctx).Dir
	var paths []string
	var blobs []Blob
	for _, b := range man.Blobs() {
		if counted[b.Digest] {
			continue
		}
		blobs = append(blobs, b)
		paths = append(paths, BlobPath(dir, b.Digest))
	}
	if len(paths) == 0 {
		return 0, nil
	}
	if dir == "" { // the models are on no mount: nothing is on the drive
		var need int64
		for _, b := range blobs {
			need += b.Size
		}
		return need, nil
	}
	res, err := m.Runner.Run(ctx, hostcmd.StatCmd(paths...))
	if err != nil {
		return 0, fmt.Errorf("checking blobs on %s over SSH: %w", m.Host.Name, err)
	}
	have := hostcmd.ParseStat(res.Stdout)
	var need int64
	for i, b := range blobs {
		if have[paths[i]] != b.Size {
			need += b.Size
		}
	}
	return need, nil
}

// pullOne pulls one model and verifies it on the drive.
func (m *Manager) pullOne(ctx context.Context, r Ref, sink ProgressSink) error {
	emit := m.emitter(r, sink)
	var tr Tracker
	stall := cmp.Or(m.StallTimeout, 5*time.Minute)
	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timer := time.AfterFunc(stall, func() { cancel(errStalled) })
	defer timer.Stop()
	m.log().Debug("pulling", "model", r.Short())
	err := m.Client.Pull(pctx, &api.PullRequest{Model: r.Short(), Insecure: m.Insecure}, func(p api.ProgressResponse) error {
		timer.Reset(stall)
		tr.Apply(p)
		emit(Event{Kind: EventStatus, Status: p.Status, Digest: p.Digest, Total: p.Total, Completed: p.Completed})
		return nil
	})
	timer.Stop()
	interrupted := func(cause error) error {
		done, total := tr.Progress()
		ie := &InterruptedError{Host: m.Host.Name, Model: r.Short(), Completed: done, Total: total, Err: cause}
		emit(Event{Kind: EventInterrupted, Completed: done, Total: total, Error: ie.Error()})
		return ie
	}
	failed := func(err error) error {
		emit(Event{Kind: EventFailed, Error: err.Error()})
		return err
	}
	var se api.StatusError
	var ae api.AuthorizationError
	switch {
	case ctx.Err() != nil:
		// Cancelled (Ctrl-C), even if "success" slipped through: the
		// drive check did not run; the next run finishes or verifies.
		return interrupted(ctx.Err())
	case context.Cause(pctx) == errStalled:
		return interrupted(fmt.Errorf("%w for %s", errStalled, stall))
	case err == nil && tr.Success:
	case err == nil:
		return interrupted(ErrIncomplete)
	case errors.As(err, &se):
		return failed(fmt.Errorf("pulling %s on %s: %w", r.Short(), m.Host.Name,
			&OllamaError{StatusCode: se.StatusCode, Msg: cmp.Or(se.ErrorMessage, se.Error())}))
	case errors.As(err, &ae):
		return failed(fmt.Errorf("pulling %s on %s: %w", r.Short(), m.Host.Name,
			&OllamaError{StatusCode: ae.StatusCode, Msg: ae.Error()}))
	case isTransport(err):
		if tr.Lines == 0 {
			return failed(&UnreachableError{Host: m.Host.Name, URL: m.Host.OllamaURL.String(), Err: err})
		}
		return interrupted(err)
	default:
		// The Ollama client turns an {"error":…} line into a plain error.
		return failed(fmt.Errorf("pulling %s on %s: %w", r.Short(), m.Host.Name, &OllamaError{Msg: err.Error()}))
	}
	v, err := m.Verify(ctx, inventory.ModelName(r.Short()))
	if err != nil {
		return failed(err)
	}
	emit(Event{Kind: EventVerified, Total: v.Size,
		Message: fmt.Sprintf("verified on the drive: manifest and %d blobs, %s under %s", len(v.Blobs), size(v.Size), m.Host.ModelsDir)})
	return nil
}

// isTransport reports errors of the HTTP transport (connection refused,
// reset, timeouts) as opposed to messages from Ollama.
func isTransport(err error) bool {
	var ue *url.Error
	var ne net.Error
	return errors.As(err, &ue) || errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED)
}

func containsRef(rs []Ref, r Ref) bool {
	for _, x := range rs {
		if x.Equal(r) {
			return true
		}
	}
	return false
}
