package hostcmd

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"strings"

	"github.com/ollamalive/gpuctl/sshexec"
)

// Where Ollama keeps its models inside the container when nothing says
// otherwise: $HOME/.ollama/models with HOME=/root (the ollama/ollama
// image). The stick mounts models_dir at ContainerHome, so by default the
// models are under <models_dir>/models on the host.
const (
	ContainerHome          = "/root/.ollama"
	DefaultContainerModels = ContainerHome + "/models"
)

// Store is where a host's Ollama keeps its models: a directory on the host
// (what gpuctl checks over SSH) and the one inside the container it is
// mounted as, and how gpuctl learned it.
type Store struct {
	// Dir is the models directory on the host: manifests/ and blobs/ are
	// under it. Empty when the container keeps its models on no mount.
	Dir string `json:"dir"`
	// ContainerDir is OLLAMA_MODELS inside the container.
	ContainerDir string `json:"container_dir"`
	// Source says where Dir comes from: "docker inspect <container>" or
	// "default".
	Source string `json:"source"`
	// Problem, when set, says why the models are not on the models drive.
	Problem string `json:"problem,omitempty"`
}

// DefaultStore is the documented layout: models_dir mounted at
// /root/.ollama, so the models are in <models_dir>/models.
func DefaultStore(modelsDir string) Store {
	return Store{Dir: path.Join(modelsDir, "models"), ContainerDir: DefaultContainerModels,
		Source: "default (models_dir mounted at " + ContainerHome + ")"}
}

// DockerCommand is docker's full path on the stick. gpuctl's account is
// not in the docker group (that is root-equivalent): it runs exactly the
// docker command lines of the checks through `sudo -n`, and the box's sudo
// rules (nixconfig) allow precisely those argv.
const DockerCommand = "/run/current-system/sw/bin/docker"

// InspectArgs is `sudo -n docker inspect --type container NAME`: the
// container check's command, and where the models live is read from its
// output.
func InspectArgs(container string) []string {
	return []string{"sudo", "-n", DockerCommand, "inspect", "--type", "container", container}
}

// InspectCmd is InspectArgs as a command with its deadline.
func InspectCmd(container string) sshexec.Cmd {
	return sshexec.Cmd{Args: InspectArgs(container), Timeout: remoteTimeout, MaxOutput: 1 << 20}
}

type inspected struct {
	Config *struct {
		Env []string `json:"Env"`
	} `json:"Config"`
	Mounts []struct {
		Type        string `json:"Type"`
		Source      string `json:"Source"`
		Destination string `json:"Destination"`
	} `json:"Mounts"`
}

// StoreFromInspect reads where the container keeps its models from
// `docker inspect` output: its OLLAMA_MODELS (else $HOME/.ollama/models,
// HOME defaulting to /root) and the mount that holds that directory. A
// models directory on no mount, or on a mount outside modelsDir, is a
// Problem: the pulls do not land on the drive.
func StoreFromInspect(data []byte, container, modelsDir string) (Store, error) {
	var arr []inspected
	if err := json.Unmarshal(data, &arr); err != nil {
		return Store{}, fmt.Errorf("docker inspect %s: output is not a JSON array: %w", container, err)
	}
	if len(arr) == 0 || arr[0].Config == nil {
		return Store{}, fmt.Errorf("docker inspect %s: no container configuration in the output", container)
	}
	c := arr[0]
	home, dir := "/root", ""
	for _, e := range c.Config.Env {
		k, v, _ := strings.Cut(e, "=")
		switch k {
		case "HOME":
			if path.IsAbs(v) {
				home = v
			}
		case "OLLAMA_MODELS":
			dir = v
		}
	}
	src := "docker inspect " + container
	if dir == "" || !path.IsAbs(dir) {
		dir = path.Join(home, ".ollama", "models")
	} else {
		src += " (OLLAMA_MODELS)"
	}
	dir = path.Clean(dir)
	s := Store{ContainerDir: dir, Source: src}
	best := -1
	for i, m := range c.Mounts {
		d := path.Clean(m.Destination)
		if (dir == d || strings.HasPrefix(dir, d+"/") || d == "/") && (best < 0 || len(d) > len(path.Clean(c.Mounts[best].Destination))) {
			best = i
		}
	}
	if best < 0 {
		s.Problem = fmt.Sprintf("container %s keeps its models in %s, which is on no mount (inside the container, lost with it); mount models_dir %s at %s",
			container, dir, modelsDir, ContainerHome)
		return s, nil
	}
	m := c.Mounts[best]
	rel := strings.TrimPrefix(strings.TrimPrefix(dir, path.Clean(m.Destination)), "/")
	s.Dir = path.Join(m.Source, rel)
	md := path.Clean(modelsDir)
	if m.Type != "" && m.Type != "bind" || s.Dir != md && !strings.HasPrefix(s.Dir, md+"/") {
		s.Problem = fmt.Sprintf("container %s keeps its models in %s, on the %s mount of %s, not under models_dir %s; mount models_dir at %s",
			container, dir, m.Type, m.Source, modelsDir, ContainerHome)
	}
	return s, nil
}

// ReadStore asks the host where its container keeps the models (docker
// inspect over SSH); when that cannot be learned it falls back to
// DefaultStore and says why in the second result.
func ReadStore(ctx context.Context, r sshexec.Runner, container, modelsDir string) (Store, error) {
	def := DefaultStore(modelsDir)
	if r == nil || container == "" {
		return def, fmt.Errorf("no container to inspect")
	}
	res, err := r.Run(ctx, InspectCmd(container))
	if err != nil {
		return def, fmt.Errorf("docker inspect %s: %w", container, err)
	}
	if res.ExitStatus != 0 {
		return def, fmt.Errorf("docker inspect %s exited %d: %s", container, res.ExitStatus, strings.TrimSpace(string(res.Stderr)))
	}
	s, err := StoreFromInspect(res.Stdout, container, modelsDir)
	if err != nil {
		return def, err
	}
	return s, nil
}
