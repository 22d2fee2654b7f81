package gateway

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
)

func signed(t *testing.T, secret string, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	require.NoError(t, err)
	return s
}

// TestVerifiedTokenCache: a token presented again is not parsed again, but
// a remembered token still expires on time, and refused or not-yet-valid
// tokens are not remembered.
func TestVerifiedTokenCache(t *testing.T) {
	const secret = "s3cret"
	v, err := newTokenVerifier(Config{JWTSecret: secret})
	require.NoError(t, err)
	now := time.Now()
	clock := now
	v.now = func() time.Time { return clock }

	tok := signed(t, secret, jwt.MapClaims{"sub": "u1", "exp": now.Add(30 * time.Second).Unix()})
	info, err := v.verify(tok)
	require.NoError(t, err)
	require.Equal(t, "u1", info.user)
	require.Len(t, v.verified, 1)
	info2, err := v.verify(tok)
	require.NoError(t, err)
	require.Equal(t, info, info2)

	// Past its exp (but within the entry's lifetime): refused as expired.
	clock = now.Add(time.Minute)
	_, err = v.verify(tok)
	require.EqualError(t, err, reasonExpired)

	// A bad signature is refused every time and never remembered.
	forged := signed(t, "other", jwt.MapClaims{"sub": "u2", "exp": now.Add(time.Hour).Unix()})
	for range 2 {
		_, err = v.verify(forged)
		require.EqualError(t, err, reasonSignature)
	}
	// Valid only later: not remembered (its not-before is checked anew).
	clock = now
	later := signed(t, secret, jwt.MapClaims{"sub": "u3", "exp": now.Add(time.Hour).Unix(), "nbf": now.Add(time.Hour).Unix()})
	_, err = v.verify(later)
	require.EqualError(t, err, reasonNotYetValid)
	require.Len(t, v.verified, 1)
}

// FuzzTokenClaims: a token's claims either decode with every time claim a
// JSON number (or absent), or are refused; never a panic.
func FuzzTokenClaims(f *testing.F) {
	for _, s := range []string{`{"sub":"u1","exp":1999999999}`, `{"exp":"1999999999"}`, `{"iat":-1,"nbf":1.5}`, `{"exp":null}`, `{"exp":[1]}`, `{"exp":true}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var c tokenClaims
		if json.Unmarshal(data, &c) != nil {
			return
		}
		var raw map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(data, &raw))
		for _, k := range []string{"exp", "iat", "nbf"} {
			if v, ok := raw[k]; ok && string(v) != "null" {
				var n json.Number
				require.NoError(t, json.Unmarshal(v, &n), "%s = %s", k, v)
				require.NotEqual(t, byte('"'), v[0], "%s = %s", k, v)
			}
		}
	})
}

// TestRevocationsView: a token issued at or before the user's last revoke,
// or without an iat, is refused; one issued after is not; an older revoke
// does not move the record back; revokes older than the token lifetime
// are pruned.
func TestRevocationsView(t *testing.T) {
	var r revocations
	r.init(time.Hour)
	at := time.Unix(1_800_000_000, 500_000_000)
	require.False(t, r.refuses("u1", time.Time{}), "nothing on record")
	require.True(t, r.note("u1", at))
	require.False(t, r.note("u1", at.Add(-time.Minute)), "an older revoke changes nothing")
	require.True(t, r.refuses("u1", time.Time{}), "no iat with a revoke on record")
	require.True(t, r.refuses("u1", at))
	require.True(t, r.refuses("u1", at.Truncate(time.Second)), "issued in the revoke's second, before it")
	require.False(t, r.refuses("u1", at.Add(time.Millisecond)))
	require.False(t, r.refuses("u2", at.Add(-time.Hour)))
	r.prune(at.Add(59 * time.Minute))
	require.True(t, r.refuses("u1", at))
	r.prune(at.Add(61 * time.Minute))
	require.False(t, r.refuses("u1", at))
}

// TestVerifiedTokenCacheFull: a full cache is swept of expired entries at
// most once a second, not at every CONNECT (a sweep reads every entry);
// meanwhile new tokens are verified but not remembered, and once a sweep
// makes room they are again.
func TestVerifiedTokenCacheFull(t *testing.T) {
	const secret = "s3cret"
	v, err := newTokenVerifier(Config{JWTSecret: secret})
	require.NoError(t, err)
	v.max = 3
	now := time.Now()
	clock := now
	v.now = func() time.Time { return clock }
	tok := func(i int) string {
		return signed(t, secret, jwt.MapClaims{"sub": "u" + strconv.Itoa(i), "exp": now.Add(time.Hour).Unix()})
	}
	for i := range 3 {
		_, err := v.verify(tok(i))
		require.NoError(t, err)
	}
	for i := 3; i < 50; i++ {
		_, err := v.verify(tok(i))
		require.NoError(t, err, "a full cache still verifies")
	}
	require.Equal(t, 1, v.sweeps, "one sweep for 47 CONNECTs within a second")
	require.Len(t, v.verified, 3)

	// Past the entries' lifetime and a second later: swept, room again.
	clock = now.Add(verifiedTTL + time.Second)
	_, err = v.verify(tok(50))
	require.NoError(t, err)
	require.Equal(t, 2, v.sweeps)
	require.Len(t, v.verified, 1)
}
