package cli

import (
	"reflect"
	"strings"
	"testing"
)

func TestInterspersedFlags(t *testing.T) {
	app := newApp(&Env{})
	for _, c := range []struct{ in, want string }{
		{"gpuctl hosts --json", "gpuctl hosts --json"},
		{"gpuctl --config f hosts --json", "gpuctl --config f hosts --json"},
		{"gpuctl hosts --json --config f", "gpuctl --config f hosts --json"},
		{"gpuctl hosts --config=f", "gpuctl --config=f hosts"},
		{"gpuctl completion bash --help", "gpuctl completion --help bash"},
		{"gpuctl config check --config f", "gpuctl --config f config check"},
		{"gpuctl completion -- -weird", "gpuctl completion -- -weird"},
		{"gpuctl nosuch --json x", "gpuctl nosuch --json x"},
	} {
		got := strings.Join(interspersed(app, strings.Fields(c.in)), " ")
		if got != c.want {
			t.Errorf("%q -> %q, want %q", c.in, got, c.want)
		}
	}
	// Completion requests keep their order.
	in := []string{"gpuctl", "hosts", "--generate-bash-completion"}
	if got := interspersed(app, in); !reflect.DeepEqual(got, in) {
		t.Errorf("completion request reordered: %v", got)
	}
}

func TestFlagAfterArgumentIsHonoured(t *testing.T) {
	code, stdout, stderr := run(t, nil, "hosts", "--json", "--config", "../../../examples/gpuctl.toml")
	if code != 0 || !strings.HasPrefix(stdout, "[") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}
