package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/roomcast/roomcast/proto"
)

// The systems the tool measures: roomcast (the all-in-one `roomcast serve`,
// publishing through NATS), the Socket.IO reference peer (bench/peer,
// publishing over HTTP) and Centrifugo (publishing through its HTTP API).
// "peer" is the Socket.IO peer's name from before there were two.
const (
	targetRoomcast   = "roomcast"
	targetPeer       = "socketio"
	targetPeerOld    = "peer"
	targetCentrifugo = "centrifugo"
)

// server is a running target.
type server struct {
	name   string
	url    string // http://host:port
	pid    int    // for /proc; 0 when unknown
	secret string
	apiKey string // Centrifugo's HTTP API key
	// natsURL is roomcast's NATS, set when the tool started it; dataDir
	// its store.
	natsURL string
	dataDir string
	// gateways are bench fleet's gateways, http://host:port each: socket i
	// connects to gateways[i mod len]. Empty: every socket connects to url.
	gateways []string
	nc       *nats.Conn // roomcast only
	js       jetstream.JetStream
	stop     func()
}

// publisher sends benchmark envelopes to rooms.
type publisher interface {
	// add sends (or queues) one envelope.
	add(ctx context.Context, room proto.Room, env proto.Envelope) error
	// flush sends what add queued.
	flush(ctx context.Context) error
	// wait returns once everything sent is stored (roomcast) or handed over
	// (peer), with the number of failed publishes.
	wait(ctx context.Context) (failed int64, err error)
}

func (s *server) close() {
	if s.nc != nil {
		s.nc.Close()
	}
	if s.stop != nil {
		s.stop()
	}
}

// startServer starts the target o.Target, or attaches to the one at o.URL.
func startServer(ctx context.Context, o options, target string, log io.Writer) (*server, error) {
	secret := o.Secret
	if secret == "" {
		secret = randomSecret()
	}
	s := &server{name: target, secret: secret}
	if o.URL != "" {
		s.url, s.pid = strings.TrimSuffix(o.URL, "/"), o.ServerPID
	} else {
		var err error
		switch target {
		case targetPeer:
			err = s.startPeer(ctx, o)
		case targetCentrifugo:
			err = s.startCentrifugo(ctx, o, log)
		default:
			err = s.startRoomcast(ctx, o)
		}
		if err != nil {
			return nil, err
		}
	}
	if target == targetRoomcast {
		if err := s.connectNATS(ctx, o); err != nil {
			s.close()
			return nil, err
		}
	}
	return s, nil
}

// randomSecret is a JWT secret for a server the tool starts.
func randomSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startRoomcast runs `roomcast serve` (this very binary unless -bin says
// otherwise) on free loopback ports with a fresh data directory.
func (s *server) startRoomcast(ctx context.Context, o options) error {
	bin := o.Bin
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find the roomcast binary: %w (give -bin)", err)
		}
		bin = exe
	}
	httpPort, err := freePort()
	if err != nil {
		return err
	}
	natsPort, err := freePort()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "roomcast-bench-")
	if err != nil {
		return err
	}
	cmd := pinned(o, true, bin, "serve")
	cmd.Env = append(cmd.Env,
		"ROOMCAST_HTTP_ADDR=127.0.0.1:"+strconv.Itoa(httpPort),
		"ROOMCAST_NATS_ADDR=127.0.0.1:"+strconv.Itoa(natsPort),
		"ROOMCAST_NATS_URL=",
		"ROOMCAST_DATA_DIR="+filepath.Join(dir, "data"),
		"ROOMCAST_JWT_SECRET="+s.secret,
		"ROOMCAST_LOG_LEVEL=warn",
	)
	if o.ServerCPUProfile != "" {
		cmd.Env = append(cmd.Env, "ROOMCAST_PPROF=1")
	}
	cmd.Env = recoveryEnv(cmd.Env, o.Recovery)
	s.dataDir = filepath.Join(dir, "data")
	s.url = "http://127.0.0.1:" + strconv.Itoa(httpPort)
	s.natsURL = "nats://127.0.0.1:" + strconv.Itoa(natsPort)
	return s.run(ctx, cmd, dir, "serve.log", "/readyz", bin+" serve", "roomcast serve")
}

