package controller_test

// Tier 2: the readiness checks over a real OpenSSH sshd, logged in as an
// unprivileged account that holds exactly the sudo rules the generated
// NixOS system gives the gpuctl account (nixconfig.SudoCommands), run by
// the real sudo. No docker group: docker answers only through sudo.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ollamalive/gpuctl/controller"
	"github.com/ollamalive/gpuctl/controller/fixtures"
	"github.com/ollamalive/gpuctl/controller/hostcmd"
	"github.com/ollamalive/gpuctl/controller/ollamatest"
	"github.com/ollamalive/gpuctl/inventory"
	"github.com/ollamalive/gpuctl/nixconfig"
	"github.com/ollamalive/gpuctl/sshexec"
	"github.com/ollamalive/gpuctl/sshexec/sshdtest"
	"github.com/ollamalive/gpuctl/wake/waketest"
	"golang.org/x/crypto/ssh"
)

const (
	sudoUser = "gpuctl-sudo-t"
	sudoUID  = 64711 // inside the test's own /etc/passwd only
)

// The stand-ins installed where the sudo rules point (/run/current-system/
// sw/bin, as on NixOS). docker answers only as root, as the real daemon's
// socket does for a user outside the docker group.
const (
	standinDocker = `#!/bin/sh
if [ "$(id -u)" != 0 ]; then
  echo 'permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock: Get "http://%2Fvar%2Frun%2Fdocker.sock/v1.47/containers/json": dial unix /var/run/docker.sock: connect: permission denied' >&2
  exit 1
fi
echo "$*" >> /run/gpuctl-test/docker.log
case "$*" in
"inspect --type container ollama") cat FIXTURES/docker_inspect_running_nginx_20.10.5.json ;;
"exec ollama nvidia-smi -L") cat FIXTURES/nvidia-smi_L_rtx4080super.txt ;;
*)
  echo "docker stand-in: $* is not simulated" >&2; exit 125 ;;
esac
`
	// The gpu check's own query (hostcmd.GPUQueryArgs), values as in
	// the rtx4080super capture.
	standinNvidiaSMI = `#!/bin/sh
echo '0, NVIDIA GeForce RTX 4080 SUPER, GPU-6f0e6c6b-8a4e-4bb4-9d1e-2a3c4b5d6e7f, 595.71.05, 16376, 596, 0, 35, P8'
`
	standinPoweroff = `#!/bin/sh
[ "$(id -u)" = 0 ] || { echo "poweroff: must be root" >&2; exit 1; }
echo "poweroff $*" >> /run/gpuctl-test/poweroff.log
`
)

// nsScript runs in a private mount namespace before exec'ing sshd: the
// test's passwd, group, shadow and sudoers over /etc's, a fresh /run with
// the stand-ins under /run/current-system/sw/bin, and a tmpfs model drive.
const nsScript = `set -e
r=$1; shift
for f in passwd group shadow sudoers; do mount --bind "$r/etc/$f" "/etc/$f"; done
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/sshd /run/current-system/sw/bin /run/gpuctl-test
cp "$r"/bin/* /run/current-system/sw/bin/
chmod 0755 /run/current-system/sw/bin/*
mount -t tmpfs -o size=64g,mode=0755,uid=$GPUCTL_TEST_UID tmpfs "$r/models"
exec "$@"
`

