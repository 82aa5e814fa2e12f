// Package sshexec runs commands on gpuctl's hosts over SSH, strictly and
// within deadlines, using golang.org/x/crypto/ssh.
//
// A Client is one connection to one host; every Run is its own session, at
// most Config.MaxSessions (8, below OpenSSH's MaxSessions of 10) at once.
// Commands are argv (Cmd.Args), quoted here, once, into a POSIX shell string
// (Quote). Pool keeps one Client per host and redials closed ones.
//
// # Deadlines
//
// The TCP connect and the SSH handshake of each hop are bounded by
// Config.ConnectTimeout and the caller's context (the socket gets a deadline,
// and is closed when the context ends, since the handshake has none of its
// own). Opening a session and running a command are bounded by the context
// and Cmd.Timeout; on expiry the whole connection is closed, because a
// session whose command does not end cannot be reclaimed (golang/go#21699).
// keepalive@openssh.com requests go out every KeepaliveInterval, each with
// its own KeepaliveTimeout; KeepaliveMisses failures in a row close the
// connection and fail its commands with ErrKeepalive.
//
// # Host keys
//
// A host's pinned key (inventory host_key) is the only key accepted for it.
// Otherwise the server's key must be in one of the known_hosts files:
// [ssh].known_hosts (default ~/.ssh/known_hosts), ssh_config's
// UserKnownHostsFile, and gpuctl's own state_dir/known_hosts, where
// `gpuctl trust HOST` records keys. HostKeyAlgorithms is set from the key
// types on record for that very address, so a server with RSA and ed25519
// keys is asked for the one that is known (golang/go#29286). Failures are a
// *HostKeyError: unknown (with the SHA256 fingerprint and the gpuctl trust
// command), mismatch (with both fingerprints and the known_hosts file:line),
// or revoked. There is no way to skip the check.
//
// # Authentication
//
// All keys go into one PublicKeysCallback: Config.Signers, then identity
// files, then the ssh-agent's other keys (unless IdentitiesOnly). A
// passphrase-protected identity file is used through the agent's copy of the
// same key (found via the file's embedded public key or <file>.pub); gpuctl
// never prompts. Identity files are [ssh].identity_files plus ssh_config's
// IdentityFile; when neither names one: state_dir/id_ed25519,
// ~/.ssh/id_ed25519, ~/.ssh/id_ecdsa, ~/.ssh/id_rsa (those that exist).
//
// # Where settings come from (ConfigFor)
//
// ssh_config ([ssh].config, default ~/.ssh/config when it exists, "none"
// for none) is looked up with the host's inventory address as the alias, as
// `ssh ADDRESS` would:
//   - HostName: ssh_config's, else the inventory address.
//   - Port: the inventory's ssh_port when it is not 22, else ssh_config's
//     Port, else 22.
//   - User: always the inventory's (ssh_user, default [ssh].user, "gpuctl");
//     ssh_config's User applies to ProxyJump hops only.
//   - IdentityFile, IdentitiesOnly, IdentityAgent, UserKnownHostsFile: added
//     to the inventory's settings as described above.
//   - ProxyJump: honoured; each hop is resolved through ssh_config too and
//     verified against the same known_hosts files.
//   - ProxyCommand, HostKeyAlias, RemoteCommand, KnownHostsCommand,
//     ControlPath, CanonicalizeHostname, tokens other than %h %n %d %%, and
//     Match criteria other than "all" and "host" are refused with an error
//     rather than ignored.
package sshexec