// recoveryEnv sets roomcast's connection state recovery in env: off is
// ROOMCAST_RECOVERY_TTL=0, on the server's default TTL (an inherited
// ROOMCAST_RECOVERY_TTL taken out), "" leaves env as it is.
func recoveryEnv(env []string, recovery string) []string {
	const key = "ROOMCAST_RECOVERY_TTL="
	switch recovery {
	case recoveryOn:
		return slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, key) })
	case recoveryOff:
		return append(env, key+"0")
	}
	return env
}

// run starts cmd, its output in the file logName of dir, as s's process
// (s.stop ends it and removes dir), and waits until s.url+readyPath
// answers 200. Errors name the server as started (start) and as running
// (name), the latter with the end of its log. dir is removed on failure.
func (s *server) run(ctx context.Context, cmd *exec.Cmd, dir, logName, readyPath, start, name string) error {
	logPath := filepath.Join(dir, logName)
	logf, err := os.Create(logPath)
	if err != nil {
		_ = os.RemoveAll(dir)
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := startProc(cmd)
	if err != nil {
		logf.Close()
		_ = os.RemoveAll(dir)
		return fmt.Errorf("start %s: %w", start, err)
	}
	s.pid = cmd.Process.Pid
	s.stop = func() {
		p.stop(10 * time.Second)
		logf.Close()
		_ = os.RemoveAll(dir)
	}
	if err := waitReady(ctx, p, s.url+readyPath, 30*time.Second); err != nil {
		log := tail(logPath, 2000) // before stop removes dir
		s.stop()
		return fmt.Errorf("%s: %w; its log:\n%s", name, err, log)
	}
	return nil
}

// pinned is the command that starts a server: as is, or with -pin under
// `taskset -c 0` (the load tool keeps to core 1), a Go server (goRuntime)
// with GOMAXPROCS=1 so that its scheduler does not plan for a core it cannot
// use. Its Env starts with this process's environment; callers append.
func pinned(o options, goRuntime bool, bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	if o.Pin {
		cmd = exec.Command("taskset", append([]string{"-c", serverCore, bin}, args...)...)
	}
	cmd.Env = os.Environ()
	if o.Pin && goRuntime {
		cmd.Env = append(cmd.Env, "GOMAXPROCS=1")
	}
	return cmd
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// proc is a child process whose exit is watched.
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

func startProc(cmd *exec.Cmd) (*proc, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	return p, nil
}

// stop sends SIGTERM, then SIGKILL after grace, and waits for the exit.
func (p *proc) stop(grace time.Duration) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// waitReady polls url until it answers 200, the process exits or timeout.
func waitReady(ctx context.Context, p *proc, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.exited:
			return errors.New("exited before it was ready")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not ready within %s", url, timeout)
}

// findPeerDir finds bench/peer: -peer-dir, else upwards from the working
// directory and from the binary's directory.
func findPeerDir(o options) (string, error) {
	if o.PeerDir != "" {
		return o.PeerDir, nil
	}
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	for _, d := range starts {
		for {
			p := filepath.Join(d, "bench", "peer")
			if _, err := os.Stat(filepath.Join(p, "server.mjs")); err == nil {
				return p, nil
			}
			up := filepath.Dir(d)
			if up == d {
				break
			}
			d = up
		}
	}
	return "", errors.New("bench/peer not found above the working directory: give -peer-dir")
}

// peerInstalled reports whether the peer's npm packages are installed.
func peerInstalled(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "socket.io", "package.json")); err != nil {
		return fmt.Errorf("the reference peer's packages are not installed: run `npm install` in %s", dir)
	}
	return nil
}

