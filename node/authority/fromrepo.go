package authority

import (
	"crypto/ed25519"
	"fmt"
	"os"

	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/protocol"
)

// CarrierFromRepo reads what the registry says about a carrier from that
// carrier's node repo: code, name, country, signing public key, node peer
// ID, addresses and number schemes. The addresses are those of the running
// node (node.json) when there is one, since only then are they concrete;
// otherwise the config's listen addresses. Addresses that no one could
// dial are left out with a warning.
func CarrierFromRepo(dir string) (CarrierInput, []string, error) {
	r, err := repo.Open(dir)
	if err != nil {
		return CarrierInput{}, nil, err
	}
	if r.Config.Role != repo.RoleCarrier || r.CarrierKey == nil {
		return CarrierInput{}, nil, fmt.Errorf("%w: %s is a %s repo", ErrNotCarrier, dir, r.Config.Role)
	}
	schemes, err := r.Config.Schemes()
	if err != nil {
		return CarrierInput{}, nil, err
	}
	var warnings []string
	addrs := r.Config.HostOptions().ListenAddrs
	if info, err := repo.ReadNodeInfo(dir); err == nil {
		addrs = info.Addrs
	} else {
		warnings = append(warnings, fmt.Sprintf("no running node in %s, so its config's listen addresses are used", dir))
	}
	node, w, err := NewNodeEntry(r.PeerID().String(), addrs)
	if err != nil {
		return CarrierInput{}, nil, fmt.Errorf("repo %s: %w", dir, err)
	}
	c := r.Config.Carrier
	in := CarrierInput{Code: c.Code, Name: c.Name, Country: c.Country, Key: r.CarrierKey.Public().(ed25519.PublicKey), Schemes: schemes,
		KeyMade: c.KeyCreated}
	if in.KeyMade.IsZero() {
		// A repo made before init recorded it: the key file was written
		// when the key was made.
		if fi, err := os.Stat(r.Path(c.KeyFile)); err == nil {
			in.KeyMade = fi.ModTime()
		}
	}
	if r.Config.Store.Backend == repo.BackendPostgres {
		// One of several replicas on a shared database: listed next to
		// the others.
		in.AddNodes = []protocol.NodeEntry{node}
	} else {
		in.Nodes = []protocol.NodeEntry{node}
	}
	return in, append(warnings, w...), nil
}

// AddFromRepo adds the carrier whose node repo is dir, as CarrierFromRepo
// reads it, and returns the carrier as it now stands with the warnings.
func (w *Workspace) AddFromRepo(dir string) (*DraftCarrier, []string, error) {
	in, warnings, err := CarrierFromRepo(dir)
	if err != nil {
		return nil, nil, err
	}
	c, err := w.AddCarrier(in)
	return c, warnings, err
}
