package protocol_test

import (
	"bufio"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/opentrack/opentrack/protocol"
)

// statusSpecPath is Appendix A, relative to this package's directory.
const statusSpecPath = "../spec/status.md"

func TestStatusValid(t *testing.T) {
	// The wire values, spelled out so that renaming a constant's value fails here.
	tests := []struct {
		status protocol.Status
		wire   string
	}{
		{protocol.StatusInfoReceived, "info_received"},
		{protocol.StatusPickedUp, "picked_up"},
		{protocol.StatusInTransit, "in_transit"},
		{protocol.StatusArrivedAtFacility, "arrived_at_facility"},
		{protocol.StatusDepartedFacility, "departed_facility"},
		{protocol.StatusCustomsHold, "customs_hold"},
		{protocol.StatusCustomsCleared, "customs_cleared"},
		{protocol.StatusOutForDelivery, "out_for_delivery"},
		{protocol.StatusDeliveryAttempted, "delivery_attempted"},
		{protocol.StatusAvailableForPickup, "available_for_pickup"},
		{protocol.StatusDelivered, "delivered"},
		{protocol.StatusReturnedToSender, "returned_to_sender"},
		{protocol.StatusException, "exception"},
		{protocol.StatusCancelled, "cancelled"},
	}
	want := make([]protocol.Status, 0, len(tests))
	for _, tt := range tests {
		t.Run(tt.wire, func(t *testing.T) {
			require.Equal(t, tt.wire, string(tt.status))
			require.True(t, tt.status.Valid())
			require.True(t, protocol.ValidReason(tt.status, ""), "empty reason must be valid")
		})
		want = append(want, tt.status)
	}
	require.Equal(t, want, protocol.Statuses(), "Statuses must list every status once, in lifecycle order")
}

func TestStatusUnknownRejected(t *testing.T) {
	tests := []struct {
		name   string
		status protocol.Status
	}{
		{"empty", ""},
		{"capitalized", "Delivered"},
		{"upper case", "DELIVERED"},
		{"trailing space", "delivered "},
		{"hyphenated", "in-transit"},
		{"foreign vocabulary", "InTransit"},
		{"aggregator state", "expired"},
		{"reason as status", "recipient_absent"},
		{"nul byte", "delivered\x00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.False(t, tt.status.Valid())
			require.False(t, tt.status.Terminal())
			require.Nil(t, protocol.Reasons(tt.status))
			require.False(t, protocol.ValidReason(tt.status, ""), "no reason can make an unknown status valid")
			require.False(t, protocol.ValidReason(tt.status, "refused"))
		})
	}
}

func TestStatusTerminal(t *testing.T) {
	tests := []struct {
		status   protocol.Status
		terminal bool
	}{
		{protocol.StatusInfoReceived, false},
		{protocol.StatusPickedUp, false},
		{protocol.StatusInTransit, false},
		{protocol.StatusArrivedAtFacility, false},
		{protocol.StatusDepartedFacility, false},
		{protocol.StatusCustomsHold, false},
		{protocol.StatusCustomsCleared, false},
		{protocol.StatusOutForDelivery, false},
		{protocol.StatusDeliveryAttempted, false},
		{protocol.StatusAvailableForPickup, false},
		{protocol.StatusDelivered, true},
		{protocol.StatusReturnedToSender, true},
		{protocol.StatusException, false},
		{protocol.StatusCancelled, true},
	}
	require.Len(t, tests, len(protocol.Statuses()), "every status needs a row")
	for _, tt := range tests {
		t.Run(string(tt.status), func(t *testing.T) {
			require.Equal(t, tt.terminal, tt.status.Terminal())
		})
	}
}

func TestReasonValidOnlyForItsStatus(t *testing.T) {
	statuses := protocol.Statuses()
	var all []string
	for _, s := range statuses {
		all = append(all, protocol.Reasons(s)...)
	}
	slices.Sort(all)
	all = slices.Compact(all)
	for _, s := range statuses {
		t.Run(string(s), func(t *testing.T) {
			own := protocol.Reasons(s)
			for _, r := range all {
				require.Equal(t, slices.Contains(own, r), protocol.ValidReason(s, r), "reason %q", r)
			}
		})
	}
}

