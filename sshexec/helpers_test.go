package sshexec_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"log/slog"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/crypto/ssh"

	"github.com/ollamalive/gpuctl/sshexec/sshtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func mustKey(t testing.TB) ssh.Signer {
	t.Helper()
	k, err := sshtest.NewEd25519Signer()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newEd25519(t testing.TB) (ed25519.PrivateKey, ssh.Signer) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return priv, s
}

func pemEncode(b *pem.Block) []byte { return pem.EncodeToMemory(b) }
