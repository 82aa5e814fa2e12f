package hostcmd

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Container is what the container check learned about the Ollama container.
type Container struct {
	Name         string    `json:"name"`
	Status       string    `json:"status"` // created, running, restarting, exited, …
	Running      bool      `json:"running"`
	Restarting   bool      `json:"restarting"`
	RestartCount int       `json:"restart_count"`
	StartedAt    time.Time `json:"started_at"`
	ExitCode     int       `json:"exit_code"`
	Error        string    `json:"error,omitempty"`
	// Health is the healthcheck status ("healthy", "starting", "unhealthy"),
	// "" when the image defines no healthcheck.
	Health string `json:"health,omitempty"`
	// GPUs are the devices `nvidia-smi -L` lists inside the container.
	GPUs []ListedGPU `json:"gpus"`
	// Models is where the container keeps its models (its OLLAMA_MODELS
	// and the mount holding it), read from docker inspect.
	Models *Store `json:"models,omitempty"`
}

// ContainerState is docker inspect's .State object.
type ContainerState struct {
	Status     string    `json:"Status"`
	Running    bool      `json:"Running"`
	Paused     bool      `json:"Paused"`
	Restarting bool      `json:"Restarting"`
	OOMKilled  bool      `json:"OOMKilled"`
	Dead       bool      `json:"Dead"`
	ExitCode   int       `json:"ExitCode"`
	Error      string    `json:"Error"`
	StartedAt  time.Time `json:"StartedAt"`
	Health     *Health   `json:"Health"`
}

// Health is docker inspect's .State.Health object.
type Health struct {
	Status        string `json:"Status"`
	FailingStreak int    `json:"FailingStreak"`
	Log           []struct {
		ExitCode int    `json:"ExitCode"`
		Output   string `json:"Output"`
	} `json:"Log"`
}

type inspectEntry struct {
	Name         string          `json:"Name"`
	RestartCount int             `json:"RestartCount"`
	State        *ContainerState `json:"State"`
}

// ParseDockerInspect parses `docker inspect` output (a JSON array) for one
// container.
func ParseDockerInspect(data []byte) (Container, error) {
	var arr []inspectEntry
	if err := json.Unmarshal(data, &arr); err != nil {
		return Container{}, fmt.Errorf("docker inspect output is not a JSON array: %w", err)
	}
	if len(arr) == 0 {
		return Container{}, ErrNoSuchContainer
	}
	e := arr[0]
	if e.State == nil {
		return Container{}, fmt.Errorf("docker inspect output has no State")
	}
	c := ContainerFromState(*e.State)
	c.Name = strings.TrimPrefix(e.Name, "/")
	c.RestartCount = e.RestartCount
	return c, nil
}

// ContainerFromState copies the State fields into a Container.
func ContainerFromState(s ContainerState) Container {
	c := Container{Status: s.Status, Running: s.Running, Restarting: s.Restarting,
		StartedAt: s.StartedAt, ExitCode: s.ExitCode, Error: s.Error}
	if s.Health != nil {
		c.Health = s.Health.Status
	}
	return c
}

// ErrNoSuchContainer is what ParseDockerInspect returns when docker found no container of that name.
var ErrNoSuchContainer = fmt.Errorf("no such container")

// DockerProblem classifies docker CLI errors.
type DockerProblem struct {
	// Kind is "daemon-down", "permission", "no-container", "not-installed" or "failed".
	Kind string
	Msg  string
	// Transient problems may clear while the host finishes booting.
	Transient bool
}

