package gateway

import (
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
	user, exp, err := v.verify(tok)
	require.NoError(t, err)
	require.Equal(t, "u1", user)
	require.Len(t, v.verified, 1)
	user2, exp2, err := v.verify(tok)
	require.NoError(t, err)
	require.Equal(t, user, user2)
	require.Equal(t, exp, exp2)

	// Past its exp (but within the entry's lifetime): refused as expired.
	clock = now.Add(time.Minute)
	_, _, err = v.verify(tok)
	require.EqualError(t, err, reasonExpired)

	// A bad signature is refused every time and never remembered.
	forged := signed(t, "other", jwt.MapClaims{"sub": "u2", "exp": now.Add(time.Hour).Unix()})
	for range 2 {
		_, _, err = v.verify(forged)
		require.EqualError(t, err, reasonSignature)
	}
	// Valid only later: not remembered (its not-before is checked anew).
	clock = now
	later := signed(t, secret, jwt.MapClaims{"sub": "u3", "exp": now.Add(time.Hour).Unix(), "nbf": now.Add(time.Hour).Unix()})
	_, _, err = v.verify(later)
	require.EqualError(t, err, reasonNotYetValid)
	require.Len(t, v.verified, 1)
}
