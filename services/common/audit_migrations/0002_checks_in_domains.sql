-- The rules of 0001 on what a row may hold stay the same; they move from the table's CHECK
-- constraints into domains, because of what every insert paid for them.
--
-- Postgres keeps a table's CHECK constraints as text (a serialized expression tree) and reads
-- them back into expressions, and plans them, in every statement that writes the table. Every
-- code exchange and every refresh writes a token.issued row here, so each of them parsed and
-- planned all seven constraints: 8.7 KB of text, the list of event types byte by byte. A
-- domain's constraints are parsed and planned once per connection and kept in its type cache.
-- Measured with the backends' own CPU time (python -m bench.pg_statements, bench/README.md):
-- the code exchange's statement, 16 at once with synchronous_commit on, 268 µs before and 246
-- after; one event inserted alone, ~130 µs before and ~85 after.
--
-- Where a column's type can change without rebuilding anything, it takes its domain. Changing
-- event_type or client_id would rebuild the two partial indexes, which read event_type in
-- their predicate and client_id as their key: a scan of the whole table under an exclusive
-- lock. Those two keep their type and one small CHECK that casts them to their domains, so
-- what is checked is the domains' cached constraints.
--
-- Nothing here scans or rewrites the table, nor rebuilds an index, whatever its size: the old
-- constraints go first (a column whose type changes has its constraints checked again against
-- every row), the domains have no constraint while the columns change type (one with a
-- constraint makes the change check every row), and the constraints are added NOT VALID
-- (enforced on every row written from now on; the rows already here passed the constraints
-- they replace). tests/common/test_audit_schema.py checks both the rules and that the
-- migration touches no relation. It does take the table's exclusive lock for a moment: it
-- gives up after 5 s rather than queue every insert behind a long reader (the migration Job
-- then fails, and runs again).

SET LOCAL lock_timeout = '5s';

ALTER TABLE audit.events
    DROP CONSTRAINT events_event_type_check,
    DROP CONSTRAINT events_actor_kind_check,
    DROP CONSTRAINT events_actor_id_check,
    DROP CONSTRAINT events_subject_user_id_check,
    DROP CONSTRAINT events_client_id_check,
    DROP CONSTRAINT events_request_id_check,
    DROP CONSTRAINT events_details_check;

CREATE DOMAIN audit.event_type AS text;
CREATE DOMAIN audit.actor_kind AS text;
CREATE DOMAIN audit.actor_id AS text;
-- A user id, a client id, a request id.
CREATE DOMAIN audit.id AS text;
CREATE DOMAIN audit.details AS jsonb;

ALTER TABLE audit.events
    ALTER COLUMN actor_kind TYPE audit.actor_kind,
    ALTER COLUMN actor_id TYPE audit.actor_id,
    ALTER COLUMN subject_user_id TYPE audit.id,
    ALTER COLUMN request_id TYPE audit.id,
    ALTER COLUMN details TYPE audit.details;

ALTER DOMAIN audit.event_type ADD CONSTRAINT event_type_known CHECK (VALUE IN (
    'sign_in.succeeded', 'sign_in.failed', 'sign_in.locked',
    'consent.granted', 'consent.revoked',
    'code.replayed', 'refresh_token.reused',
    'grant.revoked', 'access_token.revoked', 'token.issued',
    'client.registered', 'client.updated', 'client.deleted',
    'client.secret_rotated', 'signing_key.rotated')) NOT VALID;
ALTER DOMAIN audit.actor_kind ADD CONSTRAINT actor_kind_known
    CHECK (VALUE IN ('user', 'client', 'operator', 'system', 'anonymous')) NOT VALID;
ALTER DOMAIN audit.actor_id ADD CONSTRAINT actor_id_length
    CHECK (length(VALUE) BETWEEN 1 AND 128) NOT VALID;
ALTER DOMAIN audit.id ADD CONSTRAINT id_length CHECK (length(VALUE) <= 128) NOT VALID;
ALTER DOMAIN audit.details ADD CONSTRAINT details_small_object
    CHECK (jsonb_typeof(VALUE) = 'object' AND length(VALUE::text) <= 2048) NOT VALID;

ALTER TABLE audit.events ADD CONSTRAINT events_type_and_client_check CHECK (
    event_type::audit.event_type IS NOT NULL
    AND (client_id IS NULL OR client_id::audit.id IS NOT NULL)) NOT VALID;
