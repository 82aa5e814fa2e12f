package sshexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// authSet is the keys one handshake offers, in one PublicKeysCallback:
// x/crypto tries each auth method by name only once, so a second PublicKeys
// method would never be attempted (golang/go#60587).
type authSet struct {
	signers []ssh.Signer
	offered []string
	notes   []string
	agent   net.Conn
}

func (a *authSet) close() {
	if a.agent != nil {
		a.agent.Close()
	}
}

func (a *authSet) add(s ssh.Signer, desc string) {
	blob := s.PublicKey().Marshal()
	for _, o := range a.signers {
		if bytes.Equal(o.PublicKey().Marshal(), blob) {
			return
		}
	}
	a.signers = append(a.signers, s)
	a.offered = append(a.offered, fmt.Sprintf("%s %s %s", desc, s.PublicKey().Type(), ssh.FingerprintSHA256(s.PublicKey())))
}

// loadAuth gathers cfg's keys: Signers, then identity files (an encrypted one
// stands in for its agent key), then the agent's other keys unless
// IdentitiesOnly. The agent connection lives until the handshake ends.
func (cfg *Config) loadAuth(ctx context.Context) (*authSet, error) {
	a := &authSet{}
	for _, s := range cfg.Signers {
		a.add(s, "key")
	}
	var agentSigners []ssh.Signer
	if cfg.AgentSocket != "" {
		agentSigners = a.dialAgent(ctx, cfg.AgentSocket)
	}
	for _, f := range cfg.IdentityFiles {
		if err := a.addIdentity(f, agentSigners); err != nil {
			a.close()
			return nil, err
		}
	}
	if !cfg.IdentitiesOnly {
		for _, s := range agentSigners {
			comment := ""
			if k, ok := s.PublicKey().(*agent.Key); ok && k.Comment != "" {
				comment = " " + k.Comment
			}
			a.add(s, "agent"+comment)
		}
	}
	if len(a.signers) == 0 {
		a.close()
		return nil, &AuthError{Host: cfg.name(), Addr: cfg.Addr, User: cfg.User, Notes: a.notes,
			Err: errors.New("no keys")}
	}
	return a, nil
}

// dialAgent connects to the ssh-agent at socket and lists its keys; what
// fails becomes a note. The connection stays open in a.agent.
func (a *authSet) dialAgent(ctx context.Context, socket string) []ssh.Signer {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		a.notes = append(a.notes, fmt.Sprintf("ssh-agent at %s is unreachable (%v)", socket, err))
		return nil
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	} else {
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	}
	a.agent = conn
	signers, err := agent.NewClient(conn).Signers()
	if err != nil {
		a.notes = append(a.notes, fmt.Sprintf("ssh-agent at %s did not list its keys (%v)", socket, err))
	}
	return signers
}

// addIdentity adds identity file f, or for a passphrase-protected one the
// agent's key with its public half; a file that is missing or cannot be
// used without a prompt becomes a note, one that is not a key an error.
func (a *authSet) addIdentity(f string, agentSigners []ssh.Signer) error {
	id, err := readIdentity(f)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			a.notes = append(a.notes, fmt.Sprintf("identity file %s does not exist", f))
			return nil
		}
		return fmt.Errorf("read identity file %s: %w", f, err)
	}
	switch pm := id.missing; {
	case id.signer != nil:
		a.add(id.signer, f)
	case pm != nil:
		pub := pm.PublicKey
		if pub == nil {
			if pd, err := os.ReadFile(f + ".pub"); err == nil {
				pub, _, _, _, _ = ssh.ParseAuthorizedKey(pd)
			}
		}
		if pub == nil {
			a.notes = append(a.notes, fmt.Sprintf("identity file %s is passphrase-protected and has no %s.pub to find it in ssh-agent by", f, f))
			return nil
		}
		for _, s := range agentSigners {
			if bytes.Equal(s.PublicKey().Marshal(), pub.Marshal()) {
				a.add(s, "agent key for "+f+" (passphrase-protected file)")
				return nil
			}
		}
		a.notes = append(a.notes, fmt.Sprintf("identity file %s is passphrase-protected and gpuctl never prompts: load it with: ssh-add %s", f, f))
	default:
		return fmt.Errorf("identity file %s: %w (is it a private key?)", f, id.parseErr)
	}
	return nil
}

// isAuthFailure recognises x/crypto's "unable to authenticate" (it has no
// typed error for it).
func isAuthFailure(err error) bool {
	return err != nil && strings.Contains(err.Error(), "unable to authenticate")
}
