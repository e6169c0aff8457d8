-- When a user last revoked an app (RevokeGrant naming both the user and the client, as the
-- "Authorized apps" page does). An authorization code issued before that moment cannot be
-- exchanged any more, even within its 60 seconds: revoking an app must not leave it a way back.
CREATE TABLE token.authorization_revocations (
    user_id    text NOT NULL,
    client_id  text NOT NULL,
    revoked_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, client_id)
);
