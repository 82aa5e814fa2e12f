package proxy

import (
	"context"
	"fmt"
)

// Wake brings host up as a request for it would, for the status page's
// wake button: it is counted in flight (so a gpuctl shutdown deciding
// right now sees it and aborts), shares the host's one check-and-wake with
// the requests waiting for it, and is held while a shutdown drains the
// host. It returns once the host is ready, or why it is not.
func (p *Proxy) Wake(ctx context.Context, host string) error {
	if _, ok := p.hosts[host]; !ok {
		return fmt.Errorf("no host %q in the inventory", host)
	}
	end := p.begin(host)
	defer end()
	return p.ready(ctx, host)
}
