package nixconfig

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

//go:embed stub.nix
var stubNix []byte

// Severity ranks a finding.
type Severity int

const (
	SevError Severity = iota
	SevWarning
	SevInfo
)

func (s Severity) String() string {
	switch s {
	case SevError:
		return "error"
	case SevWarning:
		return "warning"
	}
	return "info"
}

// MarshalText makes findings readable in JSON.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Finding is one result of Check, located in a file of the directory.
type Finding struct {
	File     string   `json:"file"` // relative to the checked directory
	Line     int      `json:"line,omitempty"`
	Severity Severity `json:"severity"`
	// Check names the rule: "parse", "stub-eval", "denylist", "must", "cross",
	// "workflow", "flake-check".
	Check string `json:"check"`
	Msg   string `json:"msg"`
}

func (f Finding) String() string {
	loc := f.File
	if f.Line > 0 {
		loc += ":" + strconv.Itoa(f.Line)
	}
	return fmt.Sprintf("%s: %s: %s", loc, f.Severity, f.Msg)
}

// Report is what Check found.
type Report struct {
	Dir      string    `json:"dir"`
	Findings []Finding `json:"findings"`
	// Ran and Skipped name the stages, with why a stage was skipped.
	Ran     []string `json:"ran"`
	Skipped []string `json:"skipped,omitempty"`
	// Config is the stub-evaluated configuration (nil if evaluation failed).
	Config map[string]any `json:"-"`
	Flake  map[string]any `json:"-"`
}

// Errors returns the error findings.
func (r *Report) Errors() []Finding {
	var out []Finding
	for _, f := range r.Findings {
		if f.Severity == SevError {
			out = append(out, f)
		}
	}
	return out
}

// Err is nil when no finding is an error, else a *CheckError.
func (r *Report) Err() error {
	if errs := r.Errors(); len(errs) > 0 {
		return &CheckError{Dir: r.Dir, Findings: errs}
	}
	return nil
}

// CheckError lists the errors Check found.
type CheckError struct {
	Dir      string
	Findings []Finding
}

func (e *CheckError) Error() string {
	return fmt.Sprintf("%s: %d problem(s) in the generated NixOS configuration (see above); fix local.nix or regenerate with `gpuctl nixos generate`", e.Dir, len(e.Findings))
}

// FlakeCheckMode says when Check runs `nix flake check`.
type FlakeCheckMode int

const (
	// FlakeCheckAuto runs it when nix and network access are present.
	FlakeCheckAuto FlakeCheckMode = iota
	FlakeCheckNever
	FlakeCheckAlways
)

// CheckOptions tune Check.
type CheckOptions struct {
	// NixInstantiate is the nix-instantiate binary (default: from PATH).
	NixInstantiate string
	// Nix is the nix binary for `nix flake check` (default: from PATH).
	Nix        string
	FlakeCheck FlakeCheckMode
	// Online reports whether the network is reachable (default: a TCP dial
	// to github.com:443 with a 3 s deadline).
	Online func(ctx context.Context) bool
	// Timeout bounds each nix-instantiate call (default 60 s); `nix flake
	// check` gets 10 minutes.
	Timeout time.Duration
}

// ErrNoNix is returned when nix-instantiate is not installed.
var ErrNoNix = errors.New("nix-instantiate not found: install Nix (Debian/Ubuntu: apt-get install nix-bin)")

// Check parses every .nix file in dir, stub-evaluates configuration.nix and
// flake.nix offline, runs the denylist, the must-contain and cross-field
// checks and the workflow check, and `nix flake check --no-build` when Nix
// with network access is there. Problems are findings in the Report; the
// error is for a check that could not run.
func Check(ctx context.Context, dir string, opt CheckOptions) (*Report, error) {
	abs, bin, err := checkSetup(dir, &opt)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "gpuctl-nixcheck-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	n := &nixRunner{bin: bin, tmp: tmp, timeout: opt.Timeout}
	c, err := newChecker(dir, abs)
	if err != nil {
		return nil, err
	}
	r := c.r

	// 1. Syntax.
	parsed, err := c.parseStage(ctx, n)
	if err != nil {
		return nil, err
	}

	// 2. Denylist on the text of every file, comments excluded.
	r.Ran = append(r.Ran, "denylist")
	c.textDenylist()

	// 3. Stub evaluation.
	if err := c.evalStage(ctx, n, parsed); err != nil {
		return nil, err
	}

	// 4. The workflow.
	if err := c.workflowStage(); err != nil {
		return nil, err
	}

	// 5. nix flake check, with network only.
	c.flakeCheck(ctx, opt, parsed && len(r.Errors()) == 0)
	sortFindings(r.Findings)
	return r, nil
}

