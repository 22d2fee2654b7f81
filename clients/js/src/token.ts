// Tokens: a string or a function returning one (called again on every
// connect, so a fresh token is used after a reconnect), and a look at the
// token's exp claim, without verifying it, to tell an expiry from a
// revocation: the gateway ends both with the same server disconnect.

export type TokenSource = string | (() => string | Promise<string>);

/** The exp claim of a JWT in ms since the epoch, undefined when unreadable. */
export function tokenExpiry(token: string): number | undefined {
  const part = token.split(".")[1];
  if (!part) return undefined;
  try {
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "="));
    const exp = (JSON.parse(json) as { exp?: unknown }).exp;
    return typeof exp === "number" ? exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * isExpired reports whether token has expired at now, allowing skewMs for a
 * server clock a little ahead of ours.
 */
export function isExpired(token: string, now: number, skewMs = 2000): boolean {
  const exp = tokenExpiry(token);
  return exp !== undefined && exp <= now + skewMs;
}

/**
 * The connect_error messages of the gateway (services/gateway/auth.go) that
 * a fresh token can cure.
 */
export function refreshable(message: string): boolean {
  return message === "token expired" || message === "token not yet valid";
}

/**
 * Whether a connect_error says the token was revoked (issued before the
 * user's last revoke: password changed, account closed). Another token from
 * the same sign-in would be refused too: the user must sign in again.
 */
export function revokedRefusal(message: string): boolean {
  return message.startsWith("token revoked");
}
