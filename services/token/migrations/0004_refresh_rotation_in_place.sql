-- A rotation updates its old refresh token in place (a HOT update: no new entry in any index).
--
-- The old row's update used to change rotated_at and carry the sealed retry copy
-- (successor_sealed), both named by refresh_tokens_sealed_idx: every rotation wrote a new
-- version of the old row (with the copy, ~1 KB of WAL) and an entry in each of the table's
-- four indexes. Now the copy travels with the successor, inserted anyway (predecessor_sealed),
-- and purge finds expired copies by the successor's creation time; the old row's update only
-- sets rotated_at and successor_hash, which no index names, and a page keeps a tenth free so
-- that the new version fits beside the old one.
--
-- Rolling update: replicas of this version still read a copy an older replica left on the old
-- row (successor_sealed), but an older replica does not read predecessor_sealed. Upgrade from a
-- version before this one with the retry window's rule in mind: while old and new token
-- replicas run side by side, a retry that an old replica answers for a rotation a new replica
-- made is taken for reuse (deploy/README.md, "Upgrading").
ALTER TABLE token.refresh_tokens ADD COLUMN predecessor_sealed bytea;
ALTER TABLE token.refresh_tokens SET (fillfactor = 90);
CREATE INDEX refresh_tokens_predecessor_sealed_idx ON token.refresh_tokens (created_at)
    WHERE predecessor_sealed IS NOT NULL;
DROP INDEX token.refresh_tokens_sealed_idx;

-- A rotation no longer writes the grant (last_used_at stays as the exchange or an older replica
-- left it): the newest access token of a grant was minted with its newest refresh token, so the
-- revocation log (0003) takes the newest of the grant's own times and its refresh tokens'
-- creation to say how long a revoked grant matters.
CREATE OR REPLACE FUNCTION token.grants_log_revocation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM token.log_revocation('grant', NEW.grant_id::text,
        greatest(NEW.created_at, NEW.last_used_at,
                 (SELECT max(r.created_at) FROM token.refresh_tokens r
                  WHERE r.grant_id = NEW.grant_id))
        + (coalesce(nullif(current_setting('otesse.access_token_ttl', true), ''), '86400')::int
           + 60) * interval '1 second');
    RETURN NULL;
END
$$;
