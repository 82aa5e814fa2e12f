package nixconfig

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

type wfStep struct {
	Name string         `yaml:"name"`
	Uses string         `yaml:"uses"`
	Run  string         `yaml:"run"`
	With map[string]any `yaml:"with"`
	line int
}

func (s wfStep) text() string {
	var b strings.Builder
	b.WriteString(s.Uses + "\n" + s.Run + "\n")
	for k, v := range s.With {
		fmt.Fprintf(&b, "%s: %v\n", k, v)
	}
	return b.String()
}

func mapGet(n *yaml.Node, key string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// checkWorkflow checks the GitHub Actions workflow: it parses, runs on push
// and workflow_dispatch, frees disk before installing Nix with KVM, runs
// nix flake check, builds .#raw and .#iso, compresses and uploads them.
func (c *checker) checkWorkflow(file string, data []byte) {
	root := c.parseWorkflow(file, data)
	if root == nil {
		return
	}
	c.workflowTriggers(file, root)
	steps, ok := c.workflowSteps(file, root)
	if !ok {
		return
	}
	c.workflowInstall(file, steps)
	c.workflowBuild(file, steps)
	for i, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, "magic-nix-cache") && !strings.HasPrefix(strings.TrimSpace(l), "#") {
			c.add(file, i+1, SevError, "workflow", "magic-nix-cache-action stopped working with GitHub's 2025 cache API change; use cachix or nix-community/cache-nix-action")
		}
	}
}

// parseWorkflow returns the workflow's root node, or nil when it is not
// valid YAML or empty (a finding says which).
func (c *checker) parseWorkflow(file string, data []byte) *yaml.Node {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		line := 0
		if msg := err.Error(); strings.Contains(msg, "line ") {
			fmt.Sscanf(msg[strings.Index(msg, "line ")+5:], "%d", &line)
		}
		c.add(file, line, SevError, "workflow", "not valid YAML: %v", err)
		return nil
	}
	if len(doc.Content) == 0 {
		c.add(file, 0, SevError, "workflow", "empty workflow")
		return nil
	}
	return doc.Content[0]
}

// workflowTriggers checks that the workflow runs on push and on
// workflow_dispatch.
func (c *checker) workflowTriggers(file string, root *yaml.Node) {
	on := mapGet(root, "on")
	onLine := 0
	if on != nil {
		onLine = on.Line
	}
	for _, ev := range []string{"push", "workflow_dispatch"} {
		if !hasEvent(on, ev) {
			c.add(file, onLine, SevError, "workflow", "the workflow must run on %s", ev)
		}
	}
}

// hasEvent reports whether the workflow's on: (a name, a list or a map)
// names ev.
func hasEvent(on *yaml.Node, ev string) bool {
	if on == nil {
		return false
	}
	switch on.Kind {
	case yaml.ScalarNode:
		return on.Value == ev
	case yaml.SequenceNode:
		for _, n := range on.Content {
			if n.Value == ev {
				return true
			}
		}
	case yaml.MappingNode:
		return mapGet(on, ev) != nil
	}
	return false
}

// wfSteps are the steps of all the workflow's jobs, in order.
type wfSteps []wfStep

// find returns the index of the first step pred accepts, or -1.
func (steps wfSteps) find(pred func(wfStep) bool) int {
	for i, s := range steps {
		if pred(s) {
			return i
		}
	}
	return -1
}

// line is step i's line, 0 for no step (i < 0).
func (steps wfSteps) line(i int) int {
	if i >= 0 {
		return steps[i].line
	}
	return 0
}

// workflowSteps decodes every job's steps; ok is false when there are no
// jobs.
func (c *checker) workflowSteps(file string, root *yaml.Node) (steps wfSteps, ok bool) {
	jobs := mapGet(root, "jobs")
	if jobs == nil || jobs.Kind != yaml.MappingNode {
		c.add(file, 0, SevError, "workflow", "no jobs")
		return nil, false
	}
	for i := 1; i < len(jobs.Content); i += 2 {
		ss := mapGet(jobs.Content[i], "steps")
		if ss == nil {
			continue
		}
		for _, n := range ss.Content {
			var s wfStep
			if err := n.Decode(&s); err != nil {
				c.add(file, n.Line, SevError, "workflow", "step does not decode: %v", err)
				continue
			}
			s.line = n.Line
			steps = append(steps, s)
		}
	}
	return steps, true
}