// ClassifyDockerError recognises the docker CLI's failure texts.
func ClassifyDockerError(container string, stdout, stderr []byte, exit int) *DockerProblem {
	all := string(stderr) + "\n" + string(stdout)
	switch {
	case strings.Contains(all, "Cannot connect to the Docker daemon"):
		return &DockerProblem{Kind: "daemon-down", Transient: true,
			Msg: "Docker daemon is not running (" + firstMatch(all, "Cannot connect to the Docker daemon") + "); check `systemctl status docker` on the host"}
	case strings.Contains(all, "a password is required") || strings.Contains(all, "is not allowed to execute") || strings.Contains(all, "not in the sudoers file"):
		return &DockerProblem{Kind: "permission",
			Msg: fmt.Sprintf("gpuctl's SSH user may not run docker through sudo (%s): the box's sudo rules must allow exactly `%s` and `%s` without a password; regenerate its NixOS config with `gpuctl nixos generate`",
				firstMatch(all, "sudo"), strings.Join(SudoArgv(InspectArgs(container)), " "), strings.Join(SudoArgv(ContainerGPUArgs(container)), " "))}
	case strings.Contains(all, "permission denied while trying to connect to the Docker daemon"):
		return &DockerProblem{Kind: "permission",
			Msg: "docker ran without root and was refused the socket: run it through the box's sudo rules (`sudo -n " + DockerCommand + " ...`), not the docker group"}
	case strings.Contains(all, "No such object") || strings.Contains(all, "No such container"):
		return &DockerProblem{Kind: "no-container", Transient: true,
			Msg: fmt.Sprintf("container %q does not exist on the host; create it (or set container in the inventory)", container)}
	case exit == 127 || strings.Contains(all, "command not found"):
		return &DockerProblem{Kind: "not-installed", Msg: "docker is not installed on the host"}
	case exit != 0:
		return &DockerProblem{Kind: "failed", Transient: true, Msg: fmt.Sprintf("docker exited %d: %s", exit, FirstLine(stderr, stdout))}
	}
	return nil
}

func firstMatch(text, sub string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			l = strings.TrimSpace(l)
			l = strings.TrimPrefix(l, "ERROR: ")
			return l
		}
	}
	return ""
}

// ContainerProblem says why a container is not ready, "" if it is; transient
// reports whether waiting may help.
func ContainerProblem(c Container) (msg string, transient bool) {
	switch {
	case c.Restarting:
		return fmt.Sprintf("container is restarting (restart count %d, last exit %d)%s", c.RestartCount, c.ExitCode, errSuffix(c.Error)), true
	case !c.Running:
		st := c.Status
		if st == "" {
			st = "not running"
		}
		msg := fmt.Sprintf("container is %s (exit code %d)%s", st, c.ExitCode, errSuffix(c.Error))
		if strings.Contains(c.Error, "could not select device driver") {
			msg += "; the NVIDIA container toolkit is missing or not configured for Docker"
		}
		return msg, c.Status == "created" || c.Status == ""
	case c.Health == "starting":
		return "container is running, healthcheck still starting", true
	case c.Health == "unhealthy":
		return "container is running but unhealthy", true
	}
	return "", false
}

func errSuffix(e string) string {
	if e == "" {
		return ""
	}
	return ": " + e
}

// ContainerGPUProblem classifies a failed `docker exec C nvidia-smi -L`.
func ContainerGPUProblem(container string, stdout, stderr []byte, exit int) (msg string, transient bool) {
	all := string(stdout) + "\n" + string(stderr)
	switch {
	case strings.Contains(all, nvsmiNoDriver):
		return "inside the container nvidia-smi cannot reach the driver", false
	case strings.Contains(all, nvsmiMismatch):
		return "inside the container: driver/library version mismatch (reboot the PC)", false
	case strings.Contains(all, "executable file not found") || strings.Contains(all, "no such file or directory") || exit == 127:
		return fmt.Sprintf("no nvidia-smi inside container %q: the GPU is not passed through (run it with --gpus all / CDI and the NVIDIA container toolkit)", container), false
	case strings.Contains(all, "is not running"):
		return fmt.Sprintf("container %q is not running", container), true
	}
	if p := ClassifyDockerError(container, stdout, stderr, exit); p != nil {
		return p.Msg, p.Transient
	}
	return "", false
}

// ContainerGPUArgs is the argv of the GPU-in-container check.
func ContainerGPUArgs(container string) []string {
	return []string{"sudo", "-n", DockerCommand, "exec", container, "nvidia-smi", "-L"}
}

// SudoArgv strips the `sudo -n` of a template: the argv the box's sudo rule
// must allow for it.
func SudoArgv(args []string) []string {
	if len(args) > 2 && args[0] == "sudo" && args[1] == "-n" {
		return args[2:]
	}
	return nil
}
