package gateway

import (
	"sync"
	"sync/atomic"
	"time"
)

// maxCooldowns bounds the users on cooldown at once (memory: a flood from
// many accounts); past it, the cooldowns that ended are forgotten, then, if
// need be, any.
const maxCooldowns = 10000

// cooldowns are the users refused at CONNECT for a moment after one of
// their sockets was closed for flooding (Config.FloodCooldown). A closed
// flood reconnected at once would otherwise start over with a fresh socket
// budget: measured with one user's 40 sockets reconnecting as soon as they
// were closed, the gateway answered 45,000 refused calls a second.
type cooldowns struct {
	// n is len(until): every CONNECT asks, and with nobody on cooldown (the
	// usual case, a reconnect storm included) it takes no lock.
	n     atomic.Int32
	mu    sync.Mutex
	until map[string]int64 // user → end of its cooldown (mono)
}

// start puts u on cooldown for d from now.
func (c *cooldowns) start(u string, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := mono()
	if c.until == nil {
		c.until = map[string]int64{}
	}
	if len(c.until) >= maxCooldowns {
		for k, end := range c.until {
			if end <= now {
				delete(c.until, k)
			}
		}
		for k := range c.until {
			if len(c.until) < maxCooldowns {
				break
			}
			delete(c.until, k)
		}
	}
	c.until[u] = now + int64(d)
	c.n.Store(int32(len(c.until)))
}

// left is how long u's cooldown lasts still, 0 when it has none.
func (c *cooldowns) left(u string) time.Duration {
	if c.n.Load() == 0 {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	end, ok := c.until[u]
	if !ok {
		return 0
	}
	now := mono()
	if end <= now {
		delete(c.until, u)
		c.n.Store(int32(len(c.until)))
		return 0
	}
	return time.Duration(end - now)
}
