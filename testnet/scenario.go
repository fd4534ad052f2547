package testnet

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"

	"github.com/opentrack/opentrack/node/admin"
	"github.com/opentrack/opentrack/node/platform"
	"github.com/opentrack/opentrack/protocol"
)

// rogueFirstAsk bounds each platform's first lookup at the rogue, which
// runs even after traffic time; rogueAsk bounds the later ones.
const (
	rogueFirstAsk = 30 * time.Second
	rogueAsk      = 5 * time.Second
)

// recoveryTimeout bounds how long the platforms may take to reach a
// carrier again after it comes back or a cut heals.
const recoveryTimeout = 30 * time.Second

// scenario runs o.Scenario against the traffic.
func (s *sim) scenario(ctx context.Context) {
	victim := s.net.Carriers[min(1, len(s.net.Carriers)-1)]
	switch s.o.Scenario {
	case ScenarioCrash:
		if s.at(ctx, 0.3) {
			s.crash(context.WithoutCancel(ctx), victim)
		}
	case ScenarioPartition:
		if s.at(ctx, 0.3) {
			s.partition(ctx, victim)
		}
	case ScenarioRogue:
		s.rogue(ctx, victim)
	case ScenarioCutoff:
		if s.at(ctx, 0.4) {
			s.cutoff()
		}
	}
}

// at waits until frac of the run has passed; false if ctx ended first.
func (s *sim) at(ctx context.Context, frac float64) bool {
	select {
	case <-time.After(time.Until(s.start.Add(time.Duration(frac * float64(s.o.Duration))))):
		return true
	case <-ctx.Done():
		return false
	}
}

// crash kills victim, keeps it down for a tenth of the run (1 to 5 s),
// restarts it from its repo and waits until every platform has caught
// up. bg outlives the traffic: recovery must happen even when traffic
// time is up.
func (s *sim) crash(bg context.Context, victim *Carrier) {
	d := s.disrupt(victim, -1)
	d.PIDBefore = victim.PID()
	how := "closed in process"
	if s.o.Procs {
		how = fmt.Sprintf("kill -9 of pid %d", d.PIDBefore)
	}
	if err := s.net.Kill(victim); err != nil {
		s.scenarioFailure("kill %s: %v", victim.Code, err)
	}
	down := time.Now()
	s.note("carrier %s killed (%s)", victim.Code, how)
	s.probe(d, s.net.Platforms[0], victim)
	time.Sleep(time.Until(down.Add(min(max(s.o.Duration/10, time.Second), 5*time.Second))))
	if err := s.restart(bg, victim); err != nil {
		s.scenarioFailure("restart %s: %v", victim.Code, err)
		return
	}
	d.PIDAfter = victim.PID()
	if s.o.Procs && (d.PIDAfter == 0 || d.PIDAfter == d.PIDBefore) {
		s.scenarioFailure("crash: %s runs as pid %d after the restart, pid %d before the kill", victim.Code, d.PIDAfter, d.PIDBefore)
	}
	s.note("carrier %s restarted from its repo%s", victim.Code, pidNote(d.PIDAfter))
	s.waitRecovered(d, victim, s.livePlatforms())
}

// partition cuts the first platform off from victim until 0.6 of the
// run, then heals the cut and waits until that platform has caught up.
func (s *sim) partition(ctx context.Context, victim *Carrier) {
	p := s.net.Platforms[0]
	cut := 0
	if !s.o.Procs {
		cut = 1 // links refused between p and victim alone
	}
	d := s.disrupt(victim, cut-1)
	d.Platform = p.Name
	if err := s.net.Partition(p, victim); err != nil {
		s.scenarioFailure("partition: %v", err)
		return
	}
	how := "links refused"
	if s.o.Procs {
		how = "carrier process stopped, SIGSTOP"
	}
	s.note("%s cut off from carrier %s (%s)", p.Name, victim.Code, how)
	s.probe(d, p, victim)
	s.at(ctx, 0.6)
	if err := s.net.Heal(p, victim); err != nil {
		s.scenarioFailure("heal: %v", err)
	}
	s.note("cut healed; %s catches up from its cursor", p.Name)
	s.waitRecovered(d, victim, []int{0})
}

