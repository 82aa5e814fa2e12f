package proxy

import (
	"fmt"

	"github.com/ollamalive/gpuctl/inventory"
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests    *prometheus.CounterVec
	inFlight    *prometheus.GaugeVec
	wakes       *prometheus.CounterVec
	wakeSeconds *prometheus.HistogramVec
	backendUp   *prometheus.GaugeVec
	replays     *prometheus.CounterVec
	drainHolds  *prometheus.CounterVec
	refused     *prometheus.CounterVec
	pulls       *prometheus.CounterVec
	pullBytes   *prometheus.GaugeVec
	pullTotal   *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer, hosts []string) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gpuctl_proxy_requests_total",
			Help: "Requests answered by gpuctl serve, by backend host (\"gpuctl\" when answered locally), model and HTTP status (499: the client left).",
		}, []string{"host", "model", "code"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gpuctl_proxy_in_flight",
			Help: "Requests in flight per backend host, including those held while the host wakes.",
		}, []string{"host"}),
		wakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gpuctl_proxy_wakes_total",
			Help: "Wakes started by gpuctl serve for requests, by host and result (ok, failed).",
		}, []string{"host", "result"}),
		wakeSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gpuctl_proxy_wake_duration_seconds",
			Help:    "Time from starting a wake to the host's Ollama being ready, for successful wakes.",
			Buckets: []float64{1, 5, 10, 20, 30, 45, 60, 90, 120, 180, 240, 300, 600},
		}, []string{"host"}),
		backendUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gpuctl_proxy_backend_up",
			Help: "Last known state of each host's Ollama: 1 up, 0 down or asleep, -1 not known yet.",
		}, []string{"host"}),
		replays: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gpuctl_proxy_replays_total",
			Help: "Requests replayed once because the dial to the host failed before anything was sent.",
		}, []string{"host"}),
		drainHolds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gpuctl_proxy_drain_holds_total",
			Help: "Requests held because gpuctl shutdown was powering their host off (its draining marker was present).",
		}, []string{"host"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gpuctl_proxy_refused_total",
			Help: "Requests refused with 403 by Ollama's guard, by why: origin (a browser origin not allowed) or host (a Host that is not a local name on a loopback listener).",
		}, []string{"why"}),
		pulls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gpuctl_proxy_model_pulls_total",
			Help: "Declared models pulled by gpuctl serve after a wake it started, by host, model and result (ok, failed).",
		}, []string{"host", "model", "result"}),
		pullBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gpuctl_proxy_model_pull_completed_bytes",
			Help: "Bytes downloaded so far by a declared-model pull gpuctl serve started (removed when it ends).",
		}, []string{"host", "model"}),
		pullTotal: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gpuctl_proxy_model_pull_total_bytes",
			Help: "Bytes to download in a declared-model pull gpuctl serve started, as Ollama reports them (removed when it ends).",
		}, []string{"host", "model"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.inFlight, m.wakes, m.wakeSeconds, m.backendUp, m.replays, m.drainHolds, m.refused, m.pulls, m.pullBytes, m.pullTotal} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register proxy metrics: %w", err)
		}
	}
	for _, h := range hosts {
		m.inFlight.WithLabelValues(h)
		m.wakes.WithLabelValues(h, "ok")
		m.wakes.WithLabelValues(h, "failed")
	}
	return m, nil
}

// modelLabel bounds the model label's cardinality: clients can send any
// string, so only models the catalogue or the inventory knows are named.
func (p *Proxy) modelLabel(model string) string {
	if model == "" {
		return ""
	}
	if hs, _ := p.cat.lookup(model); len(hs) > 0 {
		return inventory.NormalModel(model)
	}
	for i := range p.inv.Hosts {
		for _, m := range p.inv.Hosts[i].Models {
			if string(m.Normalize()) == inventory.NormalModel(model) {
				return inventory.NormalModel(model)
			}
		}
	}
	return "other"
}
