package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/ollamalive/gpuctl/controller"
)

func TestTableModelCount(t *testing.T) {
	for _, tc := range []struct {
		models []string
		want   string
	}{
		{[]string{"a"}, "Ollama 0.17.4, 1 model"},
		{[]string{"a", "b"}, "Ollama 0.17.4, 2 models"},
		{[]string{}, "Ollama 0.17.4, 0 models"},
	} {
		var b bytes.Buffer
		st := controller.HostStatus{Name: "gaming-pc", State: controller.StateReady, Ollama: &controller.Ollama{Version: "0.17.4", Models: tc.models}}
		if err := WriteTable(&b, []controller.HostStatus{st}, time.Now(), false); err != nil {
			t.Fatal(err)
		}
		if line := strings.Split(b.String(), "\n")[1]; !strings.HasSuffix(strings.TrimSpace(line), tc.want) {
			t.Errorf("%d models: %q, want it to end with %q", len(tc.models), line, tc.want)
		}
	}
}

func FuzzClean(f *testing.F) {
	f.Add("gaming-pc")
	f.Add("\x1b[31mred\x1b[0m\r\nline\x00\x7f")
	f.Fuzz(func(t *testing.T, s string) {
		if c := Clean(s); strings.ContainsAny(c, "\x1b\r\n\x00\x7f") {
			t.Fatalf("Clean left control characters: %q", c)
		}
	})
}
