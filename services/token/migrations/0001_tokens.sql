-- The token service's records (DESIGN §3, §6). Only SHA-256 hashes of refresh tokens and codes
-- are stored; access tokens are not stored at all, their revocations are.

-- ES256 signing keys. Private halves are AES-256-GCM encrypted under the key-encryption key
-- (OTESSE_TOKEN_KEK): nonce || ciphertext, with the kid as associated data. "next" is published
-- before it signs; "current" signs; "previous" keys stay published until expires_at, when the
-- last token they signed has expired.
CREATE TABLE token.signing_keys (
    kid          text PRIMARY KEY,
    state        text NOT NULL CHECK (state IN ('next', 'current', 'previous')),
    public_jwk   jsonb NOT NULL,
    private_key  bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    activated_at timestamptz,
    retired_at   timestamptz,
    expires_at   timestamptz,
    CHECK ((state = 'previous') = (expires_at IS NOT NULL))
);
-- At most one next and one current key, whatever replicas do at once.
CREATE UNIQUE INDEX signing_keys_one_per_state ON token.signing_keys (state)
    WHERE state IN ('next', 'current');

-- One authorization a user gave one client: the root of a family of refresh and access tokens.
-- Revocation marks (revoked_at), never deletes; purge removes grants long dead.
CREATE TABLE token.grants (
    grant_id     uuid PRIMARY KEY,
    user_id      text NOT NULL,
    client_id    text NOT NULL,
    scopes       text[] NOT NULL,
    -- SHA-256 of the authorization code it was exchanged for: a replayed code finds its grant.
    code_hash    bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    -- When the newest refresh token of the grant expires.
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz
);
CREATE INDEX grants_user_idx ON token.grants (user_id, created_at DESC);
CREATE INDEX grants_client_idx ON token.grants (client_id);
CREATE INDEX grants_revoked_idx ON token.grants (revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX grants_expires_idx ON token.grants (expires_at);

-- Refresh tokens by hash. A rotated token keeps its row (rotated_at, successor_hash) so that its
-- reuse is recognised; successor_sealed is the pair it was rotated into, encrypted under a key
-- derived from the rotated token itself (readable only by its holder, during the retry window).
CREATE TABLE token.refresh_tokens (
    token_hash       bytea PRIMARY KEY,
    grant_id         uuid NOT NULL REFERENCES token.grants (grant_id) ON DELETE CASCADE,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    rotated_at       timestamptz,
    successor_hash   bytea,
    successor_sealed bytea
);
CREATE INDEX refresh_tokens_grant_idx ON token.refresh_tokens (grant_id);
CREATE INDEX refresh_tokens_expires_idx ON token.refresh_tokens (expires_at);
CREATE INDEX refresh_tokens_sealed_idx ON token.refresh_tokens (rotated_at)
    WHERE successor_sealed IS NOT NULL;

-- Access tokens revoked one by one (RFC 7009), kept until they would have expired anyway.
CREATE TABLE token.revoked_access_tokens (
    jti        text PRIMARY KEY,
    grant_id   uuid NOT NULL,
    client_id  text NOT NULL,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX revoked_access_tokens_expires_idx ON token.revoked_access_tokens (expires_at);