func TestReasonUnknownRejected(t *testing.T) {
	tests := []struct {
		name   string
		status protocol.Status
		reason string
	}{
		{"undefined code", protocol.StatusDelivered, "teleported"},
		{"upper case", protocol.StatusDeliveryAttempted, "REFUSED"},
		{"trailing space", protocol.StatusDeliveryAttempted, "refused "},
		{"status as reason", protocol.StatusException, "exception"},
		{"other status's code", protocol.StatusDelivered, "recipient_absent"},
		{"space", protocol.StatusInTransit, " "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.False(t, protocol.ValidReason(tt.status, tt.reason))
		})
	}
}

func TestReasonCodeSyntax(t *testing.T) {
	for _, s := range protocol.Statuses() {
		t.Run(string(s), func(t *testing.T) {
			requireCode(t, string(s))
			reasons := protocol.Reasons(s)
			if len(reasons) > 0 {
				require.GreaterOrEqual(t, len(reasons), 2, "a single reason adds nothing to its status")
				require.LessOrEqual(t, len(reasons), 8, "keep the set small enough to map onto")
			}
			seen := map[string]bool{}
			for _, r := range reasons {
				requireCode(t, r)
				require.False(t, seen[r], "reason %q listed twice", r)
				seen[r] = true
			}
		})
	}
}

// requireCode checks the A.1 syntax: 1 to MaxReasonLen bytes of [a-z0-9_].
func requireCode(t *testing.T, code string) {
	t.Helper()
	require.NotEmpty(t, code)
	require.LessOrEqual(t, len(code), protocol.MaxReasonLen, "code %q too long", code)
	for i := 0; i < len(code); i++ {
		c := code[i]
		require.True(t, c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_', "code %q has byte %q", code, c)
	}
}

func TestStatusTablesAreCopies(t *testing.T) {
	s := protocol.Statuses()
	s[0] = "mutated"
	require.Equal(t, protocol.StatusInfoReceived, protocol.Statuses()[0])

	r := protocol.Reasons(protocol.StatusDelivered)
	r[0] = "mutated"
	require.False(t, protocol.ValidReason(protocol.StatusDelivered, "mutated"))

	m := protocol.Mappings()
	m[1].UPU[0] = "mutated"
	m[1].AfterShip = "mutated"
	require.Equal(t, []string{"EMA"}, protocol.Mappings()[1].UPU)
	require.Equal(t, "InTransit", protocol.Mappings()[1].AfterShip)
}

func TestMappingCoversEveryStatusOnce(t *testing.T) {
	afterShip := []string{"InfoReceived", "InTransit", "OutForDelivery", "AttemptFail", "Delivered", "AvailableForPickup", "Exception", "Expired", "Pending"}
	easyPost := []string{"pre_transit", "in_transit", "out_for_delivery", "delivered", "available_for_pickup", "return_to_sender", "failure", "cancelled", "error", "unknown"}
	upuCode := regexp.MustCompile(`^E[A-Z]{2}$`)

	mappings := protocol.Mappings()
	var got []protocol.Status
	upuOwner := map[string]protocol.Status{}
	for _, m := range mappings {
		t.Run(string(m.Status), func(t *testing.T) {
			require.Contains(t, afterShip, m.AfterShip)
			require.Contains(t, easyPost, m.EasyPost)
			for _, c := range m.UPU {
				require.Regexp(t, upuCode, c)
				owner, dup := upuOwner[c]
				require.False(t, dup, "UPU %s mapped from both %s and %s", c, owner, m.Status)
				upuOwner[c] = m.Status
			}
		})
		got = append(got, m.Status)
	}
	require.Equal(t, protocol.Statuses(), got, "one mapping per status, in lifecycle order")
}

// statusSpec is what Appendix A states, parsed from its markdown.
type statusSpec struct {
	codeMaxLen int
	statuses   []protocol.Status
	reasons    map[protocol.Status][]string
	terminal   []protocol.Status
	mappings   []protocol.StatusMapping
}

var (
	backticked  = regexp.MustCompile("`([^`]+)`")
	codeLenRule = regexp.MustCompile(`ASCII strings of 1 to (\d+) bytes`)
)

// parseStatusSpec reads the spec's own layout: "## A.n" sections, one
// "### A.2.n `status`" heading per status with "- `reason`: ..." bullets,
// a "Terminal statuses:" line, and the A.5 table.
func parseStatusSpec(t *testing.T, path string) statusSpec {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })

	spec := statusSpec{reasons: map[protocol.Status][]string{}}
	var section string
	var current protocol.Status
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "## "); ok {
			section, _, _ = strings.Cut(rest, " ")
			continue
		}
		switch section {
		case "A.1":
			if m := codeLenRule.FindStringSubmatch(line); m != nil {
				spec.codeMaxLen, err = strconv.Atoi(m[1])
				require.NoError(t, err)
			}
		case "A.2":
			switch {
			case strings.HasPrefix(line, "### "):
				m := backticked.FindStringSubmatch(line)
				require.NotNil(t, m, "status heading without a `code`: %q", line)
				current = protocol.Status(m[1])
				spec.statuses = append(spec.statuses, current)
			case strings.HasPrefix(line, "- `"):
				require.NotEmpty(t, current, "reason before any status: %q", line)
				spec.reasons[current] = append(spec.reasons[current], backticked.FindStringSubmatch(line)[1])
			}
		case "A.4":
			if strings.HasPrefix(line, "Terminal statuses:") {
				for _, m := range backticked.FindAllStringSubmatch(line, -1) {
					spec.terminal = append(spec.terminal, protocol.Status(m[1]))
				}
			}
		case "A.5":
			if strings.HasPrefix(line, "| `") {
				spec.mappings = append(spec.mappings, parseMappingRow(t, line))
			}
		}
	}
	require.NoError(t, sc.Err())
	return spec
}