// checkSetup checks that dir is a directory and finds nix-instantiate,
// filling in opt's defaults. It returns dir's absolute path and the binary.
func checkSetup(dir string, opt *CheckOptions) (abs, bin string, err error) {
	st, err := os.Stat(dir)
	if err != nil {
		return "", "", fmt.Errorf("check %s: %w", dir, err)
	}
	if !st.IsDir() {
		return "", "", fmt.Errorf("check %s: not a directory (give the directory `gpuctl nixos generate --out` wrote)", dir)
	}
	abs, err = filepath.Abs(dir)
	if err != nil {
		return "", "", err
	}
	if opt.NixInstantiate == "" {
		opt.NixInstantiate = "nix-instantiate"
	}
	bin, err = exec.LookPath(opt.NixInstantiate)
	if err != nil {
		return "", "", ErrNoNix
	}
	if opt.Timeout <= 0 {
		opt.Timeout = 60 * time.Second
	}
	return abs, bin, nil
}

// newChecker reads every .nix file under abs into a checker with an empty
// Report for dir.
func newChecker(dir, abs string) (*checker, error) {
	files, err := nixFiles(abs)
	if err != nil {
		return nil, err
	}
	srcs := map[string]string{}
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(abs, f))
		if err != nil {
			return nil, err
		}
		srcs[f] = string(data)
	}
	return &checker{r: &Report{Dir: dir}, dir: abs, srcs: srcs, files: files}, nil
}

// parseStage runs nix-instantiate --parse on every file and checks that the
// generated files are there; parsed is false when either failed.
func (c *checker) parseStage(ctx context.Context, n *nixRunner) (parsed bool, err error) {
	c.r.Ran = append(c.r.Ran, "parse")
	parsed = true
	for _, f := range c.files {
		if _, stderr, err := n.run(ctx, "--parse", filepath.Join(c.dir, f)); err != nil {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			c.nixError("parse", f, stderr, err)
			parsed = false
		}
	}
	for _, need := range []string{"flake.nix", "configuration.nix"} {
		if _, ok := c.srcs[need]; !ok {
			c.add(need, 0, SevError, "must", "missing: this does not look like a directory written by `gpuctl nixos generate`")
			parsed = false
		}
	}
	return parsed, nil
}

// evalStage stub-evaluates the files when they parse, then checks the
// evaluated configuration, its option paths and the flake.
func (c *checker) evalStage(ctx context.Context, n *nixRunner, parsed bool) error {
	r := c.r
	if parsed {
		r.Ran = append(r.Ran, "stub-eval")
		if err := c.stubEval(ctx, n); err != nil {
			return err
		}
	} else {
		r.Skipped = append(r.Skipped, "stub-eval (a file does not parse)")
	}
	if r.Config != nil {
		c.checkConfig(r.Config)
		r.Ran = append(r.Ran, "options")
		if err := c.optionsCheck(ctx, n); err != nil {
			return err
		}
	}
	if r.Flake != nil {
		c.checkFlake(r.Flake)
	}
	return nil
}

// workflowStage checks the CI workflow; a missing one is a finding.
func (c *checker) workflowStage() error {
	wf := filepath.Join(".github", "workflows", "build.yml")
	data, err := os.ReadFile(filepath.Join(c.dir, wf))
	switch {
	case err == nil:
		c.r.Ran = append(c.r.Ran, "workflow")
		c.checkWorkflow(filepath.ToSlash(wf), data)
	case errors.Is(err, fs.ErrNotExist):
		c.add(filepath.ToSlash(wf), 0, SevError, "workflow", "missing: CI builds the images with it; regenerate with `gpuctl nixos generate`")
	default:
		return err
	}
	return nil
}

// sortFindings orders findings by severity, file and line, keeping the
// order in which they were found otherwise.
func sortFindings(findings []Finding) {
	sort.SliceStable(findings, func(i, j int) bool {
		a, b := findings[i], findings[j]
		if a.Severity != b.Severity {
			return a.Severity < b.Severity
		}
		if a.File != b.File {
			return a.File < b.File
		}
		return a.Line < b.Line
	})
}

// nixFiles lists the .nix files under dir (not under .git or result*).
func nixFiles(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() && p != dir && (name == ".git" || strings.HasPrefix(name, "result") || name == "node_modules") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(name, ".nix") && d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	sort.Strings(out)
	return out, err
}

// nixRunner runs nix-instantiate unprivileged and offline: state, logs and
// HOME in a temporary directory, the store read-only.
type nixRunner struct {
	bin     string
	tmp     string
	timeout time.Duration
}

func (n *nixRunner) run(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(ctx, n.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, n.bin, args...)
	cmd.Env = append(os.Environ(),
		"HOME="+n.tmp,
		"NIX_STATE_DIR="+filepath.Join(n.tmp, "state"),
		"NIX_LOG_DIR="+filepath.Join(n.tmp, "log"),
		"XDG_CACHE_HOME="+filepath.Join(n.tmp, "cache"),
		"NIX_PATH=",
	)
	cmd.Dir = n.tmp
	// Stdout is the result; stderr (warnings included) only ever explains a
	// failure.
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("%s timed out after %s", filepath.Base(n.bin), n.timeout)
	}
	return o.String(), e.String(), err
}