// startPeer runs the Socket.IO reference peer with node.
func (s *server) startPeer(ctx context.Context, o options) error {
	dir, err := findPeerDir(o)
	if err != nil {
		return err
	}
	if err := peerInstalled(dir); err != nil {
		return err
	}
	node := o.Node
	if node == "" {
		node = "node"
	}
	cmd := pinned(o, false, node, "server.mjs")
	cmd.Dir = dir
	cmd.Env = append(cmd.Env, "PEER_JWT_SECRET="+s.secret, "PEER_PORT=0", "PEER_HOST=127.0.0.1")
	if o.Deflate {
		// roomcast's default threshold (ROOMCAST_DEFLATE_THRESHOLD)
		cmd.Env = append(cmd.Env, "PEER_DEFLATE=512")
	}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	p, err := startProc(cmd)
	if err != nil {
		return fmt.Errorf("start the reference peer (%s server.mjs in %s): %w", node, dir, err)
	}
	s.pid = cmd.Process.Pid
	s.stop = func() { p.stop(5 * time.Second) }
	port := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if p, ok := strings.CutPrefix(sc.Text(), "PEER_LISTENING "); ok {
				port <- p
			}
		}
	}()
	select {
	case p := <-port:
		s.url = "http://127.0.0.1:" + p
		return nil
	case <-p.exited:
		return errors.New("the reference peer exited before it listened")
	case <-time.After(20 * time.Second):
	case <-ctx.Done():
	}
	s.stop()
	return errors.New("the reference peer did not say PEER_LISTENING within 20s")
}

// connectNATS connects to roomcast's NATS and, unless told not to, answers
// authz.join with allow for every org and board room the benchmark joins: in
// production a domain service answers.
func (s *server) connectNATS(ctx context.Context, o options) error {
	url := s.natsURL
	if url == "" {
		url = o.NATS
	}
	if url == "" {
		return errors.New("roomcast's NATS URL is unknown: give -nats with -url")
	}
	nc, err := nats.Connect(url, nats.Name("roomcast-bench"), nats.Timeout(5*time.Second))
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", url, err)
	}
	s.nc = nc
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return err
	}
	s.js = js
	if o.Authz {
		allow, _ := json.Marshal(proto.AuthzJoinReply{Allow: true})
		if _, err := nc.Subscribe(proto.SubjectAuthzJoin, func(m *nats.Msg) { _ = m.Respond(allow) }); err != nil {
			return err
		}
		if err := nc.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// newPublisher publishes to s the way its users would: through JetStream
// for roomcast, by HTTP POST for the peer.
func (s *server) newPublisher() publisher {
	switch s.name {
	case targetPeer:
		return newPeerPublisher(s.url + "/publish")
	case targetCentrifugo:
		return newCentrifugoPublisher(s.url+"/api/batch", s.apiKey)
	}
	p := &natsPublisher{js: s.js, enc: proto.NewPublisher(s.js, proto.Subjects{})}
	return p
}

// natsPublisher publishes asynchronously to stream ROOMS (at most 4096
// unacknowledged, which paces the publisher if JetStream falls behind).
type natsPublisher struct {
	js      jetstream.JetStream
	enc     *proto.Publisher
	futures []jetstream.PubAckFuture
	failed  atomic.Int64
	// firstErr is the first failure, for the report.
	firstErr error
}

func (p *natsPublisher) fail(err error) {
	p.failed.Add(1)
	if p.firstErr == nil {
		p.firstErr = err
	}
}

func (p *natsPublisher) add(ctx context.Context, room proto.Room, env proto.Envelope) error {
	data, id, err := p.enc.Encode(room, env)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(proto.Subjects{}.Publish(room))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, id)
	// a long stall wait: when JetStream is behind, the publisher waits
	// rather than failing (the delay shows in the latency, as it should)
	f, err := p.js.PublishMsgAsync(msg, jetstream.WithStallWait(10*time.Second))
	if err != nil {
		p.fail(err)
		return nil
	}
	p.futures = append(p.futures, f)
	if len(p.futures) >= 8192 {
		p.reap()
	}
	return nil
}

