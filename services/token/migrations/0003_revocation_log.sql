-- The revocation log: every revocation in the order it COMMITTED, so a subscriber of the feed
-- (TokenService.WatchRevocations) can resume from the last id it saw and miss nothing.
--
-- Rows are written by triggers on the tables that record revocations, so no path that revokes
-- (RFC 7009 revocation, Authorized apps, an app deleted, refresh-token reuse, a code replayed,
-- an operator) can skip the log. The triggers are deferred to the commit and take a
-- transaction-level advisory lock there: ids are drawn while the lock is held and the lock is
-- released only once the transaction is visible, so a transaction that commits later always
-- gets larger ids. (Ids drawn when the statement runs would be in start order: a subscriber
-- that has seen id 12 could miss an id 11 committing after it.) Only the commit step of
-- revoking transactions serializes; nothing else takes the lock.
CREATE TABLE token.revocation_log (
    id             bigint PRIMARY KEY,
    -- 'grant': every access token of the grant; 'token': one access token (its jti).
    kind           text NOT NULL CHECK (kind IN ('grant', 'token')),
    value          text NOT NULL,
    -- The expiry of the newest access token the revocation covers: after it, nothing the
    -- revocation covers can validate, so subscribers (and purge) may forget it.
    relevant_until timestamptz NOT NULL,
    logged_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX revocation_log_relevant_idx ON token.revocation_log (relevant_until);
CREATE SEQUENCE token.revocation_log_id_seq AS bigint OWNED BY token.revocation_log.id;

-- The highest id purge has removed: a subscriber whose cursor is below it may have missed
-- rows and starts again from a snapshot.
CREATE TABLE token.revocation_log_horizon (
    only_row       boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    purged_through bigint NOT NULL
);
INSERT INTO token.revocation_log_horizon (purged_through) VALUES (0);

-- Appends one revocation at commit, in commit order (see above), and wakes the feeds.
CREATE FUNCTION token.log_revocation(kind text, value text, relevant_until timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    -- The key is the first 8 bytes (signed) of sha256('otesse-revocation-log'): the log's only lock.
    PERFORM pg_advisory_xact_lock(3719477515487354316);
    new_id := nextval('token.revocation_log_id_seq');
    INSERT INTO token.revocation_log (id, kind, value, relevant_until)
    VALUES (new_id, kind, value, relevant_until);
    -- No payload: identical notifications of one transaction are delivered once, and a feed
    -- reads the tail after its cursor anyway.
    PERFORM pg_notify('otesse_revocations', '');
END
$$;

-- A grant's newest access token was minted when it was created or last refreshed; it lives
-- the access-token lifetime, which the token service gives its sessions as
-- otesse.access_token_ttl (any other session, the longest lifetime allowed: a day), plus the
-- allowance for clocks that disagree (CLOCK_SKEW_SECONDS).
CREATE FUNCTION token.grants_log_revocation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM token.log_revocation('grant', NEW.grant_id::text,
        greatest(NEW.created_at, coalesce(NEW.last_used_at, NEW.created_at))
        + (coalesce(nullif(current_setting('otesse.access_token_ttl', true), ''), '86400')::int
           + 60) * interval '1 second');
    RETURN NULL;
END
$$;

CREATE FUNCTION token.revoked_access_tokens_log_revocation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM token.log_revocation('token', NEW.jti, NEW.expires_at);
    RETURN NULL;
END
$$;

-- A grant becomes revoked by an UPDATE (revoke_grants, a replayed code's upsert). A tombstone
-- (inserted revoked, no user) stands for no grant and no token: nothing to log.
CREATE CONSTRAINT TRIGGER grants_revoked_log AFTER UPDATE OF revoked_at ON token.grants
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL AND NEW.user_id <> '')
    EXECUTE FUNCTION token.grants_log_revocation();
CREATE CONSTRAINT TRIGGER grants_inserted_revoked_log AFTER INSERT ON token.grants
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (NEW.revoked_at IS NOT NULL AND NEW.user_id <> '')
    EXECUTE FUNCTION token.grants_log_revocation();
CREATE CONSTRAINT TRIGGER revoked_access_tokens_log AFTER INSERT ON token.revoked_access_tokens
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    EXECUTE FUNCTION token.revoked_access_tokens_log_revocation();

-- What was revoked before this migration and may still matter, so subscribers see it too.
INSERT INTO token.revocation_log (id, kind, value, relevant_until)
SELECT nextval('token.revocation_log_id_seq'), kind, value, relevant_until FROM (
    SELECT 'grant' AS kind, grant_id::text AS value,
           greatest(created_at, coalesce(last_used_at, created_at))
           + interval '86460 seconds' AS relevant_until, revoked_at AS at
    FROM token.grants WHERE revoked_at IS NOT NULL AND user_id <> ''
    UNION ALL
    SELECT 'token', jti, expires_at, revoked_at FROM token.revoked_access_tokens
) AS revoked
WHERE relevant_until > now()
ORDER BY at;
