// Package testnet runs a whole OpenTrack network on loopback: a registry
// authority, carrier nodes, platform nodes, an optional rogue node, and a
// traffic simulator that checks as it goes that nothing is lost, forged
// or leaked.
//
// Tests build a network with New and break it on purpose with Kill,
// Restart, Partition and Heal; WaitFor polls a condition. The
// `opentrack testnet` command runs Run, which adds traffic, a scenario
// and a Report.
//
// Nodes run in this process by default. With Options.Procs every carrier
// is a separate `opentrack node` process, killed with SIGKILL and cut off
// with SIGSTOP. Platforms always run in this process: they are where the
// checks happen, through the same client package a platform uses.
package testnet
