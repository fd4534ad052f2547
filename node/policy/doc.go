// Package policy is a carrier node's abuse and access policy (DESIGN §5):
// per-peer token buckets for track and watch, a stricter per-peer budget
// for not_found answers that stops enumeration of tracking numbers (also
// kept per source address and for the whole node, as peer IDs cost
// nothing, with a larger budget of their own for named platforms), allow
// and deny lists by peer ID, and who may see public events at all.
//
// A Policy implements service.Policy; node.Start builds one from the
// [policy] section of config.toml and hands it to the track service.
// Grants and audiences are judged by the services, not here.
package policy
