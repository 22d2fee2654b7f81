package gateway

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/roomcast/roomcast/proto"
)

// tokenVerifier checks the JWT a socket presents at CONNECT. Exactly one
// algorithm is accepted, the one its key is for, so a token cannot pick a
// weaker one (alg "none", or HS256 signed with a public key).
type tokenVerifier struct {
	alg    string
	key    any
	parser *jwt.Parser
	// leeway is the clock skew allowed to a token's iat and nbf: a token
	// minted by an issuer whose clock is a little ahead is valid at once.
	// exp gets none (see check).
	leeway time.Duration
	// maxLife is the longest a token may live (Store.MaxTokenLifetime): a
	// revoke is kept that long, so no revoked token may outlive it. Zero:
	// no bound (tests that build a verifier by hand).
	maxLife time.Duration

	// verified remembers tokens whose signature and claims were checked,
	// by their SHA-256: a client reconnecting presents the same token
	// again (socket.io-client re-sends its auth), and parsing and checking
	// it was most of a CONNECT's CPU in a reconnect storm. A hit still
	// checks the expiry against the clock; a token that was refused is
	// never remembered.
	mu       sync.Mutex
	verified map[[sha256.Size]byte]verifiedToken
	max      int              // maxVerified; tests lower it
	swept    time.Time        // the last sweep of verified
	sweeps   int              // how many there were (tests)
	now      func() time.Time // time.Now; tests move it
}

type verifiedToken struct {
	tokenInfo
	// until bounds how long the entry is kept, whatever the token's exp.
	until time.Time
}

// Bounds of the verified-token cache: entries are kept verifiedTTL at
// most (a storm's reconnects come within seconds); past maxVerified
// entries, the expired ones are swept, at most once per sweepEvery (a sweep
// reads every entry: done at each CONNECT of a storm of that many users, it
// would cost more than the parse it saves), and while that is not enough
// nothing more is remembered.
const (
	verifiedTTL = 2 * time.Minute
	maxVerified = 200_000
	sweepEvery  = time.Second
)

// errAlgNotAllowed is returned by the key function for any other algorithm.
var errAlgNotAllowed = errors.New("algorithm not allowed")

func newTokenVerifier(cfg Config) (*tokenVerifier, error) {
	v := &tokenVerifier{leeway: max(cfg.TokenLeeway, 0), maxLife: cfg.Store.MaxTokenLifetime, verified: map[[sha256.Size]byte]verifiedToken{}, max: maxVerified, now: time.Now}
	v.parser = jwt.NewParser(jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithLeeway(v.leeway),
		jwt.WithTimeFunc(func() time.Time { return v.now() }))
	switch {
	case cfg.JWTSecret != "":
		v.alg, v.key = jwt.SigningMethodHS256.Alg(), []byte(cfg.JWTSecret)
	case cfg.JWTPublicKeyFile != "":
		alg, key, err := loadPublicKey(cfg.JWTPublicKeyFile)
		if err != nil {
			return nil, fmt.Errorf("ROOMCAST_JWT_PUBLIC_KEY: %w", err)
		}
		v.alg, v.key = alg, key
	default:
		return nil, fmt.Errorf("ROOMCAST_JWT_SECRET or ROOMCAST_JWT_PUBLIC_KEY: one is required to check tokens")
	}
	return v, nil
}

// loadPublicKey reads a PEM public key: Ed25519 (tokens signed EdDSA) or
// RSA (RS256).
func loadPublicKey(path string) (string, any, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return "", nil, err
	}
	if k, err := jwt.ParseEdPublicKeyFromPEM(pem); err == nil {
		if ek, ok := k.(ed25519.PublicKey); ok {
			return jwt.SigningMethodEdDSA.Alg(), ek, nil
		}
	}
	if k, err := jwt.ParseRSAPublicKeyFromPEM(pem); err == nil {
		return jwt.SigningMethodRS256.Alg(), k, nil
	}
	return "", nil, fmt.Errorf("%s holds no Ed25519 or RSA public key in PEM", path)
}

// authError is a refused token; its reason is what the client's
// connect_error says and the auth-failure metric's label.
type authError struct{ reason string }

func (e *authError) Error() string { return e.reason }

// Reasons a token is refused.
const (
	reasonNoToken     = "no token: send auth.token, an Authorization: Bearer header or ?token="
	reasonMalformed   = "token malformed"
	reasonExpired     = "token expired"
	reasonNotYetValid = "token not yet valid"
	reasonFutureIat   = "token issued in the future (iat is ahead of the server's clock)"
	reasonTimeType    = "token exp, iat and nbf must be numbers (seconds since the Unix epoch)"
	reasonTooLong     = "token lives longer than this server accepts (exp - iat)"
	// clients/js stops as "revoked" on a refusal that starts "token revoked".
	reasonRevoked      = "token revoked: it was issued before the user's last revoke; sign in again"
	reasonSignature    = "token signature invalid"
	reasonAlgorithm    = "token algorithm not allowed"
	reasonNoExp        = "token has no exp"
	reasonNoSub        = "token has no sub"
	reasonBadSub       = "token sub is not a valid user id"
	reasonInvalidToken = "token invalid"
)

// tokenInfo is what a valid token says: its user, its expiry and when it
// was issued (zero when it has no iat).
type tokenInfo struct {
	user string
	exp  time.Time
	iat  time.Time
}

