package controller

import (
	"bytes"
	"strings"
	"testing"
	"time"
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
		st := HostStatus{Name: "gaming-pc", State: StateReady, Ollama: &Ollama{Version: "0.17.4", Models: tc.models}}
		if err := WriteTable(&b, []HostStatus{st}, time.Now(), false); err != nil {
			t.Fatal(err)
		}
		if line := strings.Split(b.String(), "\n")[1]; !strings.HasSuffix(strings.TrimSpace(line), tc.want) {
			t.Errorf("%d models: %q, want it to end with %q", len(tc.models), line, tc.want)
		}
	}
}