// workflowInstall checks that disk space is freed, then Nix installed with
// KVM.
func (c *checker) workflowInstall(file string, steps wfSteps) {
	free := steps.find(func(s wfStep) bool {
		return strings.Contains(s.Uses, "free-disk-space") || strings.Contains(s.Uses, "nothing-but-nix") || strings.Contains(s.Uses, "maximize-build-space") ||
			strings.Contains(s.Run, "rm -rf /usr/share/dotnet") || strings.Contains(s.Run, "rm -rf /opt/hostedtoolcache")
	})
	install := steps.find(func(s wfStep) bool {
		return strings.Contains(s.Uses, "nix-installer-action") || strings.Contains(s.Uses, "install-nix-action")
	})
	switch {
	case install < 0:
		c.add(file, 0, SevError, "workflow", "no step installs Nix (DeterminateSystems/nix-installer-action or cachix/install-nix-action)")
	case free < 0:
		c.add(file, steps.line(install), SevError, "workflow", "no step frees disk space (the runner's ~20 GB is not enough for the driver and two images)")
	case free > install:
		c.add(file, steps.line(free), SevError, "workflow", "disk space is freed after Nix is installed; free it first")
	}
	if install >= 0 {
		s := steps[install]
		if !strings.Contains(s.Uses, "DeterminateSystems") && !strings.Contains(s.text(), "kvm") {
			c.add(file, steps.line(install), SevError, "workflow", "the Nix installer must enable KVM (system-features = ... kvm): make-disk-image runs a VM")
		}
	}
}

// workflowBuild checks that the workflow runs nix flake check, builds both
// images, then compresses and uploads them.
func (c *checker) workflowBuild(file string, steps wfSteps) {
	flake := steps.find(func(s wfStep) bool { return strings.Contains(s.Run, "nix flake check") })
	raw := steps.find(func(s wfStep) bool { return strings.Contains(s.Run, "nix build") && strings.Contains(s.Run, ".#raw") })
	iso := steps.find(func(s wfStep) bool { return strings.Contains(s.Run, "nix build") && strings.Contains(s.Run, ".#iso") })
	comp := steps.find(func(s wfStep) bool {
		return strings.Contains(s.Run, "zstd") || strings.Contains(s.Run, "xz ") || strings.Contains(s.Run, "gzip")
	})
	up := steps.find(func(s wfStep) bool { return strings.HasPrefix(s.Uses, "actions/upload-artifact@v4") })
	for _, m := range []struct {
		i    int
		what string
	}{{flake, "runs `nix flake check`"}, {raw, "builds .#raw"}, {iso, "builds .#iso"}, {comp, "compresses the images"}, {up, "uploads them with actions/upload-artifact@v4"}} {
		if m.i < 0 {
			c.add(file, 0, SevError, "workflow", "no step %s", m.what)
		}
	}
	if comp >= 0 && up >= 0 && comp > up {
		c.add(file, steps.line(comp), SevError, "workflow", "the images are compressed after the upload")
	}
}

// flakeCheck runs `nix flake check --no-build` when Nix and the network are
// there (it fetches nixpkgs); otherwise it records why it was skipped.
func (c *checker) flakeCheck(ctx context.Context, opt CheckOptions, clean bool) {
	skip := func(why string) { c.r.Skipped = append(c.r.Skipped, "nix flake check ("+why+")") }
	if opt.FlakeCheck == FlakeCheckNever {
		skip("turned off")
		return
	}
	if !clean {
		skip("fix the errors above first")
		return
	}
	nixBin := opt.Nix
	if nixBin == "" {
		nixBin = "nix"
	}
	bin, err := exec.LookPath(nixBin)
	if err != nil {
		skip("nix is not installed")
		return
	}
	online := opt.Online
	if online == nil {
		online = defaultOnline
	}
	if opt.FlakeCheck == FlakeCheckAuto && !online(ctx) {
		skip("no network access to fetch nixpkgs")
		return
	}
	c.r.Ran = append(c.r.Ran, "nix flake check")
	ctx2, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx2, bin, "--extra-experimental-features", "nix-command flakes", "flake", "check", "--no-build", "path:"+c.dir)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Run(); err != nil {
		c.nixError("flake-check", "flake.nix", stderr.String(), err)
	}
}

func defaultOnline(ctx context.Context) bool {
	d := net.Dialer{Timeout: 3 * time.Second}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", "github.com:443")
	if err != nil {
		return false
	}
	conn.Close()
	return true
}
