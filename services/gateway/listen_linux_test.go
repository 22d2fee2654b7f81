//go:build linux

package gateway

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestListenNoKeepAlive: sockets accepted from Listen have no TCP
// keepalive (Go turns it on by default, at several setsockopt calls each).
func TestListenNoKeepAlive(t *testing.T) {
	ln, err := Listen(context.Background(), "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	a, err := ln.Accept()
	require.NoError(t, err)
	defer a.Close()
	raw, err := a.(syscall.Conn).SyscallConn()
	require.NoError(t, err)
	var on int
	var gerr error
	require.NoError(t, raw.Control(func(fd uintptr) { on, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE) }))
	require.NoError(t, gerr)
	require.Zero(t, on, "SO_KEEPALIVE")
}

// TestAcceptOutOfDescriptors: with the process out of file descriptors
// (its soft RLIMIT_NOFILE lowered and filled), accepts fail with EMFILE.
// The gateway counts them, /readyz says "not accepting" (asked on a
// connection kept alive from before) while /healthz and /metrics (with
// the count) still answer there,
// and once descriptors are free again the connection that waited in the
// backlog is upgraded, /readyz is ready and new sockets and requests are
// served. (The listener used to stop at the first EMFILE, for good.)
func TestAcceptOutOfDescriptors(t *testing.T) {
	e := newEnv(t)
	tg := e.startGateway()
	addr := strings.TrimPrefix(tg.url, "http://")
	probe, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = probe.Close() })
	pr := bufio.NewReader(probe)
	get := func(path string) (int, string) {
		t.Helper()
		require.NoError(t, probe.SetDeadline(time.Now().Add(5*time.Second)))
		_, err := io.WriteString(probe, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
		require.NoError(t, err)
		resp, err := http.ReadResponse(pr, nil)
		require.NoError(t, err)
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	status, _ := get("/readyz")
	require.Equal(t, http.StatusOK, status)

	var limit syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &limit))
	restore := func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &limit) }
	t.Cleanup(restore)
	var files []*os.File
	freeAll := func() {
		for _, f := range files {
			_ = f.Close()
		}
		files = nil
	}
	t.Cleanup(freeAll)
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	highest := 0
	for _, d := range entries {
		if n, err := strconv.Atoi(d.Name()); err == nil {
			highest = max(highest, n)
		}
	}
	low := limit
	low.Cur = uint64(highest + 64)
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low))
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			require.ErrorIs(t, err, syscall.EMFILE)
			break
		}
		files = append(files, f)
	}

	// One descriptor for the client's end; the gateway has none for its own.
	var pending net.Conn
	for pending == nil {
		require.NotEmpty(t, files, "no descriptor left to dial with")
		_ = files[len(files)-1].Close()
		files = files[:len(files)-1]
		pending, err = net.Dial("tcp", addr)
		if err != nil && !errors.Is(err, syscall.EMFILE) {
			require.NoError(t, err)
		}
	}
	t.Cleanup(func() { _ = pending.Close() })
	_, err = io.WriteString(pending, "GET "+wsPath+" HTTP/1.1\r\n"+upgradeHeaders+"\r\n")
	require.NoError(t, err)

	deadline := time.Now().Add(10 * time.Second)
	for {
		status, body := get("/readyz")
		if status == http.StatusServiceUnavailable && strings.Contains(body, "not accepting") {
			break
		}
		require.True(t, time.Now().Before(deadline), "/readyz still says %d %q", status, body)
	}
	status, body := get("/healthz")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, "ok\n", body)
	require.Positive(t, tg.counter(tg.m.acceptErrors.WithLabelValues("emfile")))
	status, body = get("/metrics")
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, body, `roomcast_gateway_accept_errors_total{error="emfile"}`)

	freeAll()
	restore()
	require.NoError(t, pending.SetReadDeadline(time.Now().Add(5*time.Second)))
	line, err := bufio.NewReader(pending).ReadString('\n')
	require.NoError(t, err, "the connection that waited was never accepted")
	require.Contains(t, line, " 101 ")
	require.Eventually(t, func() bool { status, _ := get("/readyz"); return status == http.StatusOK }, 5*time.Second, 5*time.Millisecond)
	connectUser(t, tg, "u1")
	resp, err := http.Get(tg.url + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}
