package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ollama/ollama/api"

	"github.com/ollamalive/gpuctl/controller/hostcmd"
	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/sshexec"
)

// Check names, in the order they are shown.
const (
	CheckGPU          = "gpu"
	CheckContainer    = "container"
	CheckContainerGPU = "container_gpu"
	CheckMount        = "mount"
	CheckFreeSpace    = "free_space"
	CheckWriteProbe   = "write_probe"
	CheckOllama       = "ollama"
	CheckModels       = "models"
)

var checkOrder = []string{CheckGPU, CheckContainer, CheckContainerGPU, CheckMount, CheckFreeSpace,
	CheckWriteProbe, CheckOllama, CheckModels}

// Check is the outcome of one readiness check.
type Check struct {
	Name     string        `json:"name"`
	OK       bool          `json:"ok"`
	Detail   string        `json:"detail"`
	Duration time.Duration `json:"-"`
	// Transient failures may clear while the host finishes booting; wake
	// retries them until boot_timeout.
	Transient bool `json:"transient,omitempty"`
	// TimedOut reports that the check did not finish within its deadline.
	TimedOut bool `json:"timed_out,omitempty"`
}

// MarshalJSON adds duration_ms.
func (c Check) MarshalJSON() ([]byte, error) {
	type plain Check
	return json.Marshal(struct {
		plain
		DurationMS int64 `json:"duration_ms"`
	}{plain(c), ms(c.Duration)})
}

