// Package wake sends and receives Wake-on-LAN magic packets.
//
// A magic packet is six 0xFF bytes followed by the target MAC sixteen times
// (102 bytes), optionally followed by a 4- or 6-byte SecureOn password
// (MagicPacket, ParseMagicPacket). Nothing acknowledges it, so gpuctl sends
// it where the sleeping NIC will see it, several times, and again while it
// waits for the PC to boot.
//
// # Where packets go
//
// NewPlan (or a Planner with injected interfaces and resolver) turns an
// inventory host into a Plan: a MagicPacket and its Targets.
//
//   - wol_to: UDP to each configured ip:port (port 9 unless it says, e.g., 7).
//   - wol_interface: raw Ethernet frames, EtherType 0x0842, to
//     ff:ff:ff:ff:ff:ff on that interface (needs CAP_NET_RAW).
//   - otherwise (and also alongside wol_interface when the address is on a
//     local network): UDP port 9 to the directed broadcast of the interface
//     whose prefix contains the host's address, computed from the real prefix
//     length (10.77.0.5/23 → 10.77.1.255, never x.x.x.0, never a hard-coded
//     /24), with SO_BROADCAST and the socket bound to that interface
//     (SO_BINDTODEVICE). 255.255.255.255 is never used: it leaves by the
//     default route, which is wrong on servers with Docker bridges, VPNs or
//     several NICs. When no interface is on the address's network, Plan fails
//     with a *NoRouteError naming the address and every interface considered.
//
// # Sending
//
//	plan, err := wake.NewPlan(ctx, host)
//	sent, err := plan.Burst(ctx, wake.DefaultCount, wake.DefaultInterval)
//	// while waiting for SSH:
//	s := &wake.Sender{Plan: plan, Every: 5 * time.Second}
//	go s.Run(ctx) // bursts until ctx ends
//
// Plan.Repeat(ctx, every) is the short form of Sender.Run. Sends happen on
// the calling goroutine through Plan.Transport (Net by default); tests and the
// simulated PC plug in their own Transport. SendUDP and SendEthernet are the
// single-packet primitives.
//
// # Receiving
//
// ListenUDP(":9") and ListenRaw("eth0") return a Listener; Serve(ctx, fn)
// calls fn with a Seen (source ip:port or MAC, target MAC, SecureOn present
// or not) for every magic packet until ctx ends. A raw listener sees every
// frame on the interface, so it reports UDP magic packets as well as 0x0842
// frames. Seen never prints or marshals the password; Seen.Matches checks it.
// `gpuctl wol listen` is built on these, and so are the tests.
//
// Sockets belong to the network namespace of the thread that creates them, so
// tests create listeners and run Burst inside waketest namespaces.
package wake
