package testnet

import "github.com/opentrack/opentrack/testnet/internal/proc"

// CommandFunc builds the command that runs `opentrack` with args.
type CommandFunc = proc.CommandFunc
