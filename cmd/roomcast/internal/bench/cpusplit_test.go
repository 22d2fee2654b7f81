package bench

import (
	"context"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Samples as `perf script -F ip,sym,dso` prints them, cut from recordings
// of the three servers at 20,000 deliveries/s (stacks shortened).
const (
	// roomcast's io_uring send, and inside it the loopback's delivery to
	// the reading socket, run in the server's softirq.
	sampleReceive = `	ffffffff8207dced __tcp_transmit_skb ([kernel.kallsyms])
	ffffffff8208ae40 tcp_v4_do_rcv ([kernel.kallsyms])
	ffffffff8208d30a tcp_v4_rcv ([kernel.kallsyms])
	ffffffff81eb0c4d __netif_receive_skb_one_core ([kernel.kallsyms])
	ffffffff81eb0f33 process_backlog ([kernel.kallsyms])
	ffffffff81eb1621 __napi_poll ([kernel.kallsyms])
	ffffffff81eb1bfe net_rx_action ([kernel.kallsyms])
	ffffffff81369c4d handle_softirqs ([kernel.kallsyms])
	ffffffff81eadd34 __dev_queue_xmit ([kernel.kallsyms])
	ffffffff8207fe7d tcp_write_xmit ([kernel.kallsyms])
	ffffffff8206652b tcp_sendmsg ([kernel.kallsyms])
	ffffffff81b9affd io_sendmsg ([kernel.kallsyms])
	ffffffff81b7f96f __do_sys_io_uring_enter ([kernel.kallsyms])
	ffffffff81000130 entry_SYSCALL_64_after_hwframe ([kernel.kallsyms])
	            b74e internal/runtime/syscall/linux.Syscall6 (/work/main/bin/roomcast)
	          4d34af github.com/roomcast/roomcast/services/gateway/internal/engineio.(*sendRing).enter (/work/main/bin/roomcast)
`
	// the same send before the segment reaches the loopback device
	sampleSend = `	ffffffff8207e2b4 __tcp_transmit_skb ([kernel.kallsyms])
	ffffffff8207fe7d tcp_write_xmit ([kernel.kallsyms])
	ffffffff82065a60 tcp_sendmsg_locked ([kernel.kallsyms])
	ffffffff8206652b tcp_sendmsg ([kernel.kallsyms])
	ffffffff81e75d1b ____sys_sendmsg ([kernel.kallsyms])
	ffffffff81b9affd io_sendmsg ([kernel.kallsyms])
	ffffffff81b7f96f __do_sys_io_uring_enter ([kernel.kallsyms])
	            b74e internal/runtime/syscall/linux.Syscall6 (/work/main/bin/roomcast)
`
	// Socket.IO's node: a writev from JIT code, its C++ names with spaces
	// and parentheses
	sampleNodeSend = `	ffffffff82065a60 tcp_sendmsg_locked ([kernel.kallsyms])
	ffffffff8206652b tcp_sendmsg ([kernel.kallsyms])
	ffffffff81e74b0e sock_write_iter ([kernel.kallsyms])
	ffffffff816a2c5f do_iter_readv_writev ([kernel.kallsyms])
	ffffffff8223df91 do_syscall_64 ([kernel.kallsyms])
	          14b8865 uv__try_write (/usr/bin/node)
	          9da8b7 node::StreamBase::JSMethod<&node::StreamBase::Writev> (/usr/bin/node)
	    7f1f168f079b [unknown] (/tmp/perf-32375.map)
`
	sampleUserGo = `	          4d638b github.com/roomcast/roomcast/services/gateway/internal/engineio.(*WebSocket).queue1 (/work/main/bin/roomcast)
	          551e31 github.com/roomcast/roomcast/services/gateway.(*socket).enqueueMessage (/work/main/bin/roomcast)
	          5326d0 github.com/roomcast/roomcast/services/gateway.(*Gateway).runFanout (/work/main/bin/roomcast)
`
	sampleUserNode = `	          9dd084 non-virtual thunk to node::LibuvStreamWrap::IsAlive() (/usr/bin/node)
	          8df767 non-virtual thunk to node::(anonymous namespace)::Parser::OnStreamRead(long, uv_buf_t const&) (/usr/bin/node)
	    7f1f168e48bb [unknown] (/tmp/perf-32375.map)
`
	// the scheduler: a thread going to sleep
	sampleOther = `	ffffffff813aecd3 finish_task_switch.isra.0 ([kernel.kallsyms])
	ffffffff82249604 __schedule ([kernel.kallsyms])
	ffffffff81450b0a futex_wait ([kernel.kallsyms])
	ffffffff8144bfed __x64_sys_futex ([kernel.kallsyms])
	           95e03 runtime.futex.abi0 (/work/main/bin/roomcast)
	           5b8c8 runtime.findRunnable (/work/main/bin/roomcast)
`
)

func perfScript(samples ...string) string {
	return "\n" + strings.Join(samples, "\n") + "\n"
}

func TestSplitSamples(t *testing.T) {
	in := perfScript(sampleReceive, sampleReceive, sampleSend, sampleNodeSend, sampleUserGo, sampleUserNode, sampleUserGo, sampleOther)
	s, err := splitSamples(strings.NewReader(in))
	require.NoError(t, err)
	assert.Equal(t, 8, s.Samples)
	assert.Equal(t, 5, s.KernelSamples, "the three user-space samples have no kernel frame")
	assert.InDelta(t, 2.0/8, s.Share[partReceive], 1e-9)
	assert.InDelta(t, 2.0/8, s.Share[partSend], 1e-9)
	assert.InDelta(t, 3.0/8, s.Share[partUser], 1e-9)
	assert.InDelta(t, 1.0/8, s.Share[partOther], 1e-9)

	// the same samples in any order, any blank lines between
	s2, err := splitSamples(strings.NewReader(strings.ReplaceAll(perfScript(sampleOther, sampleUserGo, sampleReceive, sampleUserNode, sampleSend, sampleReceive, sampleNodeSend, sampleUserGo), "\n\n", "\n\n\n")))
	require.NoError(t, err)
	assert.Equal(t, s, s2)
}

func TestSplitSamplesEmpty(t *testing.T) {
	s, err := splitSamples(strings.NewReader("\n\n"))
	require.NoError(t, err)
	assert.Zero(t, s.Samples)
	assert.Zero(t, s.Share[partUser])
}

func TestSplitSamplesNotPerfScript(t *testing.T) {
	for _, in := range []string{
		"perf: no such file\n",
		"\tzz12 foo (bar)\n",
		sampleUserGo + "Warning: lost samples\n",
	} {
		_, err := splitSamples(strings.NewReader(in))
		require.Error(t, err, "%q", in)
		assert.Contains(t, err.Error(), "not a frame")
	}
}

func TestParsePerfFrame(t *testing.T) {
	for line, want := range map[string]perfFrame{
		"ffffffff8206652b tcp_sendmsg ([kernel.kallsyms])":                                                      {sym: "tcp_sendmsg", kernel: true},
		"ffffffff8206652b [unknown] ([unknown])":                                                                {sym: "[unknown]", kernel: true},
		"4d638b github.com/x.(*WebSocket).queue1 (/bin/roomcast)":                                               {sym: "github.com/x.(*WebSocket).queue1"},
		"8df767 non-virtual thunk to node::(anonymous namespace)::P::On(long, uv_buf_t const&) (/usr/bin/node)": {sym: "non-virtual thunk to node::(anonymous namespace)::P::On(long, uv_buf_t const&)"},
		"7f1f168e48bb ([unknown])":                                                                              {sym: "", kernel: false},
		"95e03":                                                                                                 {},
	} {
		got, err := parsePerfFrame(line)
		require.NoError(t, err, line)
		assert.Equal(t, want, got, line)
	}
}

func TestCPUSplitMetrics(t *testing.T) {
	r := stepResult{Delivered: 200_000, ServerCPU: 2 * time.Second}
	assert.Empty(t, cpuSplitMetrics(r), "no split, no rows")
	assert.Empty(t, r.splitLine())
	r.CPUSplit = &cpuSplit{Samples: 1000, KernelSamples: 800, Share: map[string]float64{partUser: 0.2, partSend: 0.3, partReceive: 0.4, partOther: 0.1}}
	m := cpuSplitMetrics(r)
	require.Len(t, m, len(cpuParts)+1)
	// 2 CPU-s over 200,000 deliveries is 10 µs each
	for i, want := range []float64{2, 3, 4, 1} {
		assert.InDelta(t, want, m[i].Value, 1e-9, m[i].Name)
		assert.Equal(t, "µs", m[i].Unit)
	}
	// without the receive, 1.2 CPU-s
	assert.InDelta(t, 200_000/1.2, m[4].Value, 1e-6)
	assert.True(t, m[4].Higher)
	assert.Contains(t, r.splitLine(), "receive in context 4.00 µs")
	// the rows come before the NATS leg's, which only roomcast has, so
	// that the peers' columns line up
	r.NATSLeg = &Summary{}
	names := make([]string, 0)
	for _, x := range fanoutMetrics(r) {
		names = append(names, x.Name)
	}
	assert.Equal(t, "deliveries per server CPU-s, receive taken out", names[len(names)-3])
}

func TestStartPerfMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := startPerf(context.Background(), 1, t.TempDir()+"/x.perf")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "-perf")
}

