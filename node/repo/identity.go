package repo

import (
	"github.com/opentrack/opentrack/node/version"
	"github.com/opentrack/opentrack/protocol"
)

// Identity is what a repo says about its node, in the shape of `ipfs id`:
// what `opentrack id` prints.
type Identity struct {
	ID      string `json:"id"`
	Role    string `json:"role"`
	Carrier string `json:"carrier,omitempty"`
	// SigningKeyID is the carrier signing key's id, as the registry lists
	// it; empty on a platform.
	SigningKeyID string `json:"signing_key_id,omitempty"`
	// Addresses are the running node's (node.json), or without one the
	// configured listen addresses, which may have port 0.
	Addresses    []string `json:"addresses"`
	Running      bool     `json:"running"`
	AgentVersion string   `json:"agent_version"`
}

// Identity reads the repo's identity and, if its node runs, where it
// listens.
func (r *Repo) Identity() (*Identity, error) {
	id := &Identity{ID: r.PeerID().String(), Role: r.Config.Role, AgentVersion: version.Agent}
	if r.Config.Role == RoleCarrier {
		s, err := r.Signer()
		if err != nil {
			return nil, err
		}
		id.Carrier, id.SigningKeyID = r.Config.Carrier.Code, protocol.KeyIDString(s.Public())
	}
	if info, err := ReadNodeInfo(r.Dir); err == nil {
		id.Addresses, id.Running = info.Addrs, true
	} else {
		for _, a := range r.Config.HostOptions().ListenAddrs {
			id.Addresses = append(id.Addresses, a+"/p2p/"+id.ID)
		}
	}
	return id, nil
}