func TestChecksAsUnprivilegedSudoUser(t *testing.T) {
	waketest.Require(t, sshdtest.Path, "sudo", "unshare", "mount")
	root := t.TempDir()
	// sshd reads the authorized keys, and the user's shell reaches the
	// models directory, as the unprivileged user.
	for _, d := range []string{filepath.Dir(root), root} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	home := filepath.Join(root, "home")
	models := filepath.Join(root, "models")
	for _, d := range []string{filepath.Join(root, "etc"), filepath.Join(root, "bin"), home, models} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(home, sudoUID, sudoUID); err != nil {
		t.Fatal(err)
	}
	etc := func(name, add string, mode os.FileMode) {
		base, err := os.ReadFile("/etc/" + name)
		if err != nil && name != "sudoers" {
			t.Fatal(err)
		}
		if name == "sudoers" {
			base = nil
		}
		if err := os.WriteFile(filepath.Join(root, "etc", name), append(base, add...), mode); err != nil {
			t.Fatal(err)
		}
	}
	etc("passwd", fmt.Sprintf("%s:x:%d:%d:gpuctl controller:%s:/bin/sh\n", sudoUser, sudoUID, sudoUID, home), 0o644)
	etc("group", fmt.Sprintf("%s:x:%d:\n", sudoUser, sudoUID), 0o644)
	etc("shadow", sudoUser+":*:20000:0:99999:7:::\n", 0o640)
	// Exactly the generated rules, as NixOS's sudo module writes
	// security.sudo.extraRules (runAs ALL:ALL), and root's own line.
	var sudoers strings.Builder
	sudoers.WriteString("root ALL=(ALL:ALL) SETENV: ALL\n")
	for _, c := range nixconfig.SudoCommands("ollama") {
		fmt.Fprintf(&sudoers, "%s ALL=(ALL:ALL) NOPASSWD: %s\n", sudoUser, c)
	}
	etc("sudoers", sudoers.String(), 0o440)
	// Real captures (controller/fixtures) behind the stand-ins.
	fix := filepath.Join(root, "fixtures")
	if err := os.MkdirAll(fix, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"docker_inspect_running_nginx_20.10.5.json", "nvidia-smi_L_rtx4080super.txt"} {
		b := fixtures.Must(n)
		if strings.HasPrefix(n, "docker_inspect") {
			// The container as the stick runs it: models_dir at /root/.ollama.
			var err error
			if b, err = ollamatest.ContainerInspect(b, models); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(fix, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, body := range map[string]string{"docker": strings.ReplaceAll(standinDocker, "FIXTURES", fix), "nvidia-smi": standinNvidiaSMI, "poweroff": standinPoweroff} {
		if err := os.WriteFile(filepath.Join(root, "bin", name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("visudo", "-c", "-f", filepath.Join(root, "etc", "sudoers")).CombinedOutput(); err != nil {
		t.Fatalf("the generated rules are not valid sudoers: %v\n%s", err, out)
	}

	srv := sshdtest.Start(t, sshdtest.Options{
		Wrap: []string{"env", fmt.Sprintf("GPUCTL_TEST_UID=%d", sudoUID),
			"unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", nsScript, "sh", root},
		ExtraConfig: "SetEnv PATH=/run/current-system/sw/bin:/usr/bin:/bin\n",
	})
	for _, d := range []string{filepath.Dir(srv.Dir), srv.Dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	inv, err := inventory.Parse("gpuctl.toml", []byte(fmt.Sprintf(`
[[host]]
name = "gaming-pc"
address = "127.0.0.1"
ssh_port = %s
ssh_user = %q
models_dir = %q
checks = ["gpu", "container", "container_gpu", "mount", "free_space", "write_probe"]
`, srv.Addr[strings.LastIndex(srv.Addr, ":")+1:], sudoUser, models)), inventory.Env{Home: root, Getenv: func(string) string { return "" }})
	if err != nil {
		t.Fatal(err)
	}
	h, _ := inv.Host("gaming-pc")
	cfg := func(*inventory.Host) (sshexec.Config, error) {
		return sshexec.Config{Host: h.Name, Addr: srv.Addr, User: sudoUser, HostKey: srv.HostKeys()[0],
			Signers: []ssh.Signer{srv.ClientSigner()}, KeepaliveInterval: -1}, nil
	}
	c := &controller.Controller{StateDir: t.TempDir(), SSH: sshexec.SSHConnector(cfg),
		ProbeTimeout: 10 * time.Second, CheckTimeout: 30 * time.Second}

	st := c.Status(t.Context(), h)
	for _, ck := range st.Checks {
		if !ck.OK {
			t.Errorf("check %s failed as %s: %s", ck.Name, sudoUser, ck.Detail)
		}
	}
	if st.State != controller.StateReady || len(st.Checks) != 6 {
		t.Fatalf("state %s (%s), %d checks: %+v", st.State, st.Reason, len(st.Checks), st.Checks)
	}
	if st.Container == nil || len(st.Container.GPUs) != 1 || len(st.GPU) != 1 {
		t.Errorf("container %+v, GPUs %+v", st.Container, st.GPU)
	}

	// The same account, the same sudo: what the rules allow runs as root,
	// anything else is refused.
	runner, closer, err := sshexec.SSHConnector(cfg)(t.Context(), h, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closer.Close()
	run := func(args ...string) sshexec.Result {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		res, err := runner.Run(ctx, sshexec.Cmd{Args: args, Timeout: 20 * time.Second, MaxOutput: 1 << 16})
		if err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		return res
	}
	if res := run("id", "-Gn"); strings.Join(strings.Fields(string(res.Stdout)), " ") != sudoUser {
		t.Errorf("%s is in groups %q, want only its own", sudoUser, res.Stdout)
	}
	pw := []string{"sudo", "-n", hostcmd.PoweroffCommand}
	for _, refused := range [][]string{
		{"docker", "inspect", "--type", "container", "ollama"}, // no docker group
		{"sudo", "-n", hostcmd.DockerCommand, "ps"},
		{"sudo", "-n", hostcmd.DockerCommand, "inspect", "--type", "container", "other"},
		{"sudo", "-n", hostcmd.DockerCommand, "exec", "ollama", "sh"},
		{"sudo", "-n", hostcmd.DockerCommand, "exec", "ollama", "nvidia-smi", "-L", "-x"},
		{"sudo", "-n", hostcmd.PoweroffCommand, "--force"},
		{"sudo", "-n", "/bin/sh", "-c", "id"},
		{"sudo", "-n", "-u", "root", "true"},
		{"sudo", "-n", "docker", "ps"},
	} {
		res := run(refused...)
		if res.ExitStatus == 0 {
			t.Errorf("%q was allowed: %s", refused, res.Stdout)
			continue
		}
		if refused[0] == "sudo" && !strings.Contains(string(res.Stderr), "a password is required") && !strings.Contains(string(res.Stderr), "not allowed") {
			t.Errorf("%q: exit %d, stderr %q, want sudo's refusal", refused, res.ExitStatus, res.Stderr)
		}
	}
	if res := run(pw...); res.ExitStatus != 0 {
		t.Errorf("%q: exit %d, %s", pw, res.ExitStatus, res.Stderr)
	}
	logs := run("sh", "-c", "cat /run/gpuctl-test/poweroff.log; sort /run/gpuctl-test/docker.log")
	if want := "poweroff \nexec ollama nvidia-smi -L\ninspect --type container ollama\n"; string(logs.Stdout) != want {
		t.Errorf("what ran as root:\n%s\nwant:\n%s", logs.Stdout, want)
	}
}