// UnmarshalJSON reads duration_ms back.
func (c *Check) UnmarshalJSON(b []byte) error {
	type plain Check
	var v struct {
		plain
		DurationMS int64 `json:"duration_ms"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*c = Check(v.plain)
	c.Duration = time.Duration(v.DurationMS) * time.Millisecond
	return nil
}

// Ollama is what the Ollama check learned from the server's API.
type Ollama struct {
	URL     string   `json:"url"`
	Version string   `json:"version,omitempty"`
	Models  []string `json:"models"`
	// Missing are the declared models the server does not have.
	Missing []string `json:"missing"`
}

// Report is everything one round of checks learned.
type Report struct {
	Checks    []Check            `json:"checks"`
	GPU       []hostcmd.GPU      `json:"gpu"`
	Container *hostcmd.Container `json:"container"`
	Mount     *hostcmd.Mount     `json:"mount"`
	Ollama    *Ollama            `json:"ollama"`
}

// Failed lists the failing checks.
func (r *Report) Failed() []Check {
	var out []Check
	for _, c := range r.Checks {
		if !c.OK {
			out = append(out, c)
		}
	}
	return out
}

// checker runs the checks of one host over one SSH connection.
type checker struct {
	c      *Controller
	h      *inventory.Host
	runner sshexec.Runner

	mu  sync.Mutex
	rep Report
}

type checkFunc func(k *checker, ctx context.Context) []Check

var checkFuncs = map[string]checkFunc{
	CheckGPU:          (*checker).gpu,
	CheckContainer:    (*checker).container,
	CheckContainerGPU: (*checker).containerGPU,
	CheckMount:        (*checker).mount,
	CheckFreeSpace:    (*checker).freeSpace,
	CheckWriteProbe:   (*checker).writeProbe,
	CheckOllama:       (*checker).ollama, // also gives CheckModels
}

// sshChecks are the checks that run over the SSH connection: all but the
// Ollama check, which talks HTTP to the host.
var sshChecks = []string{CheckGPU, CheckContainer, CheckContainerGPU, CheckMount, CheckFreeSpace, CheckWriteProbe}

// sshChecksFor lists the SSH checks that apply to h (its `checks`); none
// means the host is checked over HTTP alone and never reached by SSH.
func sshChecksFor(h *inventory.Host) []string {
	var out []string
	for _, n := range sshChecks {
		if h.HasCheck(n) {
			out = append(out, n)
		}
	}
	return out
}

// run runs the named checks (all when names is nil) concurrently and merges
// their results into the report, replacing earlier results of the same name.
func (k *checker) run(ctx context.Context, names []string) {
	want := map[string]bool{}
	for _, n := range names {
		if n == CheckModels {
			n = CheckOllama
		}
		want[n] = true
	}
	var wg sync.WaitGroup
	results := make([][]Check, len(checkOrder))
	for i, name := range checkOrder {
		f := checkFuncs[name]
		if f == nil || names != nil && !want[name] || !k.h.HasCheck(name) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = f(k, ctx)
		}()
	}
	wg.Wait()
	k.merge(results...)
}

// merge puts check results into the report, replacing earlier results of
// the same name, in checkOrder.
func (k *checker) merge(results ...[]Check) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, cs := range results {
		for _, c := range cs {
			k.rep.Checks = replaceCheck(k.rep.Checks, c)
		}
	}
	sort.SliceStable(k.rep.Checks, func(i, j int) bool {
		return orderOf(k.rep.Checks[i].Name) < orderOf(k.rep.Checks[j].Name)
	})
}

func orderOf(name string) int {
	for i, n := range checkOrder {
		if n == name {
			return i
		}
	}
	return len(checkOrder)
}

func replaceCheck(cs []Check, c Check) []Check {
	for i := range cs {
		if cs[i].Name == c.Name {
			cs[i] = c
			return cs
		}
	}
	return append(cs, c)
}

// report returns a copy of the report so far.
func (k *checker) report() Report {
	k.mu.Lock()
	defer k.mu.Unlock()
	r := k.rep
	r.Checks = append([]Check(nil), k.rep.Checks...)
	return r
}

// exec runs one remote command; a failure to run it at all becomes a check
// result (ok false).
func (k *checker) exec(ctx context.Context, name string, args []string) (sshexec.Result, *Check) {
	res, err := k.runner.Run(ctx, sshexec.Cmd{Args: args, Timeout: durOr(k.c.CheckTimeout, DefaultCheckTimeout), MaxOutput: 1 << 20})
	if err == nil {
		return res, nil
	}
	c := &Check{Name: name, Transient: true}
	if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) {
		c.TimedOut = true
		c.Detail = fmt.Sprintf("%s did not finish in time", args[0])
	} else {
		c.Detail = fmt.Sprintf("could not run %s over SSH: %v", args[0], err)
	}
	return res, c
}

func (k *checker) timed(name string, start time.Time, c Check) []Check {
	c.Name = name
	c.Duration = k.c.now().Sub(start)
	return []Check{c}
}

func (k *checker) gpu(ctx context.Context) []Check {
	start := k.c.now()
	res, fail := k.exec(ctx, CheckGPU, hostcmd.GPUQueryArgs())
	if fail != nil {
		return k.timed(CheckGPU, start, *fail)
	}
	gpus, prob := hostcmd.ClassifyNvidiaSMI(res.Stdout, res.Stderr, res.ExitStatus, k.h.MinDriver)
	k.mu.Lock()
	k.rep.GPU = gpus
	k.mu.Unlock()
	if prob != nil {
		return k.timed(CheckGPU, start, Check{Detail: prob.Msg})
	}
	var parts []string
	for _, g := range gpus {
		s := g.Name + ", driver " + g.DriverVersion
		if g.MemoryUsedMiB != nil && g.MemoryTotalMiB != nil {
			s += fmt.Sprintf(", %d/%d MiB used", *g.MemoryUsedMiB, *g.MemoryTotalMiB)
		}
		parts = append(parts, s)
	}
	return k.timed(CheckGPU, start, Check{OK: true, Detail: strings.Join(parts, "; ")})
}

func (k *checker) container(ctx context.Context) []Check {
	start := k.c.now()
	res, fail := k.exec(ctx, CheckContainer, hostcmd.InspectArgs(k.h.Container))
	if fail != nil {
		return k.timed(CheckContainer, start, *fail)
	}
	if p := hostcmd.ClassifyDockerError(k.h.Container, res.Stdout, res.Stderr, res.ExitStatus); p != nil {
		return k.timed(CheckContainer, start, Check{Detail: p.Msg, Transient: p.Transient})
	}
	ct, err := hostcmd.ParseDockerInspect(res.Stdout)
	if err != nil {
		if errors.Is(err, hostcmd.ErrNoSuchContainer) {
			return k.timed(CheckContainer, start, Check{Detail: fmt.Sprintf("container %q does not exist on the host", k.h.Container), Transient: true})
		}
		return k.timed(CheckContainer, start, Check{Detail: "unexpected docker inspect output: " + err.Error()})
	}
	if ct.Name == "" {
		ct.Name = k.h.Container
	}
	// Where the container keeps its models: the same reading (and the
	// same verdict) as the verification after a pull (models.Manager).
	store, serr := hostcmd.StoreFromInspect(res.Stdout, k.h.Container, k.h.ModelsDir)
	if serr == nil {
		ct.Models = &store
	}
	k.mu.Lock()
	stored := ct
	if k.rep.Container != nil {
		stored.GPUs = k.rep.Container.GPUs
	}
	k.rep.Container = &stored
	k.mu.Unlock()
	if msg, transient := hostcmd.ContainerProblem(ct); msg != "" {
		return k.timed(CheckContainer, start, Check{Detail: msg, Transient: transient})
	}
	if ct.Models != nil && ct.Models.Problem != "" {
		return k.timed(CheckContainer, start, Check{Detail: ct.Models.Problem})
	}
	d := fmt.Sprintf("%s running since %s", ct.Name, ct.StartedAt.UTC().Format(time.RFC3339))
	if ct.Models != nil {
		d += ", models in " + ct.Models.Dir
	}
	if ct.Health != "" {
		d += ", " + ct.Health
	}
	if ct.RestartCount > 0 {
		d += fmt.Sprintf(", %d restarts", ct.RestartCount)
	}
	return k.timed(CheckContainer, start, Check{OK: true, Detail: d})
}

func (k *checker) containerGPU(ctx context.Context) []Check {
	start := k.c.now()
	res, fail := k.exec(ctx, CheckContainerGPU, hostcmd.ContainerGPUArgs(k.h.Container))
	if fail != nil {
		return k.timed(CheckContainerGPU, start, *fail)
	}
	if res.ExitStatus != 0 {
		msg, transient := hostcmd.ContainerGPUProblem(k.h.Container, res.Stdout, res.Stderr, res.ExitStatus)
		if msg == "" {
			msg = fmt.Sprintf("docker exec %s nvidia-smi -L exited %d: %s", k.h.Container, res.ExitStatus, hostcmd.FirstLine(res.Stderr, res.Stdout))
		}
		return k.timed(CheckContainerGPU, start, Check{Detail: msg, Transient: transient})
	}
	gpus, err := hostcmd.ParseNvidiaSMIList(res.Stdout)
	if err != nil {
		return k.timed(CheckContainerGPU, start, Check{Detail: "unexpected nvidia-smi -L output in the container: " + err.Error()})
	}
	k.mu.Lock()
	if k.rep.Container == nil {
		k.rep.Container = &hostcmd.Container{Name: k.h.Container}
	}
	k.rep.Container.GPUs = gpus
	k.mu.Unlock()
	if len(gpus) == 0 {
		return k.timed(CheckContainerGPU, start, Check{Detail: fmt.Sprintf("no GPU visible inside container %q (run it with --gpus all / CDI)", k.h.Container)})
	}
	names := make([]string, len(gpus))
	for i, g := range gpus {
		names[i] = g.Name
	}
	return k.timed(CheckContainerGPU, start, Check{OK: true, Detail: strings.Join(names, ", ") + " visible in " + k.h.Container})
}

func (k *checker) mountInfo() *hostcmd.Mount {
	if k.rep.Mount == nil {
		k.rep.Mount = &hostcmd.Mount{Dir: k.h.ModelsDir}
	}
	return k.rep.Mount
}

func (k *checker) mount(ctx context.Context) []Check {
	start := k.c.now()
	res, fail := k.exec(ctx, CheckMount, hostcmd.FindmntArgs(k.h.ModelsDir))
	if fail != nil {
		return k.timed(CheckMount, start, *fail)
	}
	if res.ExitStatus != 0 {
		msg := fmt.Sprintf("findmnt --target %s exited %d: %s", k.h.ModelsDir, res.ExitStatus, hostcmd.FirstLine(res.Stderr, res.Stdout))
		if h := hostcmd.NTFSHint(string(res.Stderr)); h != "" {
			msg += "; " + h
		}
		return k.timed(CheckMount, start, Check{Detail: msg, Transient: true})
	}
	m, err := hostcmd.ParseFindmnt(res.Stdout)
	if err != nil {
		return k.timed(CheckMount, start, Check{Detail: "unexpected findmnt output: " + err.Error()})
	}
	k.mu.Lock()
	mi := k.mountInfo()
	mi.Target, mi.Source, mi.FSType, mi.Options, mi.ReadOnly = m.Target, m.Source, m.FSType, m.Options, m.ReadOnly
	m.Dir = mi.Dir
	k.mu.Unlock()
	if msg, transient := hostcmd.MountProblem(m); msg != "" {
		return k.timed(CheckMount, start, Check{Detail: msg, Transient: transient})
	}
	kind := m.FSType
	if kind == "fuseblk" {
		kind = "fuseblk (ntfs-3g)"
	}
	return k.timed(CheckMount, start, Check{OK: true, Detail: fmt.Sprintf("%s on %s, %s, rw", m.Target, m.Source, kind)})
}

func (k *checker) freeSpace(ctx context.Context) []Check {
	start := k.c.now()
	res, fail := k.exec(ctx, CheckFreeSpace, hostcmd.DFArgs(k.h.ModelsDir))
	if fail != nil {
		return k.timed(CheckFreeSpace, start, *fail)
	}
	if res.ExitStatus != 0 {
		return k.timed(CheckFreeSpace, start, Check{Detail: fmt.Sprintf("df %s exited %d: %s", k.h.ModelsDir, res.ExitStatus, hostcmd.FirstLine(res.Stderr, res.Stdout)), Transient: true})
	}
	row, err := hostcmd.ParseDF(res.Stdout)
	if err != nil {
		return k.timed(CheckFreeSpace, start, Check{Detail: "unexpected df output: " + err.Error()})
	}
	k.mu.Lock()
	mi := k.mountInfo()
	mi.SizeBytes, mi.FreeBytes = &row.Size, &row.Avail
	k.mu.Unlock()
	free := inventory.ByteSize(row.Avail)
	if free < k.h.MinFree {
		return k.timed(CheckFreeSpace, start, Check{Detail: fmt.Sprintf("only %s free on %s, min_free is %s", free, row.Target, k.h.MinFree)})
	}
	return k.timed(CheckFreeSpace, start, Check{OK: true, Detail: fmt.Sprintf("%s free of %s on %s", free, inventory.ByteSize(row.Size), row.Target)})
}

func (k *checker) writeProbe(ctx context.Context) []Check {
	start := k.c.now()
	res, fail := k.exec(ctx, CheckWriteProbe, hostcmd.WriteProbeArgs(k.h.ModelsDir))
	if fail != nil {
		return k.timed(CheckWriteProbe, start, *fail)
	}
	ok := res.ExitStatus == 0
	k.mu.Lock()
	k.mountInfo().Writable = &ok
	k.mu.Unlock()
	if !ok {
		msg := hostcmd.WriteProbeProblem(k.h.ModelsDir, res.Stdout, res.Stderr, res.ExitStatus)
		return k.timed(CheckWriteProbe, start, Check{Detail: msg, Transient: strings.Contains(msg, "does not exist")})
	}
	return k.timed(CheckWriteProbe, start, Check{OK: true, Detail: "created, synced and removed a file in " + k.h.ModelsDir})
}

func (k *checker) ollama(ctx context.Context) []Check {
	start := k.c.now()
	o := &Ollama{URL: k.h.OllamaURL.String(), Models: []string{}, Missing: []string{}}
	if k.h.OllamaURL.IsZero() {
		return k.timed(CheckOllama, start, Check{Detail: "the host has no ollama_url"})
	}
	cl := api.NewClient(k.h.OllamaURL.URL, k.c.httpClient())
	ctx, cancel := context.WithTimeout(ctx, durOr(k.c.CheckTimeout, DefaultCheckTimeout))
	defer cancel()
	v, err := cl.Version(ctx)
	if err != nil {
		return k.timed(CheckOllama, start, ollamaFailure(ctx, o.URL, "/api/version", err))
	}
	o.Version = v
	list, err := cl.List(ctx)
	if err != nil {
		return k.timed(CheckOllama, start, ollamaFailure(ctx, o.URL, "/api/tags", err))
	}
	for _, m := range list.Models {
		o.Models = append(o.Models, m.Name)
	}
	o.Missing = MissingModels(k.h.Models, o.Models)
	k.mu.Lock()
	k.rep.Ollama = o
	k.mu.Unlock()
	out := k.timed(CheckOllama, start, Check{OK: true, Detail: fmt.Sprintf("Ollama %s at %s, %s", v, o.URL, plural(len(o.Models), "model"))})
	mc := Check{Name: CheckModels, OK: len(o.Missing) == 0, Duration: out[0].Duration}
	switch {
	case len(k.h.Models) == 0:
		mc.Detail = "no models declared"
	case len(o.Missing) == 0:
		mc.Detail = "declared " + plural(len(k.h.Models), "model") + " present"
		if len(k.h.Models) > 1 {
			mc.Detail = "all " + mc.Detail
		}
	default:
		mc.Detail = "missing: " + strings.Join(o.Missing, ", ") + " (gpuctl pull " + k.h.Name + ")"
	}
	return append(out, mc)
}

func ollamaFailure(ctx context.Context, url, path string, err error) Check {
	c := Check{Transient: true}
	var se api.StatusError
	switch {
	case ctx.Err() != nil:
		c.TimedOut = true
		c.Detail = fmt.Sprintf("Ollama at %s did not answer %s in time", url, path)
	case errors.As(err, &se):
		c.Detail = fmt.Sprintf("Ollama at %s answered %s with %s", url, path, se.Error())
	default:
		switch sshexec.ClassifyDialError(err) {
		case sshexec.ProbeRefused:
			c.Detail = fmt.Sprintf("Ollama at %s refused the connection (not listening yet?)", url)
		default:
			c.Detail = fmt.Sprintf("Ollama at %s: %s: %v", url, path, err)
		}
	}
	return c
}

// MissingModels returns the declared models absent from present (names as
// /api/tags lists them), in declaration order.
func MissingModels(declared []inventory.ModelName, present []string) []string {
	have := map[string]bool{}
	for _, p := range present {
		have[inventory.NormalModel(p)] = true
	}
	missing := []string{}
	for _, d := range declared {
		if !have[inventory.NormalModel(string(d))] {
			missing = append(missing, string(d))
		}
	}
	return missing
}

// plural writes "1 model", "2 models".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
