package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/roomcast/roomcast/cmd/roomcast/internal/sioclient"
	"github.com/roomcast/roomcast/proto"
)

// Fairness: issue 13.4's attack, and what it does to another user. One
// user (the attacker) holds -attack-sockets sockets and has each send
// -attack-calls getChangesSince(since: 0) at once on a room of
// -attack-msgs messages (updates of 100 tasks, so that a read of the whole
// room collapses to 100 changes: a read that costs what the room holds
// reads all of it), waits for the answers and sends them again, for
// -duration; a socket the server closes (or refuses) is dialled again after
// -attack-redial (1 s, as the stock client's first reconnection, with its
// jitter of ±50 %; 0 for at once, as a script might). Meanwhile another user reads a small room's -changes
// changes (getChangesSince, paced at 15 calls/s on one socket, under the
// per-socket limit) and the tool times those reads, failed ones included
// (a read that times out counts with its time): that user's p99 is the
// figure. The attacker's answers are counted by code.
//
// roomcast only: the reference peer keeps no history.
func runFairness(ctx context.Context, o options, srv *server, log io.Writer) (result, error) {
	res := result{Target: srv.name, Mode: modeFairness}
	if srv.js == nil {
		return res, fmt.Errorf("fairness needs roomcast's NATS")
	}
	big, err := proto.BoardTasksRoom("a0")
	if err != nil {
		return res, err
	}
	small, err := proto.BoardTasksRoom("s0")
	if err != nil {
		return res, err
	}
	pub := srv.newPublisher()
	smallSince := time.Now().UnixMilli()
	for k := range o.Changes {
		if err := pub.add(ctx, small, resyncChange(k)); err != nil {
			return res, err
		}
	}
	for k := range o.AttackMsgs {
		env := resyncChange(k % 100)
		env.Diff = json.RawMessage(`{"title":"change ` + strconv.Itoa(k) + `"}`)
		if err := pub.add(ctx, big, env); err != nil {
			return res, err
		}
	}
	if failed, err := pub.wait(ctx); err != nil || failed > 0 {
		return res, fmt.Errorf("filling the rooms: %d publishes failed (%v)", failed, err)
	}
	if _, err := waitRoomstate(ctx, srv.js); err != nil {
		res.Notes = append(res.Notes, fmt.Sprintf("did not wait for roomstate: %v", err))
	}
	fmt.Fprintf(log, "%s: %s holds %d messages (updates of 100 tasks), %s %d changes\n", srv.name, big.Name(), o.AttackMsgs, small.Name(), o.Changes)

	victimTok, err := mintToken(srv.secret, "reader", time.Hour)
	if err != nil {
		return res, err
	}
	victim, err := sioclient.Dial(ctx, sioclient.Options{URL: sioclient.URL(srv.url), Token: victimTok})
	if err != nil {
		return res, err
	}
	defer victim.Close()
	attackTok, err := mintToken(srv.secret, "attacker", time.Hour)
	if err != nil {
		return res, err
	}

	before, procErr := readProc(srv.pid)
	actx, stop := context.WithTimeout(ctx, o.Duration)
	defer stop()
	var (
		mu      sync.Mutex
		codes   = map[string]int{}
		refused int
		redials int
		wg      sync.WaitGroup
	)
	count := func(code string, n int) { mu.Lock(); codes[code] += n; mu.Unlock() }
	attackArgs := proto.ChangesArgs{RoomName: big.Name(), Cursor: proto.Cursor{Since: new(int64)}}
	for range o.AttackSockets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for first := true; actx.Err() == nil; first = false {
				c, err := sioclient.Dial(actx, sioclient.Options{URL: sioclient.URL(srv.url), Token: attackTok})
				if err != nil {
					mu.Lock()
					if errors.Is(err, sioclient.ErrRefused) {
						refused++
					}
					mu.Unlock()
					sleepCtx(actx, jittered(o.AttackRedial))
					continue
				}
				if !first {
					mu.Lock()
					redials++
					mu.Unlock()
				}
				stop := context.AfterFunc(actx, func() { _ = c.Close() })
				attack(actx, c, o.AttackCalls, attackArgs, count)
				stop()
				_ = c.Close()
				sleepCtx(actx, jittered(o.AttackRedial))
			}
		}()
	}

	// The other user: paced reads of the small room while the attack runs.
	sleepCtx(actx, 500*time.Millisecond) // the attack under way
	h := NewHistogram()
	victimCodes := map[string]int{}
	victimArgs := proto.ChangesArgs{RoomName: small.Name(), Cursor: proto.Cursor{Since: &smallSince}}
	got := -1
	next := time.Now()
	for actx.Err() == nil {
		sleepCtx(actx, time.Until(next))
		next = next.Add(time.Second / 15)
		if actx.Err() != nil {
			break
		}
		t := time.Now()
		ack, err := victim.Call(string(proto.EndpointGetChangesSince), victimArgs, nil)
		h.Record(int64(time.Since(t)))
		switch {
		case ack.OK:
			victimCodes["ok"]++
			var r proto.ChangesResult
			if json.Unmarshal(ack.Data, &r) == nil {
				got = len(r.Changes)
			}
		case ack.Error != nil:
			victimCodes[ack.Error.Code]++
		case err != nil:
			return res, fmt.Errorf("the other user's read: %w", err)
		}
	}
	wg.Wait()
	after, err := readProc(srv.pid)
	// How sync read and how long it took (both users' requests): whether
	// the other user's slow reads were slow in sync or outside it.
	printSyncReads(ctx, srv.url, srv.name, log)

	s := h.Summary()
	res.Connected = 1
	res.Metrics = []metric{
		{Name: "other user: reads", Value: float64(h.Count()), Higher: true},
		{Name: "other user: reads ok", Value: float64(victimCodes["ok"]), Higher: true},
		{Name: "other user: changes per read", Value: float64(got)},
		{Name: "other user: p50", Value: ms(s.P50), Unit: "ms"},
		{Name: "other user: p90", Value: ms(s.P90), Unit: "ms"},
		{Name: "other user: p99", Value: ms(s.P99), Unit: "ms"},
		{Name: "other user: max", Value: ms(s.Max), Unit: "ms"},
		{Name: "attacker: calls answered", Value: float64(sumCodes(codes))},
		{Name: "attacker: ok", Value: float64(codes["ok"])},
		{Name: "attacker: rate_limited", Value: float64(codes[string(proto.CodeRateLimited)])},
		{Name: "attacker: unavailable", Value: float64(codes[string(proto.CodeUnavailable)])},
		{Name: "attacker: connects refused", Value: float64(refused)},
		{Name: "attacker: sockets dialled again", Value: float64(redials)},
	}
	if srv.pid > 0 && procErr == nil && err == nil {
		res.Metrics = append(res.Metrics, metric{Name: "server CPU over the attack", Value: ms(after.CPU - before.CPU), Unit: "ms"})
	}
	for code, n := range victimCodes {
		if code != "ok" {
			res.Notes = append(res.Notes, fmt.Sprintf("the other user's reads failed %d times with %s", n, code))
		}
	}
	var other []string
	for code, n := range codes {
		switch code {
		case "ok", string(proto.CodeRateLimited), string(proto.CodeUnavailable):
		default:
			other = append(other, fmt.Sprintf("%s %d", code, n))
		}
	}
	sort.Strings(other)
	if len(other) > 0 {
		res.Notes = append(res.Notes, "attacker's other answers: "+strings.Join(other, ", "))
	}
	return res, nil
}

