package hostcmd

import (
	"time"

	"github.com/ollamalive/gpuctl/sshexec"
)

// PoweroffCommand is poweroff on the generated NixOS system: the one command
// besides the docker checks that the box's sudo rule lets gpuctl's account
// run (nixconfig writes the rule from it).
const PoweroffCommand = "/run/current-system/sw/bin/poweroff"

// PoweroffArgs is `sudo -n poweroff`: idle shutdown's last command.
func PoweroffArgs() []string { return []string{"sudo", "-n", PoweroffCommand} }

// PoweroffCmd is PoweroffArgs with its deadline; the connection dropping
// while it runs is the box going down.
func PoweroffCmd() sshexec.Cmd { return sshexec.Cmd{Args: PoweroffArgs(), Timeout: 20 * time.Second} }