// parseMappingRow reads "| `status` | EMA, EMB | Tag | status |", where "—" is an empty UPU cell.
func parseMappingRow(t *testing.T, line string) protocol.StatusMapping {
	t.Helper()
	cells := strings.Split(strings.Trim(line, "|"), "|")
	require.Len(t, cells, 4, "mapping row %q", line)
	for i := range cells {
		cells[i] = strings.TrimSpace(cells[i])
	}
	m := protocol.StatusMapping{
		Status:    protocol.Status(strings.Trim(cells[0], "`")),
		AfterShip: cells[2],
		EasyPost:  cells[3],
	}
	if cells[1] != "—" {
		m.UPU = strings.Split(cells[1], ", ")
	}
	return m
}

func TestStatusSpecMatchesCode(t *testing.T) {
	spec := parseStatusSpec(t, statusSpecPath)

	require.Equal(t, protocol.MaxReasonLen, spec.codeMaxLen, "A.1 code length")
	require.Equal(t, protocol.Statuses(), spec.statuses, "A.2 statuses and their order")
	for _, s := range protocol.Statuses() {
		want := protocol.Reasons(s)
		if len(want) == 0 {
			want = nil
		}
		require.Equal(t, want, spec.reasons[s], "A.2 reason codes of %s", s)
	}

	var terminal []protocol.Status
	for _, s := range protocol.Statuses() {
		if s.Terminal() {
			terminal = append(terminal, s)
		}
	}
	require.Equal(t, terminal, spec.terminal, "A.4 terminal statuses")

	want := protocol.Mappings()
	for i := range want {
		if len(want[i].UPU) == 0 {
			want[i].UPU = nil
		}
	}
	require.Equal(t, want, spec.mappings, "A.5 mapping table")
}
