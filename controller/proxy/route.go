package proxy

import (
	"github.com/ollamalive/gpuctl/inventory"
)

// decision is where a request goes and why.
type decision struct {
	host     string
	fallback string // "" when a failed wake means 503
	reason   string // route, size, catalogue, default
}

// fitHeadroom: a model needs its file size plus about a tenth more VRAM
// (KV cache, CUDA context) to run without spilling to the CPU.
func fits(size int64, vram inventory.ByteSize) bool {
	return vram == 0 || uint64(size)+uint64(size)/10 <= uint64(vram)
}

// decide routes a model: the first matching [[route]]; else, when the
// model's size (from the catalogue) does not fit the default host's vram,
// an on-demand host where it fits (preferring one that has it), with the
// default host as fallback if it has the model; else the default host if it
// has the model (or nobody is known to); else the first host that has it.
func (p *Proxy) decide(model string) decision {
	if model == "" {
		return decision{host: p.def, reason: "default"}
	}
	if r := p.inv.MatchRoute(model); r != nil {
		return decision{host: r.Host, fallback: r.Fallback, reason: "route"}
	}
	having, size := p.cat.lookup(model)
	want := inventory.NormalModel(model)
	for i := range p.inv.Hosts {
		for _, m := range p.inv.Hosts[i].Models {
			if string(m.Normalize()) == want {
				having[p.inv.Hosts[i].Name] = true
			}
		}
	}
	def := p.hosts[p.def]
	if size > 0 && !fits(size, def.VRAM) {
		best := ""
		for _, name := range p.order[1:] {
			h := p.hosts[name]
			if !h.OnDemand || h.VRAM == 0 || !fits(size, h.VRAM) {
				continue
			}
			if having[name] {
				best = name
				break
			}
			if best == "" {
				best = name
			}
		}
		if best != "" {
			d := decision{host: best, reason: "size"}
			if having[p.def] {
				d.fallback = p.def
			}
			return d
		}
	}
	if having[p.def] || len(having) == 0 {
		return decision{host: p.def, reason: "default"}
	}
	for _, name := range p.order {
		if having[name] {
			return decision{host: name, reason: "catalogue"}
		}
	}
	return decision{host: p.def, reason: "default"}
}
