package bench

import (
	"encoding/json"
	"github.com/roomcast/roomcast/cmd/roomcast/internal/sioclient"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/roomcast/roomcast/proto"
)

func TestParseOptions(t *testing.T) {
	o, err := parseOptions([]string{"fanout", "-sockets", "15000", "-rooms", "50", "-rate", "200", "-ramp", "-compare"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, modeFanout, o.Mode)
	require.Equal(t, 15000, o.Sockets)
	require.Equal(t, 50, o.Rooms)
	require.Equal(t, 200.0, o.Rate)
	require.True(t, o.Ramp)
	require.True(t, o.Compare)
	require.Equal(t, targetRoomcast, o.Target, "default target")
	require.Equal(t, 100*time.Millisecond, o.MaxP99, "default p99 bound of a ramp step")
	require.Equal(t, 0.999, o.MinDelivery)
	require.True(t, o.Authz)

	_, err = parseOptions([]string{"fanout", "-url", "http://localhost:3000", "-secret", "s", "-nats", "nats://[::1]:4222"}, io.Discard)
	require.NoError(t, err)
	o, err = parseOptions([]string{"idle", "-target", "peer", "-url", "http://127.0.0.1:3000", "-secret", "s", "-server-pid", "42"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, targetPeer, o.Target, `"peer" is the Socket.IO peer's old name`)
	require.Equal(t, 42, o.ServerPID)

	o, err = parseOptions([]string{"fanout", "-compare"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, []string{targetPeer, targetCentrifugo}, o.Peers, "-compare runs both peers by default")
	require.False(t, o.Pin)
	o, err = parseOptions([]string{"storm", "-compare", "-peers", "centrifugo,peer,centrifugo", "-pin"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, []string{targetCentrifugo, targetPeer}, o.Peers, "in the order given, once each")
	require.True(t, o.Pin)
}

func TestParseOptionsRefusals(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "give a mode"},
		{[]string{"-sockets", "3"}, "give a mode"},
		{[]string{"flood"}, "unknown mode"},
		{[]string{"fanout", "-target", "ably"}, "want roomcast, socketio or centrifugo"},
		{[]string{"fanout", "-compare", "-peers", "socketio,ably"}, `"ably" is not a peer`},
		{[]string{"fanout", "-compare", "-peers", ","}, "at least one peer"},
		{[]string{"fanout", "-pin", "-url", "http://127.0.0.1:1", "-secret", "s", "-nats", "nats://127.0.0.1:2"}, "-pin starts the server"},
		{[]string{"fanout", "-target", "centrifugo", "-url", "http://127.0.0.1:1", "-secret", "s"}, "HTTP API key"},
		{[]string{"fairness", "-target", "centrifugo"}, "keep none"},
		{[]string{"fanout", "-sockets", "0"}, "-sockets 0"},
		{[]string{"fanout", "-rooms", "0"}, "-rooms 0"},
		{[]string{"fanout", "-rate", "0"}, "-rate 0"},
		{[]string{"fanout", "-ramp", "-ramp-factor", "1"}, "-ramp-factor"},
		{[]string{"fanout", "-min-delivery", "2"}, "-min-delivery"},
		{[]string{"fanout", "-compare", "-url", "http://127.0.0.1:1"}, "drop -url"},
		{[]string{"fanout", "-url", "http://127.0.0.1:1"}, "-secret"},
		{[]string{"fanout", "-url", "http://127.0.0.1:1", "-secret", "s"}, "-nats"},
		{[]string{"fanout", "-target", "peer", "-url", "ws://x", "-secret", "s"}, "want http://"},
		{[]string{"resync", "-target", "peer"}, "keep none"},
		{[]string{"fanout", "-target", "peer", "-url", "http://10.0.0.5:3000", "-secret", "s"}, "on this machine"},
		{[]string{"fanout", "-url", "http://127.0.0.1:3000", "-secret", "s", "-nats", "nats://example.com:4222"}, "on this machine"},
		{[]string{"fanout", "-source-ips", "300"}, "-source-ips"},
		{[]string{"storm", "-recovery", "maybe"}, "want on, off or both"},
		{[]string{"storm", "-recovery", "off", "-target", "socketio"}, "-recovery is roomcast's"},
		{[]string{"storm", "-recovery", "both", "-compare"}, "-recovery is roomcast's"},
		{[]string{"idle", "-recovery", "off", "-url", "http://127.0.0.1:1", "-secret", "s", "-nats", "nats://127.0.0.1:2"}, "drop -url"},
		{[]string{"storm", "-cut-broadcasts", "-1"}, "-cut-broadcasts -1"},
		{[]string{"fanout", "-cut-broadcasts", "3"}, "storm against roomcast only"},
		{[]string{"storm", "-cut-broadcasts", "3", "-target", "centrifugo"}, "storm against roomcast only"},
		{[]string{"fanout", "extra"}, "unexpected argument"},
		{[]string{"fanout", "-nope"}, "not defined"},
	} {
		_, err := parseOptions(tc.args, io.Discard)
		require.ErrorContains(t, err, tc.want, "args %q", tc.args)
	}
}

// TestRecoveryOptions: -recovery both is a run with recovery on and one
// with it off, told apart by their columns; one setting alone is a note.
// The started server gets ROOMCAST_RECOVERY_TTL=0 for off, and for on the
// server's default whatever the environment says.
func TestRecoveryOptions(t *testing.T) {
	o, err := parseOptions([]string{"storm", "-recovery", "both", "-cut-broadcasts", "3"}, io.Discard)
	require.NoError(t, err)
	require.Equal(t, recoveryBoth, o.Recovery)
	require.Equal(t, 3, o.CutBroadcasts)

	env := []string{"A=1", "ROOMCAST_RECOVERY_TTL=0", "B=2"}
	require.Equal(t, []string{"A=1", "B=2"}, recoveryEnv(slices.Clone(env), recoveryOn))
	require.Equal(t, append(slices.Clone(env), "ROOMCAST_RECOVERY_TTL=0"), recoveryEnv(slices.Clone(env), recoveryOff))
	require.Equal(t, env, recoveryEnv(slices.Clone(env), ""))

	r := result{Target: targetRoomcast}
	require.Equal(t, "recovery-off", labelRecovery(r, options{Recovery: recoveryOff}, true).Target)
	one := labelRecovery(r, options{Recovery: recoveryOff}, false)
	require.Equal(t, targetRoomcast, one.Target)
	require.Equal(t, []string{"connection state recovery off"}, one.Notes)
	require.Equal(t, r, labelRecovery(r, options{}, false))
	require.Equal(t, "storm, connection state recovery off", options{Mode: modeStorm, Recovery: recoveryOff}.heading())
}

func TestParseBroadcast(t *testing.T) {
	env := `{"event":"update-task","id":"t1","updatedAt":1700000000000,"diff":{"benchTs":1700000000123456789,"benchStep":3}}`
	msg := []byte(`42["broadcast",{"destination":"board-b1-tasks","data":` + env + `,"seq":1234,"prevSeq":1200}]`)
	f, ok := parseBroadcast(msg)
	require.True(t, ok)
	require.True(t, f.hasTS)
	require.Equal(t, int64(1700000000123456789), f.ts)
	require.Equal(t, int64(3), f.step)
	require.True(t, f.hasSeqs)
	require.Equal(t, int64(1234), f.seq)
	require.Equal(t, int64(1200), f.prevSeq)

	// field order does not matter; a missing timestamp is reported
	f, ok = parseBroadcast([]byte(`42["broadcast",{"prevSeq":0,"seq":7,"data":{"event":"x"},"destination":"user-u1"}]`))
	require.True(t, ok)
	require.False(t, f.hasTS)
	require.Equal(t, int64(7), f.seq)
	require.Equal(t, int64(0), f.prevSeq)

	// connection state recovery's offset after the payload changes nothing
	f, ok = parseBroadcast(append(msg[:len(msg)-1:len(msg)-1], `,"1234"]`...))
	require.True(t, ok)
	require.Equal(t, int64(1700000000123456789), f.ts)
	require.Equal(t, int64(3), f.step)
	require.Equal(t, int64(1234), f.seq)
	require.Equal(t, int64(1200), f.prevSeq)

	for _, other := range []string{`431[{"ok":true}]`, `42["other",{}]`, `2`, ``} {
		_, ok := parseBroadcast([]byte(other))
		require.False(t, ok, "%q is not a broadcast", other)
	}
}

func FuzzParseBroadcast(f *testing.F) {
	f.Add([]byte(`42["broadcast",{"destination":"board-b1-tasks","data":{"diff":{"benchTs":1,"benchStep":2}},"seq":3,"prevSeq":2}]`))
	f.Add([]byte(`42["broadcast","benchTs":99999999999999999999999`))
	f.Add([]byte(`42["broadcast",{"seq":`))
	f.Add([]byte(`42["broadcast",{"data":{"diff":{"benchTs":1,"benchStep":2}},"seq":3,"prevSeq":2},"3"]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fl, ok := parseBroadcast(b)
		if !ok {
			return
		}
		if fl.ts < 0 || fl.seq < 0 || fl.prevSeq < 0 || fl.step < 0 {
			t.Fatalf("negative field from %q: %+v", b, fl)
		}
	})
}

func TestBenchEnvelopeIsValidAndCarriesTheTimestamp(t *testing.T) {
	ts := time.Unix(1700000000, 123456789)
	room, env, err := benchEnvelope(7, 42, 5, ts, "xx")
	require.NoError(t, err)
	require.Equal(t, "board-b7-tasks", room.Name())
	require.True(t, env.Event.AllowedIn(room))
	_, _, err = proto.NewPublisher(nil, proto.Subjects{}).Encode(room, env)
	require.NoError(t, err, "the envelope passes the publisher's checks")

	data, err := json.Marshal(env)
	require.NoError(t, err)
	msg := append([]byte(`42["broadcast",{"destination":"board-b7-tasks","data":`), data...)
	msg = append(msg, `,"seq":1,"prevSeq":0}]`...)
	f, ok := parseBroadcast(msg)
	require.True(t, ok)
	require.Equal(t, ts.UnixNano(), f.ts)
	require.Equal(t, int64(5), f.step)
}

func TestRoomsAndMembers(t *testing.T) {
	require.Equal(t, []string{"board-b3"}, roomsOf(modeFanout, 13, 10))
	rooms := roomsOf(modeIdle, 13, 10)
	require.Len(t, rooms, 3)
	for _, name := range rooms {
		_, err := proto.ParseRoom(name)
		require.NoError(t, err, name)
	}
	require.Equal(t, []string{"board-b3", "org-o3", "chat-u13-x13"}, rooms)

	// membersOf agrees with counting
	for _, n := range []int{1, 7, 10, 99, 100} {
		for _, rooms := range []int{1, 3, 10, 200} {
			counts := make([]int, rooms)
			for i := range n {
				counts[i%rooms]++
			}
			for k := range rooms {
				require.Equal(t, counts[k], membersOf(k, n, rooms), "n=%d rooms=%d k=%d", n, rooms, k)
			}
		}
	}
}

func TestProcParsing(t *testing.T) {
	// a command name with spaces and parentheses must not shift the fields
	stat := []byte("1234 (node (peer) x) S 1 1234 1234 0 -1 4194560 2600 0 0 0 250 75 0 0 20 0 11 0 12345 1011234816 16534 18446744073709551615\n")
	cpu, err := parseStatCPU(stat)
	require.NoError(t, err)
	require.Equal(t, 3250*time.Millisecond, cpu)
	_, err = parseStatCPU([]byte("1234 (x) S 1"))
	require.Error(t, err)

	status := []byte("Name:\tnode\nVmHWM:\t  81234 kB\nVmRSS:\t   66000 kB\n")
	require.Equal(t, int64(66000), statusKB(status, "VmRSS:"))
	require.Equal(t, int64(81234), statusKB(status, "VmHWM:"))
	require.Zero(t, statusKB(status, "VmSwap:"))

	s, err := readProc(0)
	require.NoError(t, err)
	require.Positive(t, s.RSS)
	require.GreaterOrEqual(t, s.HWM, s.RSS)
}

func TestSocketURL(t *testing.T) {
	require.Equal(t, "ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket", sioclient.URL("http://127.0.0.1:3000/"))
	require.Equal(t, "ws://h:1/socket.io/?EIO=4&transport=websocket", sioclient.URL("ws://h:1"))
}

func TestPrintResultsShowsTheRatio(t *testing.T) {
	var b strings.Builder
	printResults(&b, modeFanout, []result{
		{Target: targetRoomcast, Metrics: []metric{{Name: "deliveries per server CPU-s", Value: 100000, Unit: "/CPU-s", Higher: true}}},
		{Target: targetPeer, Metrics: []metric{{Name: "deliveries per server CPU-s", Value: 40000, Unit: "/CPU-s", Higher: true}}},
	})
	out := b.String()
	require.Contains(t, out, "roomcast/socketio")
	require.Contains(t, out, "100000 /CPU-s")
	require.Contains(t, out, "2.50×")
}

// TestThreeWayTable: roomcast first whatever the order the targets ran in,
// then the peers, and a ratio column for each peer.
func TestThreeWayTable(t *testing.T) {
	cpu := func(target string, v float64) result {
		return result{Target: target, Metrics: []metric{
			{Name: "deliveries per server CPU-s", Value: v, Unit: "/CPU-s", Higher: true},
			{Name: "delivered", Value: 100, Unit: "%", Higher: true},
		}}
	}
	rs := roomcastFirst([]result{cpu(targetPeer, 40000), cpu(targetCentrifugo, 50000), cpu(targetRoomcast, 100000)})
	require.Equal(t, []string{targetRoomcast, targetPeer, targetCentrifugo}, []string{rs[0].Target, rs[1].Target, rs[2].Target})

	var b strings.Builder
	printResults(&b, modeFanout, rs)
	lines := strings.Split(b.String(), "\n")
	require.Regexp(t, `^fanout +roomcast +socketio +centrifugo +roomcast/socketio +roomcast/centrifugo`, lines[0])
	require.Regexp(t, `^deliveries per server CPU-s +100000 /CPU-s +40000 /CPU-s +50000 /CPU-s +2.50× +2.00×`, lines[1])

	b.Reset()
	printMarkdown(&b, modeFanout, []string{"fanout", "-compare"}, rs)
	out := b.String()
	require.Contains(t, out, "| | roomcast | socketio | centrifugo | roomcast/socketio | roomcast/centrifugo |\n|---|---|---|---|---|---|\n")
	require.Contains(t, out, "| deliveries per server CPU-s | 100000 /CPU-s | 40000 /CPU-s | 50000 /CPU-s | 2.50× | 2.00× |")
	require.Contains(t, out, "| delivered | 100 % | 100 % | 100 % |  |  |", "no ratio of percentages")
}

func TestPrintMarkdown(t *testing.T) {
	var b strings.Builder
	printMarkdown(&b, modeIdle, []string{"idle", "-compare"}, []result{
		{Target: targetRoomcast, Metrics: []metric{{Name: "server RSS per socket", Value: 4, Unit: "KB"}}},
		{Target: targetPeer, Metrics: []metric{{Name: "server RSS per socket", Value: 19.2, Unit: "KB"}}, Notes: []string{"a note"}},
	})
	out := b.String()
	require.Contains(t, out, "`roomcast bench idle -compare`")
	require.Contains(t, out, "| | roomcast | socketio | roomcast/socketio |")
	require.Contains(t, out, "| server RSS per socket | 4 KB | 19.2 KB | 0.21× |")
	require.Contains(t, out, "socketio: a note")
	require.Contains(t, out, "cores, load average")
}