// reap counts the failures among acknowledged publishes and forgets them.
func (p *natsPublisher) reap() {
	keep := p.futures[:0]
	for _, f := range p.futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			p.fail(err)
		default:
			keep = append(keep, f)
		}
	}
	p.futures = keep
}

func (p *natsPublisher) flush(context.Context) error { return nil }

func (p *natsPublisher) wait(ctx context.Context) (int64, error) {
	select {
	case <-p.js.PublishAsyncComplete():
	case <-ctx.Done():
		return p.failed.Load(), ctx.Err()
	case <-time.After(30 * time.Second):
		return p.failed.Load(), errors.New("JetStream did not acknowledge every publish within 30s")
	}
	for _, f := range p.futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			p.fail(err)
		default:
		}
	}
	p.futures = nil
	if p.firstErr != nil {
		return p.failed.Load(), fmt.Errorf("%d publishes failed, the first with: %w", p.failed.Load(), p.firstErr)
	}
	return 0, nil
}

// httpBatch is what the HTTP publishers share: the envelopes of one tick
// go in one POST, a JSON batch between open and end with an item each.
type httpBatch struct {
	url    string
	client *http.Client
	header http.Header // set on each POST besides Content-Type
	open   string
	end    string
	batch  bytes.Buffer
	n      int
	failed int64
}

// item starts the next item (opening the batch at its first) and returns
// the buffer to write it in.
func (b *httpBatch) item() *bytes.Buffer {
	if b.n == 0 {
		b.batch.Reset()
		b.batch.WriteString(b.open)
	} else {
		b.batch.WriteByte(',')
	}
	b.n++
	return &b.batch
}

// post sends the batch, if it holds any item, to the server that to names,
// and returns the answer's body (16 MiB at most) and how many envelopes
// the batch held. A batch not sent, or not answered 200, is counted failed
// whole.
func (b *httpBatch) post(ctx context.Context, to string) (body []byte, n int, err error) {
	if b.n == 0 {
		return nil, 0, nil
	}
	b.batch.WriteString(b.end)
	n = b.n
	b.n = 0
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.url, bytes.NewReader(b.batch.Bytes()))
	if err != nil {
		return nil, n, err
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range b.header {
		req.Header[k] = v
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.failed += int64(n)
		return nil, n, fmt.Errorf("publish to %s: %w", to, err)
	}
	body, err = io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	resp.Body.Close()
	if err != nil {
		b.failed += int64(n)
		return nil, n, fmt.Errorf("publish to %s: %w", to, err)
	}
	if resp.StatusCode != http.StatusOK {
		b.failed += int64(n)
		return body, n, fmt.Errorf("publish to %s: HTTP %d: %.200s", to, resp.StatusCode, body)
	}
	return body, n, nil
}

// peerPublisher batches the envelopes of one tick into one POST of
// [{"room":…,"data":…},…] to the peer's /publish.
type peerPublisher struct{ httpBatch }

func newPeerPublisher(url string) *peerPublisher {
	return &peerPublisher{httpBatch{url: url, client: &http.Client{Timeout: 30 * time.Second}, open: "[", end: "]"}}
}

func (p *peerPublisher) add(_ context.Context, room proto.Room, env proto.Envelope) error {
	data, err := json.Marshal(env)
	if err != nil {
		return err
	}
	b := p.item()
	fmt.Fprintf(b, `{"room":%q,"data":`, room.Name())
	b.Write(data)
	b.WriteByte('}')
	return nil
}

func (p *peerPublisher) flush(ctx context.Context) error {
	_, _, err := p.post(ctx, "the peer")
	return err
}

func (p *peerPublisher) wait(ctx context.Context) (int64, error) {
	err := p.flush(ctx)
	return p.failed, err
}