func TestPerfFlagChecks(t *testing.T) {
	_, err := parseOptions([]string{"storm", "-perf", t.TempDir()}, io.Discard)
	require.ErrorContains(t, err, "fanout only")
	_, err = parseOptions([]string{"fanout", "-perf", t.TempDir(), "-url", "http://127.0.0.1:1", "-secret", "s", "-nats", "nats://127.0.0.1:1"}, io.Discard)
	require.ErrorContains(t, err, "-server-pid")
}

// FuzzSplitSamples: whatever perf script printed, the split either fails
// with an error or has shares that add up to one over its samples.
func FuzzSplitSamples(f *testing.F) {
	f.Add(perfScript(sampleReceive, sampleSend, sampleUserGo, sampleOther))
	f.Add(perfScript(sampleNodeSend, sampleUserNode))
	f.Add("\n")
	f.Add("ffffffff81000130 (x\n")
	f.Fuzz(func(t *testing.T, in string) {
		s, err := splitSamples(strings.NewReader(in))
		if err != nil {
			return
		}
		sum := 0.0
		for _, p := range cpuParts {
			sum += s.Share[p]
		}
		if s.Samples > 0 && math.Abs(sum-1) > 1e-9 {
			t.Fatalf("shares add up to %v over %d samples", sum, s.Samples)
		}
		if s.KernelSamples > s.Samples {
			t.Fatalf("%d kernel samples of %d", s.KernelSamples, s.Samples)
		}
	})
}