func (n *nixRunner) eval(ctx context.Context, dir, what string, names, skip []string, out any) (stderr string, err error) {
	stub := filepath.Join(n.tmp, "stub.nix")
	if _, err := os.Stat(stub); err != nil {
		if err := os.WriteFile(stub, stubNix, 0o644); err != nil {
			return "", err
		}
	}
	nj, _ := json.Marshal(names)
	sj, _ := json.Marshal(skip)
	if names == nil {
		nj = []byte("[]")
	}
	if skip == nil {
		sj = []byte("[]")
	}
	stdout, stderr, err := n.run(ctx, "--eval", "--strict", "--json", "--readonly-mode",
		stub, "--argstr", "dir", dir, "--argstr", "what", what,
		"--argstr", "namesJSON", string(nj), "--argstr", "skipJSON", string(sj))
	if err != nil {
		return stderr, err
	}
	if err := json.Unmarshal([]byte(stdout), out); err != nil {
		return stderr, fmt.Errorf("stub evaluation printed no JSON: %w", err)
	}
	return stderr, nil
}

type checker struct {
	r     *Report
	dir   string
	srcs  map[string]string
	files []string
	// skipped are the files stub evaluation had to leave out.
	skipped []string
}

func (c *checker) add(file string, line int, sev Severity, check, format string, args ...any) {
	if check == "denylist" && line > 0 {
		// The text and the evaluated options may both find one mistake.
		for _, f := range c.r.Findings {
			if f.Check == check && f.File == file && f.Line == line {
				return
			}
		}
	}
	c.r.Findings = append(c.r.Findings, Finding{File: file, Line: line, Severity: sev, Check: check, Msg: fmt.Sprintf(format, args...)})
}

var conflictRE = regexp.MustCompile("conflicting definitions for `([^']+)'")

var nixPosRE = regexp.MustCompile(`(?:at |at: \(\d+:\d+\) from file: |, at )?(/[^\s:]+\.nix):(\d+):(\d+)`)

// nixError turns nix-instantiate's stderr into a finding at file:line.
func (c *checker) nixError(check, file, stderr string, err error) {
	msg, _ := splitNixStderr(stderr)
	if msg == "" {
		msg = err.Error()
	}
	line := 0
	if m := nixPosRE.FindStringSubmatch(msg); m != nil {
		if rel, rerr := filepath.Rel(c.dir, m[1]); rerr == nil && !strings.HasPrefix(rel, "..") {
			file = filepath.ToSlash(rel)
			line, _ = strconv.Atoi(m[2])
		}
	}
	msg = strings.ReplaceAll(msg, c.dir+string(filepath.Separator), "")
	msg = strings.TrimPrefix(msg, "error: ")
	if i := strings.Index(msg, "\n"); i >= 0 && len(msg) > 600 {
		msg = msg[:600] + "…"
	}
	c.add(file, line, SevError, check, "%s", msg)
}

func (c *checker) stubEval(ctx context.Context, n *nixRunner) error {
	var srcs []string
	for _, f := range c.files {
		srcs = append(srcs, c.srcs[f])
	}
	names := pkgNames(srcs)
	var cfg map[string]any
	stderr, err := n.eval(ctx, c.dir, "config", names, nil, &cfg)
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	stderr, _ = splitNixStderr(stderr)
	if err != nil {
		if _, ok := c.srcs[LocalName]; ok && !strings.Contains(stderr, "conflicting definitions for") {
			// local.nix may use more of nixpkgs' lib than the stub has:
			// evaluate without it, and say so.
			var cfg2 map[string]any
			if _, err2 := n.eval(ctx, c.dir, "config", names, []string{LocalName}, &cfg2); err2 == nil {
				c.add(LocalName, 0, SevWarning, "stub-eval", "not stub-evaluated (it needs more than the offline stubs provide: %s); only its text was checked",
					firstLine(strings.ReplaceAll(strings.TrimPrefix(strings.TrimSpace(stderr), "error: "), c.dir+"/", "")))
				cfg, err = cfg2, nil
				c.skipped = []string{LocalName}
			}
		}
	}
	if m := conflictRE.FindStringSubmatch(stderr); err != nil && m != nil {
		// Our own merge found two values for one option: point at the
		// definitions of its last component.
		last := m[1][strings.LastIndex(m[1], ".")+1:]
		f, l := c.locate(regexp.MustCompile(`\b`+regexp.QuoteMeta(last)+`\s*=`), "configuration.nix")
		c.add(f, l, SevError, "stub-eval", "conflicting definitions for `%s' (two different values at the same priority; use lib.mkForce in local.nix to override)", m[1])
	} else if err != nil {
		c.nixError("stub-eval", "configuration.nix", stderr, err)
	} else {
		c.r.Config = cfg
	}
	var fl map[string]any
	stderr, err = n.eval(ctx, c.dir, "flake", nil, nil, &fl)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.nixError("stub-eval", "flake.nix", stderr, err)
	} else {
		c.r.Flake = fl
	}
	return nil
}

