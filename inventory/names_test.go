package inventory

import (
	"strings"
	"testing"

	"github.com/ollama/ollama/types/model"
)

func TestNormalModel(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"heavy", "heavy:latest"},
		{"HEAVY", "heavy:latest"},
		{"Heavy:Latest", "heavy:latest"},
		{"library/heavy", "heavy:latest"},
		{"registry.ollama.ai/library/heavy:latest", "heavy:latest"},
		{"REGISTRY.OLLAMA.AI/Library/heavy", "heavy:latest"},
		{"heavy:70b", "heavy:70b"},
		{"ns/m", "ns/m:latest"},
		{"registry.ollama.ai/ns/m:q4", "ns/m:q4"},
		{"127.0.0.1:5000/library/tiny", "127.0.0.1:5000/library/tiny:latest"},
		{"127.0.0.1:5000/library/tiny:latest", "127.0.0.1:5000/library/tiny:latest"},
		{"llama3.3:70b-instruct-q4_K_M", "llama3.3:70b-instruct-q4_k_m"},
		// Names Ollama refuses keep their text.
		{"bad name", "bad name:latest"},
		{"a/b/c/d", "a/b/c/d:latest"},
	} {
		if got := NormalModel(tc.in); got != tc.want {
			t.Errorf("NormalModel(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestMatchRouteNames(t *testing.T) {
	inv := &Inventory{Routes: []Route{
		{Models: []string{"heavy"}, Host: "pc"},
		{Models: []string{"llama3.3:*", "*:70b"}, Host: "pc2"},
		{Models: []string{"ns/*"}, Host: "pc3"},
	}}
	for _, tc := range []struct{ model, host string }{
		{"heavy", "pc"}, {"HEAVY", "pc"}, {"Heavy:latest", "pc"}, {"library/heavy", "pc"},
		{"registry.ollama.ai/library/heavy:latest", "pc"},
		{"heavy:7b", ""},
		{"llama3.3", "pc2"}, {"LLAMA3.3:70B", "pc2"}, {"registry.ollama.ai/library/llama3.3:q8", "pc2"},
		{"qwen:70b", "pc2"}, {"Qwen:70B", "pc2"},
		{"ns/m", "pc3"}, {"registry.ollama.ai/NS/m:t", "pc3"},
		{"light", ""},
	} {
		r := inv.MatchRoute(tc.model)
		got := ""
		if r != nil {
			got = r.Host
		}
		if got != tc.host {
			t.Errorf("MatchRoute(%q) = %q, want %q", tc.model, got, tc.host)
		}
	}
}

// FuzzNormalModel checks the normal form against Ollama's own name rules
// (model.ParseName): two names Ollama takes for one model have one normal
// form, two it tells apart have two, and the normal form reads back as the
// same model.
func FuzzNormalModel(f *testing.F) {
	for _, s := range []string{"heavy", "HEAVY", "library/heavy", "registry.ollama.ai/library/heavy:latest",
		"ns/m:tag", "127.0.0.1:5000/library/tiny", "https://h.example/ns/m:t", "a/b/c/d", "x:y:z", "", "@sha256:00"} {
		f.Add(s, strings.ToUpper(s))
		f.Add(s, "heavy")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		na, nb := model.ParseName(a), model.ParseName(b)
		ka, kb := NormalModel(a), NormalModel(b)
		if na.IsValid() {
			if want := strings.ToLower(na.DisplayShortest()); ka != want {
				t.Fatalf("NormalModel(%q) = %q, want %q", a, ka, want)
			}
			back := model.ParseName(ka)
			if !back.IsValid() || !back.EqualFold(na) {
				t.Fatalf("NormalModel(%q) = %q reads back as %q, not %q", a, ka, back, na)
			}
			if NormalModel(ka) != ka {
				t.Fatalf("NormalModel is not idempotent on %q: %q then %q", a, ka, NormalModel(ka))
			}
		}
		if na.IsValid() && nb.IsValid() && (ka == kb) != na.EqualFold(nb) {
			t.Fatalf("%q and %q: normal forms %q, %q; Ollama says equal=%v", a, b, ka, kb, na.EqualFold(nb))
		}
	})
}
