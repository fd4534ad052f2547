package node

import (
	"time"

	"github.com/opentrack/opentrack/node/policy"
	"github.com/opentrack/opentrack/node/repo"
	"github.com/opentrack/opentrack/protocol"
)

// IssueGrant completes g for the carrier of r and signs it with r's
// carrier key, valid from now for ttl (policy.IssueGrant). The grant
// counts once the carrier's node records it (admin Client.PutGrant).
func IssueGrant(r *repo.Repo, g protocol.Grant, ttl time.Duration) ([]byte, *protocol.Grant, error) {
	signer, err := r.Signer()
	if err != nil {
		return nil, nil, err
	}
	g.Carrier = r.Config.Carrier.Code
	return policy.IssueGrant(signer, g, time.Now(), ttl)
}
