// Package policy is a carrier node's abuse and access policy (DESIGN §5):
// per-peer token buckets for track and watch, a stricter per-peer budget
// for not_found answers that stops enumeration of tracking numbers (also
// kept per source address and for the whole node, as peer IDs cost
// nothing, with a larger budget of their own for named platforms), allow
// and deny lists by peer ID, and who may see public events at all.
//
// A Policy implements service.Policy; node.Start builds one from the
// [policy] section of config.toml and hands it to the track service.
//
// Grants live here too: IssueGrant signs one, VerifyGrant judges one a
// peer presents, and AppendAudit records what was disclosed or refused.
// The services call them from their stream handlers; node/admin records
// and revokes grants and reads the audit log.
package policy
