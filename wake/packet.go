package wake

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/ollamalive/gpuctl/inventory"
)

// Sizes of a magic packet on the wire.
const (
	syncLen    = 6
	macRepeats = 16
	// MagicLen is a magic packet without a SecureOn password: 6×0xFF and the
	// target MAC 16 times.
	MagicLen = syncLen + macRepeats*6 // 102
)

// EtherType is the EtherType of a bare (non-IP) Wake-on-LAN frame.
const EtherType = 0x0842

// MagicPacket is a Wake-on-LAN magic packet: six 0xFF bytes, the target MAC
// sixteen times, then an optional SecureOn password of 4 or 6 bytes.
type MagicPacket struct {
	Target inventory.MAC
	// Password is the optional SecureOn password (0, 4 or 6 bytes). It is an
	// inventory.Secret, so fmt prints it as "(redacted)".
	Password inventory.Secret
}

// Len is the packet's size on the wire: 102, 106 or 108 bytes.
func (p MagicPacket) Len() int { return MagicLen + len(p.Password) }

func (p MagicPacket) check() error {
	if p.Target.IsZero() {
		return errors.New("magic packet: the target MAC is all zeroes")
	}
	if p.Target[0]&1 == 1 {
		return fmt.Errorf("magic packet: target %s is a multicast or broadcast address, not a NIC's MAC", p.Target)
	}
	if n := len(p.Password); n != 0 && n != 4 && n != 6 {
		return fmt.Errorf("magic packet: a SecureOn password has 4 or 6 bytes, not %d", n)
	}
	return nil
}

// AppendBinary appends the packet's wire form to b.
func (p MagicPacket) AppendBinary(b []byte) ([]byte, error) {
	if err := p.check(); err != nil {
		return b, err
	}
	b = append(b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	for range macRepeats {
		b = append(b, p.Target[:]...)
	}
	return append(b, p.Password...), nil
}

// MarshalBinary returns the packet's wire form: 102 bytes, or 106 or 108 with
// a SecureOn password.
func (p MagicPacket) MarshalBinary() ([]byte, error) {
	return p.AppendBinary(make([]byte, 0, p.Len()))
}

// UnmarshalBinary is ParseMagicPacket into p.
func (p *MagicPacket) UnmarshalBinary(b []byte) error {
	v, err := ParseMagicPacket(b)
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// String names the target and whether a password is present, never the
// password itself.
func (p MagicPacket) String() string {
	if len(p.Password) > 0 {
		return fmt.Sprintf("magic packet for %s with a %d-byte SecureOn password", p.Target, len(p.Password))
	}
	return "magic packet for " + p.Target.String()
}

// ErrNoMagic is returned by ParseMagicPacket for a payload that holds no
// magic packet at all.
var ErrNoMagic = errors.New("no magic packet (6×0xFF followed by 16 copies of one MAC) in the payload")

// ParseMagicPacket finds a magic packet anywhere in payload: six 0xFF bytes
// followed by sixteen copies of one MAC. Whatever precedes it is ignored (a
// NIC scans the whole frame the same way); what follows must be nothing, or
// a SecureOn password of exactly 4 or 6 bytes. The first synchronisation
// stream followed by sixteen copies decides; anything else is an error. A
// target that is all zeroes or a multicast/broadcast address is rejected,
// since no NIC has one.
func ParseMagicPacket(payload []byte) (MagicPacket, error) {
	i := findMagic(payload)
	if i < 0 {
		return MagicPacket{}, ErrNoMagic
	}
	var p MagicPacket
	copy(p.Target[:], payload[i+syncLen:])
	if p.Target.IsZero() || p.Target[0]&1 == 1 {
		return MagicPacket{}, fmt.Errorf("magic packet for %s: not a NIC's MAC (all zeroes, multicast or broadcast)", p.Target)
	}
	rest := payload[i+MagicLen:]
	switch len(rest) {
	case 0:
	case 4, 6:
		p.Password = inventory.Secret(bytes.Clone(rest))
	default:
		return MagicPacket{}, fmt.Errorf("magic packet for %s is followed by %d bytes; a SecureOn password has 4 or 6", p.Target, len(rest))
	}
	return p, nil
}

// findMagic returns the offset of the first 6×0xFF followed by sixteen
// copies of one 6-byte value, or -1.
func findMagic(b []byte) int {
	for i := 0; i+MagicLen <= len(b); i++ {
		j := bytes.Index(b[i:len(b)-MagicLen+syncLen], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		if j < 0 {
			return -1
		}
		i += j
		mac := b[i+syncLen : i+syncLen+6]
		ok := true
		for k := 1; k < macRepeats; k++ {
			off := i + syncLen + 6*k
			if !bytes.Equal(b[off:off+6], mac) {
				ok = false
				break
			}
		}
		if ok {
			return i
		}
	}
	return -1
}
