-- OAuth clients (RFC 6749 §2). Secrets are stored only as SHA-256 hashes: they are 256 random
-- bits, so a fast hash is enough and a leak of this table reveals no usable secret.
CREATE TABLE registry.clients (
    client_id                  text PRIMARY KEY,
    name                       text NOT NULL,
    description                text NOT NULL DEFAULT '',
    redirect_uris              text[] NOT NULL,
    allowed_scopes             text[] NOT NULL,
    client_type                text NOT NULL CHECK (client_type IN ('confidential', 'public')),
    owner_user_id              text NOT NULL,
    logo                       bytea,
    logo_content_type          text,
    logo_sha256                text,
    secret_hash                bytea,
    secret_issued_at           timestamptz,
    previous_secret_hash       bytea,
    previous_secret_expires_at timestamptz,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    CHECK ((client_type = 'confidential') = (secret_hash IS NOT NULL)),
    CHECK ((logo IS NULL) = (logo_content_type IS NULL))
);

CREATE INDEX clients_owner_idx ON registry.clients (owner_user_id, created_at DESC);
