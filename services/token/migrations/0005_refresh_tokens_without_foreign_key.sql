-- Refresh tokens no longer carry a foreign key to their grant: the statements that write them
-- already hold the grant, and purge deletes a grant's tokens with it.
--
-- The key made Postgres run a query of its own for every refresh token inserted (a lookup of
-- the grant with a FOR KEY SHARE lock, through SPI): 9 % of the backends' CPU per code
-- exchange statement and 5 % per rotation (bench.pg_statements), a rotation having just read
-- and locked that very grant FOR SHARE itself. Nothing is lost by dropping it:
--
-- * a code exchange inserts the grant and its first token in one statement (create_grant);
-- * a rotation inserts the successor with the grant id of the row it read, joined to the grant
--   and locked FOR SHARE: a concurrent purge or revocation waits for it, or it does nothing;
-- * purge deletes a grant's refresh tokens in the statement that deletes the grant (what
--   ON DELETE CASCADE did). It deletes a grant only when it is long revoked (a rotation of a
--   revoked grant does nothing) or when none of its tokens is alive (a rotation needs a live
--   token), so no rotation can add a token to a grant purge is deleting;
-- * every read of a refresh token joins its grant: a token whose grant is gone, however that
--   came about, can be neither refreshed nor introspected, and purge removes it at its expiry.
--
-- Dropping the constraint is metadata-only (no row read, no index built); it takes both tables'
-- locks for a moment, and gives up after 5 s rather than queue every writer behind a long
-- reader (the migration Job then fails, and runs again).

SET LOCAL lock_timeout = '5s';

ALTER TABLE token.refresh_tokens DROP CONSTRAINT refresh_tokens_grant_id_fkey;