// verify returns what a valid token says, or an *authError.
func (v *tokenVerifier) verify(raw string) (tokenInfo, error) {
	if raw == "" {
		return tokenInfo{}, &authError{reasonNoToken}
	}
	sum := sha256.Sum256([]byte(raw))
	now := v.now()
	v.mu.Lock()
	e, ok := v.verified[sum]
	v.mu.Unlock()
	if ok && now.Before(e.until) {
		if !now.Before(e.exp) {
			return tokenInfo{}, &authError{reasonExpired}
		}
		return e.tokenInfo, nil
	}
	info, nbf, err := v.check(raw, now)
	if err != nil {
		return tokenInfo{}, err
	}
	if nbf.IsZero() || !now.Before(nbf) { // valid from now on: remember it
		v.remember(sum, verifiedToken{tokenInfo: info, until: now.Add(verifiedTTL)}, now)
	}
	return info, nil
}

func (v *tokenVerifier) remember(sum [sha256.Size]byte, e verifiedToken, now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.verified) >= v.max {
		if now.Sub(v.swept) < sweepEvery {
			return
		}
		v.swept = now
		v.sweeps++
		for k, old := range v.verified {
			if !now.Before(old.until) || !now.Before(old.exp) {
				delete(v.verified, k)
			}
		}
		if len(v.verified) >= v.max {
			return
		}
	}
	v.verified[sum] = e
}

// check parses raw and checks its signature and claims at time now: what it
// says and its not-before (zero when absent), or an *authError. iat and nbf
// may be up to the leeway ahead of now; exp may not be behind it at all.
func (v *tokenVerifier) check(raw string, now time.Time) (tokenInfo, time.Time, error) {
	claims := tokenClaims{}
	_, err := v.parser.ParseWithClaims(raw, &claims, func(t *jwt.Token) (any, error) {
		if t.Method == nil || t.Method.Alg() != v.alg {
			return nil, errAlgNotAllowed
		}
		return v.key, nil
	})
	if err != nil {
		reason := reasonInvalidToken
		switch {
		case errors.Is(err, errAlgNotAllowed), errors.Is(err, jwt.ErrTokenUnverifiable):
			reason = reasonAlgorithm
		case errors.Is(err, errTimeType):
			reason = reasonTimeType
		case errors.Is(err, jwt.ErrTokenMalformed):
			reason = reasonMalformed
		case errors.Is(err, jwt.ErrTokenSignatureInvalid):
			reason = reasonSignature
		case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
			reason = reasonNoExp
		case errors.Is(err, jwt.ErrTokenExpired):
			reason = reasonExpired
		case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
			reason = reasonFutureIat
		case errors.Is(err, jwt.ErrTokenNotValidYet):
			reason = reasonNotYetValid
		}
		return tokenInfo{}, time.Time{}, &authError{reason}
	}
	// The parser grants exp the leeway too; a token is not used past its
	// exp here (the socket is closed at exp, so it must not connect after).
	if !now.Before(claims.ExpiresAt.Time) {
		return tokenInfo{}, time.Time{}, &authError{reasonExpired}
	}
	if claims.Subject == "" {
		return tokenInfo{}, time.Time{}, &authError{reasonNoSub}
	}
	if proto.ValidateID(claims.Subject) != nil {
		return tokenInfo{}, time.Time{}, &authError{reasonBadSub}
	}
	info := tokenInfo{user: claims.Subject, exp: claims.ExpiresAt.Time}
	from := now
	if claims.IssuedAt != nil {
		info.iat = claims.IssuedAt.Time
		from = info.iat
	}
	if v.maxLife > 0 && info.exp.Sub(from) > v.maxLife {
		return tokenInfo{}, time.Time{}, &authError{reasonTooLong}
	}
	var nbf time.Time
	if claims.NotBefore != nil {
		nbf = claims.NotBefore.Time
	}
	return info, nbf, nil
}

// errTimeType is a time claim that is not a JSON number.
var errTimeType = errors.New("time claim is not a number")

// tokenClaims are the registered claims, read strictly: jwt's NumericDate
// takes "exp":"1999999999" (a string) as well as the number, and a token
// whose times are strings is not what RFC 7519 calls a NumericDate.
type tokenClaims struct {
	jwt.RegisteredClaims
}

func (c *tokenClaims) UnmarshalJSON(b []byte) error {
	var times struct {
		Exp json.RawMessage `json:"exp"`
		Iat json.RawMessage `json:"iat"`
		Nbf json.RawMessage `json:"nbf"`
	}
	if err := json.Unmarshal(b, &times); err != nil {
		return err
	}
	for _, t := range []json.RawMessage{times.Exp, times.Iat, times.Nbf} {
		if len(t) > 0 && string(t) != "null" && t[0] != '-' && (t[0] < '0' || t[0] > '9') {
			return errTimeType
		}
	}
	return json.Unmarshal(b, &c.RegisteredClaims)
}

// idAlphabet makes socket and engine ids that are valid proto ids (so a
// socket id can name a client room) and URL-safe.
const idAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// randomID is n characters from idAlphabet, from crypto/rand: socket ids
// name client rooms, so they must not be guessable.
func randomID(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("gateway: crypto/rand: %v", err))
	}
	for i := range b {
		// 256 % 62 leaves a small bias; with 20 characters the id still
		// carries more than 110 bits.
		b[i] = idAlphabet[int(b[i])%len(idAlphabet)]
	}
	return string(b)
}
