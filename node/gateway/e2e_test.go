//go:build e2e

package gateway

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/protocol"
)

// Run `make e2e SCREENSHOT=1` (or go test -tags e2e ./node/gateway -run
// TestE2E -update-screenshot) to rewrite docs/gateway.png,
// gateway-phone.png, gateway-handoff.png and gateway-zh.png.
var updateScreenshot = flag.Bool("update-screenshot", os.Getenv("UPDATE_SCREENSHOT") != "", "write the page's screenshots to docs/")

// chromium is the browser: $CHROMIUM (the Makefile passes its
// CHROMIUM), else Debian's, which `make e2e` installs when missing.
func chromium() string {
	if c := os.Getenv("CHROMIUM"); c != "" {
		return c
	}
	return "/usr/bin/chromium"
}

// TestE2EPage drives the tracking page in headless Chromium against a
// small testnet: it tracks a booked parcel, sees the verified timeline,
// then sees a new scan arrive over SSE without a reload.
//
// long: one browser session whose steps follow each other.
func TestE2EPage(t *testing.T) {
	if _, err := os.Stat(chromium()); err != nil {
		t.Fatalf("%s: %v (make e2e installs it: apt-get install -y chromium; CHROMIUM=path picks another)", chromium(), err)
	}
	f := newFixture(t, 2, nil)
	post := f.net.Carriers[0]
	number := book(t, post, "", protocol.StatusInfoReceived, protocol.StatusPickedUp, protocol.StatusDepartedFacility, protocol.StatusInTransit)

	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium()), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.WindowSize(1000, 1000), chromedp.Flag("lang", "en-GB"))...)
	defer cancelAlloc()
	ctx, cancelCtx := chromedp.NewContext(alloc, chromedp.WithLogf(t.Logf))
	defer cancelCtx()
	// The first Run starts the browser, for the life of its context;
	// only what follows runs under a timeout.
	require.NoError(t, chromedp.Do(ctx))
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	// Track by keyboard: type the number as printed, press Enter.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.EmulateViewport(1000, 1000),
		chromedp.Navigate(f.url+"/"),
		chromedp.WaitVisible(chromedp.ID("n")),
		chromedp.Focus(chromedp.ID("n")),
		chromedp.SendKeys(chromedp.ID("n"), strings.ToLower(number)+kb.Enter),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="verified"]`)),
	))
	labels := run(t, ctx, chromedp.Evaluate[int](`document.getElementById("n").labels.length`))
	require.Equal(t, 1, labels, "the input has its label")
	require.Contains(t, run(t, ctx, chromedp.Text(chromedp.CSS(`[data-testid="verified"]`))), "Verified")
	statuses := run(t, ctx, chromedp.Evaluate[[]string](timelineJS))
	require.Equal(t, []string{"In transit", "Departed facility", "Picked up", "Shipment information received"}, statuses, "newest first, in words")

	// The page subscribed; a new scan at the carrier appears by itself.
	waitText(t, ctx, "#status", "Live updates are on")
	scan(t, post, number, "", 4, protocol.StatusOutForDelivery)
	require.NoError(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`.timeline li[data-status="out_for_delivery"]`))))
	require.Equal(t, "Out for delivery", run(t, ctx, chromedp.Text(chromedp.CSS(".current"))))
	require.Equal(t, "HUB-04, Glasgow, GB", run(t, ctx, chromedp.Text(chromedp.CSS(`.timeline li[data-status="out_for_delivery"] .where`))))
	statuses = run(t, ctx, chromedp.Evaluate[[]string](timelineJS))
	require.Len(t, statuses, 5, "the update was added once: %v", statuses)
	require.True(t, strings.HasPrefix(statuses[0], "Out for delivery"), statuses[0])
	require.Contains(t, statuses[0], "New")
	if *updateScreenshot {
		shoot(t, ctx, "gateway.png")
	}

	// At phone width a shared link (?n=) shows the same, with nothing
	// wider than the screen.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.EmulateViewport(375, 812, chromedp.EmulateScale(2), chromedp.EmulateMobile),
		chromedp.Navigate(f.url+"/?n="+number),
		chromedp.WaitVisible(chromedp.CSS(`.timeline li[data-status="out_for_delivery"]`)),
	))
	overflow := run(t, ctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth`))
	require.False(t, overflow, "the page fits 375px")
	if *updateScreenshot {
		shoot(t, ctx, "gateway-phone.png")
	}

	// A mistyped number gets a clear message, not a timeline.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.EmulateViewport(1000, 1000),
		chromedp.Navigate(f.url+"/"),
		chromedp.WaitVisible(chromedp.ID("n")),
		chromedp.SendKeys(chromedp.ID("n"), number[:10]+"0GB"+kb.Enter),
		chromedp.WaitVisible(chromedp.CSS(".problem")),
	))
	require.Contains(t, run(t, ctx, chromedp.Text(chromedp.CSS(".problem"))), "typos")

	// The carrier is shown by its registry name, not its code.
	postName := f.gw.carrierName(post.Code)
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(f.url+"/?n="+number),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="verified"]`)),
	))
	require.Equal(t, postName, run(t, ctx, chromedp.Text(chromedp.CSS(".meta .carrier"))))

	// A parcel handed over to a second carrier: one timeline over both
	// legs, each leg verified on its own and marked with its carrier,
	// and the second leg's new scans arrive live.
	dest := f.net.Carriers[1]
	destName := f.gw.carrierName(dest.Code)
	intl := book(t, post, "", protocol.StatusInfoReceived, protocol.StatusPickedUp)
	next, err := dest.NewNumber()
	require.NoError(t, err)
	handoff(t, post, intl, 2, dest.Code, next)
	scan(t, dest, next, "", 3, protocol.StatusArrivedAtFacility)
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(f.url+"/?n="+intl),
		chromedp.WaitVisible(chromedp.CSS(`.timeline li[data-carrier="`+dest.Code+`"]`)),
	))
	waitText(t, ctx, "#status", "Live updates are on")
	require.Equal(t, 2, run(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll('[data-testid="verified"]').length`)), "a badge per leg")
	require.Equal(t, []string{postName, "→ " + destName}, run(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll(".meta .carrier")].map(e => e.textContent)`)))
	require.Equal(t, []string{"Arrived at facility", "Departed facility", "Picked up", "Shipment information received"}, run(t, ctx, chromedp.Evaluate[[]string](timelineJS)))
	require.Equal(t, []string{destName, postName, postName, postName}, run(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll(".timeline li .leg")].map(e => e.textContent)`)))
	require.Contains(t, run(t, ctx, chromedp.Text(chromedp.CSS(`.timeline li[data-status="departed_facility"] .handoff`))), destName)
	scan(t, dest, next, "", 4, protocol.StatusDelivered)
	require.NoError(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`.timeline li[data-status="delivered"][data-carrier="`+dest.Code+`"]`))))
	require.Equal(t, "Delivered", run(t, ctx, chromedp.Text(chromedp.CSS(".current"))))
	if *updateScreenshot {
		shoot(t, ctx, "gateway-handoff.png")
	}

	// A parcel with no scans yet says so, in neutral words.
	fresh, err := post.NewNumber()
	require.NoError(t, err)
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(f.url+"/?n="+fresh),
		chromedp.WaitVisible(chromedp.CSS(`[data-testid="no-scans"]`)),
	))
	require.Equal(t, "No scans yet", run(t, ctx, chromedp.Text(chromedp.CSS(`[data-testid="no-scans"]`))))
	require.Zero(t, run(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll(".badge.bad").length`)), "no red badge")

	// Simplified Chinese for a reader whose browser asks for it.
	require.NoError(t, chromedp.Do(ctx,
		acceptLanguage("zh-CN,zh;q=0.9"),
		chromedp.Navigate(f.url+"/?n="+intl),
		chromedp.WaitVisible(chromedp.CSS(`.timeline li[data-status="delivered"]`)),
	))
	require.Equal(t, "查询包裹", run(t, ctx, chromedp.Text(chromedp.CSS("h1"))))
	require.Equal(t, "已签收", run(t, ctx, chromedp.Text(chromedp.CSS(".current"))))
	require.Contains(t, run(t, ctx, chromedp.Text(chromedp.CSS(`[data-testid="verified"]`))), "已验证")
	waitText(t, ctx, "#status", "实时更新已开启")
	if *updateScreenshot {
		shoot(t, ctx, "gateway-zh.png")
	}

	// Without JavaScript, ?n= still answers: the server's summary.
	require.NoError(t, chromedp.Do(ctx,
		acceptLanguage("en"),
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
			return err
		}),
		chromedp.Navigate(f.url+"/?n="+intl),
		chromedp.WaitVisible(chromedp.CSS(`article[data-summary="server"]`)),
	))
	require.Equal(t, "Delivered", run(t, ctx, chromedp.Text(chromedp.CSS(".current"))))
	require.Equal(t, 2, run(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll(".badge.ok").length`)))
	require.Contains(t, run(t, ctx, chromedp.Text(chromedp.CSS(".timeline"))), destName)
}

// acceptLanguage makes the page's requests ask for lang.
func acceptLanguage(lang string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Accept-Language": lang}})
		return err
	})
}

// timelineJS lists the statuses of the timeline as shown, newest first.
const timelineJS = `[...document.querySelectorAll(".timeline li .st")].map(e => e.textContent)`

// run runs a and fails t on error.
func run[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	require.NoError(t, err)
	return v
}

// waitText waits until sel's text contains want.
func waitText(t *testing.T, ctx context.Context, sel, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var got string
	for time.Now().Before(deadline) {
		got = run(t, ctx, chromedp.Text(chromedp.CSS(sel)))
		if strings.Contains(got, want) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s says %q, want %q", sel, got, want)
}

// shoot writes a PNG of the viewport to docs/name.
func shoot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png := run(t, ctx, chromedp.CaptureScreenshot())
	path := filepath.Join("..", "..", "docs", name)
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	require.NoError(t, os.WriteFile(path, png, 0o644))
	t.Logf("wrote %s", path)
}