// cutoff closes the last platform; the others go on.
func (s *sim) cutoff() {
	pi := len(s.net.Platforms) - 1
	p := s.net.Platforms[pi]
	s.stopPlatformWatchers(pi)
	if err := p.Close(); err != nil {
		s.scenarioFailure("close %s: %v", p.Name, err)
	}
	s.note("%s disappeared; the other platforms go on tracking every carrier directly", p.Name)
}

func pidNote(pid int) string {
	if pid == 0 {
		return ""
	}
	return fmt.Sprintf(" (pid %d)", pid)
}

// restart starts c again, unless a planted fault says it fails.
func (s *sim) restart(ctx context.Context, c *Carrier) error {
	if s.planted(FaultRestart) {
		return errors.New("planted fault: restart refused")
	}
	return s.net.Restart(ctx, c)
}

// disrupt begins a disruption of c, for platform pi alone or, with pi
// -1, for everyone including c's own ingest: failures met with c are
// expected from now until waitRecovered, and counted.
func (s *sim) disrupt(c *Carrier, pi int) *Disruption {
	d := &Disruption{Carrier: c.Code, RecoveryS: -1}
	s.victim.Store(c)
	s.cutOff.Store(int64(pi) + 1)
	s.disrupted.Store(true)
	s.mu.Lock()
	s.disruption = d
	s.mu.Unlock()
	return d
}

