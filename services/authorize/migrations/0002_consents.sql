-- What each user has allowed each app to do, so a repeated request for the same (or fewer)
-- scopes skips the consent screen. Revoking access deletes the row.
CREATE TABLE authorize.consents (
    user_id    uuid NOT NULL REFERENCES authorize.users (user_id) ON DELETE CASCADE,
    client_id  text NOT NULL,
    scopes     text[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, client_id)
);