// attack sends calls getChangesSince at once on c, waits for their acks,
// and again, until ctx ends or the server closes c; count gets each ack's
// code.
func attack(ctx context.Context, c *sioclient.Conn, calls int, args proto.ChangesArgs, count func(string, int)) {
	for ctx.Err() == nil {
		first := -1
		for range calls {
			id, err := c.Emit(string(proto.EndpointGetChangesSince), args)
			if err != nil {
				return
			}
			if first < 0 {
				first = id
			}
		}
		for want := first; want < first+calls; {
			msg, err := c.Next()
			if err != nil {
				return
			}
			prefix := "43" + strconv.Itoa(want) + "["
			if !bytes.HasPrefix(msg, []byte(prefix)) {
				continue // a broadcast or a ping
			}
			want++
			var acks []struct {
				OK    bool `json:"ok"`
				Error *struct {
					Code string `json:"code"`
				} `json:"error"`
			}
			switch {
			case bytes.HasPrefix(msg[len(prefix)-1:], []byte(`[{"ok":true,`)):
				count("ok", 1)
			case json.Unmarshal(msg[len(prefix)-1:], &acks) == nil && len(acks) == 1 && acks[0].Error != nil:
				count(acks[0].Error.Code, 1)
			default:
				count("malformed", 1)
			}
		}
	}
}

// jittered is d ± 50 %, as socket.io-client spreads its reconnections
// (randomizationFactor 0.5).
func jittered(d time.Duration) time.Duration {
	return d/2 + time.Duration(rand.Int64N(int64(d)+1))
}

func sumCodes(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