// probe has p look up one of c's parcels while c is down or cut off.
// An answer from c means the disruption did not happen, and the run
// fails: a scenario must show its effect, not only its timeline.
func (s *sim) probe(d *Disruption, p *Platform, c *Carrier) {
	number := ""
	if ns := s.led.numbersOf(c.Code, 1); len(ns) > 0 {
		number = ns[0]
	} else if n, err := c.NewNumber(); err == nil {
		number = n // not ingested: a reachable carrier says not_found
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	views, err := p.Track(ctx, nil, number)
	switch {
	case err != nil:
		d.Probe = protocol.CodeUnavailable
	case len(views) != 1:
		d.Probe = fmt.Sprintf("%d answers", len(views))
	case views[0].Verified:
		d.Probe = "verified"
	default:
		d.Probe = views[0].Error
	}
	if d.Probe != protocol.CodeUnavailable {
		s.scenarioFailure("%s looked up %s at %s during the disruption and got %q, not %q: the disruption did not happen",
			p.Name, number, c.Code, d.Probe, protocol.CodeUnavailable)
		return
	}
	s.note("%s cannot reach %s: %s", p.Name, c.Code, d.Probe)
}

// waitRecovered waits until every live platform gets a verified answer
// from c again, notes how long that took, and ends the disruption: from
// then on a failed lookup is an error. The events of c that platforms
// (the ones disrupted) had not received when it ended are the backlog;
// the drain shows they arrive.
func (s *sim) waitRecovered(d *Disruption, c *Carrier, platforms []int) {
	numbers := s.led.numbersOf(c.Code, 1)
	began := time.Now()
	d.Backlog = s.led.backlog(c.Code, platforms)
	err := s.net.WaitFor(recoveryTimeout, func() bool {
		if len(numbers) == 0 {
			return true
		}
		for _, p := range s.net.Platforms {
			if p.Closed() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			views, err := p.Track(ctx, nil, numbers[0])
			cancel()
			if err != nil || len(views) != 1 || !views[0].Verified {
				return false
			}
		}
		return true
	})
	if err != nil {
		s.scenarioFailure("platforms did not reach %s again within %s", c.Code, recoveryTimeout)
	} else {
		d.RecoveryS = time.Since(began).Seconds()
		s.note("every platform reaches %s again (%.1fs); %d of its events still on the way to them", c.Code, d.RecoveryS, d.Backlog)
	}
	d.FailuresSeen = s.failuresSeen.Load()
	s.disrupted.Store(false)
}

// AddRogue starts a node that claims to be victim's: the same carrier
// code and number scheme, its own keys, and no place in the registry.
func (n *Net) AddRogue(ctx context.Context, victim *Carrier) (*Carrier, error) {
	c, err := n.createCarrier(victim.Code, victim.Scheme, false)
	if err != nil {
		return nil, err
	}
	if err := c.start(ctx); err != nil {
		return nil, err
	}
	n.rogues = append(n.rogues, c)
	return c, nil
}

// rogue runs the rogue scenario: a node impersonating victim serves
// "delivered" for victim's real parcels, a forged registry names it as
// victim's node, and platforms are pointed at it directly. Each platform
// must reject every record and the registry.
func (s *sim) rogue(ctx context.Context, victim *Carrier) {
	// Let some of victim's parcels be booked and scanned first.
	select {
	case <-time.After(min(s.o.Duration/5, 2*time.Second)):
	case <-ctx.Done():
		return
	}
	// Once started, the rogue gets one full round even when traffic time
	// is up, so that a slow machine delays the verdict, not voids it.
	bg := context.WithoutCancel(ctx)
	rg, err := s.net.AddRogue(bg, victim)
	if err != nil {
		s.fail("rogue: %v", err)
		return
	}
	s.note("rogue node %s claims to be carrier %s, with a key of its own", rg.ID, victim.Code)
	s.forgedRegistry(victim, rg)

	numbers := s.led.numbersOf(victim.Code, 20)
	if len(numbers) == 0 {
		s.fail("rogue: %s has no parcels to forge", victim.Code)
		return
	}
	if !s.forge(bg, rg, numbers) {
		return
	}
	s.note("rogue recorded \"delivered\" for %d of %s's parcels", len(numbers), victim.Code)
	var watchers []*platform.Watcher
	var readers sync.WaitGroup
	// The readers count into the report: they end before rogue returns.
	defer func() {
		for _, w := range watchers {
			_ = w.Close()
		}
		readers.Wait()
	}()
	for pi, p := range s.net.Platforms {
		p.Node.Host.Peerstore().AddAddrs(rg.ID, rg.AddrInfo().Addrs, peerstore.PermanentAddrTTL)
		// A platform fooled into subscribing at the rogue still verifies
		// against the registry.
		w, err := p.Platform.Client().Watch(ctx, platform.WatchOptions{Carrier: victim.Code, Peers: []peer.ID{rg.ID}, Keys: p.Node.Trust, Numbers: numbers, MaxBackoff: 2 * time.Second})
		if err != nil {
			s.fail("rogue watch: %v", err)
			continue
		}
		watchers = append(watchers, w)
		readers.Go(func() {
			for u := range w.Updates() {
				if u.Verified {
					s.forgeriesAccepted.Add(1)
					s.fail("%s accepted a forged watch update of %s from the rogue", s.net.Platforms[pi].Name, u.Number)
				} else {
					s.forgeryRejected(u.Error)
				}
			}
		})
	}
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	askCtx, timeout := bg, rogueFirstAsk
	for {
		for pi, p := range s.net.Platforms {
			if !p.Closed() {
				s.askRogue(askCtx, pi, rg, numbers, timeout)
			}
		}
		askCtx, timeout = ctx, rogueAsk
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !s.forge(ctx, rg, numbers[:1+len(numbers)/4]) {
			return
		}
	}
}

// forge has the rogue record a "delivered" scan for numbers.
func (s *sim) forge(ctx context.Context, rg *Carrier, numbers []string) bool {
	if s.planted(FaultSilentRogue) {
		return true
	}
	evs := make([]admin.Event, len(numbers))
	now := time.Now().UTC().Format(time.RFC3339Nano)
	for i, n := range numbers {
		id := make([]byte, 8)
		_, _ = rand.Read(id)
		evs[i] = admin.Event{ID: fmt.Sprintf("forged-%x", id), Number: n, Time: now, Status: string(protocol.StatusDelivered),
			Reason: "to_safe_place", Location: protocol.Location{Country: "ZZ", City: "Nowhere"}}
	}
	if _, err := rg.Ingest(ctx, evs); err != nil {
		if ctx.Err() == nil {
			s.fail("rogue ingest: %v", err)
		}
		return false
	}
	return true
}

// askRogue has platform pi look numbers up at the rogue directly, as if
// the rogue had poisoned its peer routing, and counts the rejections.
func (s *sim) askRogue(ctx context.Context, pi int, rg *Carrier, numbers []string, timeout time.Duration) {
	p := s.net.Platforms[pi]
	qctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	views, err := p.Platform.Client().TrackPeer(qctx, rg.ID, p.Node.Trust, numbers, nil)
	if err != nil {
		// The rogue is the adversary: a platform that cannot reach it
		// has lost nothing. forged_records_rejected > 0 shows the rogue
		// was reached and refused.
		s.rogueUnreachable.Add(1)
		return
	}
	for _, v := range views {
		if v.Verified {
			s.forgeriesAccepted.Add(1)
			s.fail("%s accepted the rogue's record of %s", p.Name, v.Number)
			continue
		}
		s.forgeryRejected(v.Error)
	}
}

// forgeryCodes are the codes a platform rejects the rogue's records
// with: its key is not the carrier's, or its chain does not hold. Any
// other answer (not_found, unavailable, ...) is no rejected forgery.
var forgeryCodes = map[string]bool{
	protocol.ErrUnknownKey.Code: true, protocol.ErrUntrustedIssuer.Code: true, protocol.CodeWrongCarrier: true,
	protocol.ErrBrokenChain.Code: true, protocol.ErrHeadMismatch.Code: true, protocol.ErrCIDMismatch.Code: true,
}

// forgeryRejected counts a rejection of the rogue's record with code,
// when code is one a forgery earns.
func (s *sim) forgeryRejected(code string) {
	if forgeryCodes[code] {
		s.forgedRecords.Add(1)
		s.forgeriesRejected.Add(1)
	}
}

// forgedRegistry offers each platform a registry that lists the rogue as
// victim's node, signed by a key no platform trusts.
func (s *sim) forgedRegistry(victim, rg *Carrier) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		s.fail("rogue: %v", err)
		return
	}
	signer, err := protocol.NewSigner(priv)
	if err != nil {
		s.fail("rogue: %v", err)
		return
	}
	now := time.Now()
	e := rg.entry(now)
	e.Code = victim.Code
	forged, err := protocol.SignRegistry(signer, &protocol.Registry{Seq: 1 << 20, Issued: now.UnixMilli(),
		NotBefore: now.Add(-time.Hour).UnixMilli(), NotAfter: now.Add(time.Hour).UnixMilli(), Carriers: []protocol.CarrierEntry{e}})
	if err != nil {
		s.fail("rogue: %v", err)
		return
	}
	for _, p := range s.net.Platforms {
		if p.Closed() {
			continue
		}
		switch ok, err := p.Node.Trust.Install(forged); {
		case err == nil || ok:
			s.forgeriesAccepted.Add(1)
			s.fail("%s installed a registry its anchors did not sign", p.Name)
		case errors.Is(err, protocol.ErrUntrustedIssuer):
			s.forgedRegistries.Add(1)
			s.forgeriesRejected.Add(1)
		default:
			s.fail("%s refused the forged registry for another reason than its issuer: %v", p.Name, err)
		}
	}
	s.note("forged registry naming the rogue as %s offered to every platform", victim.Code)
}