// optionsCheck walks every definition against the option table of the
// flake's release, and the pkgs references against the package list.
func (c *checker) optionsCheck(ctx context.Context, n *nixRunner) error {
	c.checkPackages()
	release := Releases[len(Releases)-1]
	if m := channelRE.FindStringSubmatch(c.flakeURL()); m != nil {
		release = m[1]
	}
	var defs []def
	stderr, err := n.eval(ctx, c.dir, "defs", pkgNames(c.sources()), c.skipped, &defs)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		stderr, _ = splitNixStderr(stderr)
		c.add("configuration.nix", 0, SevWarning, "options", "option paths not checked: %s", firstLine(strings.TrimPrefix(stderr, "error: ")))
		return nil
	}
	c.checkOptions(release, defs)
	return nil
}

// flakeURL is flake.nix's nixpkgs URL, read from its text.
func (c *checker) flakeURL() string {
	m := flakeURLRE.FindStringSubmatch(stripComments(c.srcs["flake.nix"]))
	if m == nil {
		return ""
	}
	return m[1]
}

var flakeURLRE = regexp.MustCompile(`nixpkgs\.url\s*=\s*"([^"]*)"`)

func (c *checker) sources() []string {
	var out []string
	for _, f := range c.files {
		out = append(out, c.srcs[f])
	}
	return out
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// locate finds the first line (comments excluded) matching re, searching
// local.nix first, then gpuctl.nix, configuration.nix and the rest.
func (c *checker) locate(re *regexp.Regexp, fallback string) (string, int) {
	order := []string{LocalName, "gpuctl.nix", "configuration.nix"}
	for _, f := range c.files {
		if f != LocalName && f != "gpuctl.nix" && f != "configuration.nix" {
			order = append(order, f)
		}
	}
	for _, f := range order {
		src, ok := c.srcs[f]
		if !ok {
			continue
		}
		for i, l := range strings.Split(stripComments(src), "\n") {
			if re.MatchString(l) {
				return f, i + 1
			}
		}
	}
	return fallback, 0
}

// denyRule is a construct that breaks the appliance, found in the text.
type denyRule struct {
	re  *regexp.Regexp
	msg string
}

var textDeny = []denyRule{
	{regexp.MustCompile(`\bhardware\s*\.\s*opengl\b|\bopengl\s*\.\s*(enable|driSupport)`), "hardware.opengl was renamed hardware.graphics in 24.11"},
	{regexp.MustCompile(`\benableNvidia\b`), "virtualisation.docker.enableNvidia is deprecated; use hardware.nvidia-container-toolkit.enable and CDI (--device=nvidia.com/gpu=all)"},
	{regexp.MustCompile(`--gpus\b`), "docker --gpus fails on NixOS 25.05 (could not select device driver); use " + CDIDevice},
	{regexp.MustCompile(`\b(initialPassword|password|hashedPassword|initialHashedPassword)\s*=\s*""`), "empty password: accounts log in with SSH keys only"},
	{regexp.MustCompile(`\b(passwordAuthentication|permitRootLogin|kbdInteractiveAuthentication|challengeResponseAuthentication)\b`), "old services.openssh option name; use services.openssh.settings.PasswordAuthentication / PermitRootLogin"},
	{regexp.MustCompile(`fileSystems\s*\.\s*"/etc/ssh/?"|mountPoint\s*=\s*"/etc/ssh/?"`), "a mount over /etc/ssh hides sshd_config; keep host keys with services.openssh.hostKeys under /persist/ssh"},
	{regexp.MustCompile(`\bhardware\s*\.\s*nvidia\s*\.\s*enable\b`), "hardware.nvidia.enable is not an option; services.xserver.videoDrivers = [ \"nvidia\" ] enables the driver"},
	{regexp.MustCompile(`\bservices\s*\.\s*ollama\s*\.\s*acceleration\b`), "services.ollama.acceleration was removed from nixpkgs; the appliance runs Ollama in Docker"},
}

func (c *checker) textDenylist() {
	for _, f := range c.files {
		for i, l := range strings.Split(stripComments(c.srcs[f]), "\n") {
			for _, d := range textDeny {
				if d.re.MatchString(l) {
					c.add(f, i+1, SevError, "denylist", "%s", d.msg)
				}
			}
		}
	}
}
