-- The audit trail: security events (sign-ins, consents, grants revoked, tokens issued, clients
-- changed, signing keys rotated), one row each, never a secret (services/common/audit.py).
--
-- Why this schema is shared, when DESIGN §6 gives each service its own and forbids reading
-- another's: that rule keeps a service's data private to the code that keeps its promises, so
-- no other service can come to depend on its tables or break them. An audit trail is the
-- opposite kind of data: a log that every service appends to and that belongs to no service's
-- model. Giving each service its own events table would scatter one incident over three
-- schemas; routing the events through one service over gRPC would lose the guarantee that
-- matters most, that an event commits in the same transaction (most often the same statement)
-- as the change it records, so neither exists without the other. So the exception is narrow:
--
-- * the services only INSERT here, through services/common/audit.py, inside their own
--   statements; no service's behaviour depends on what is here, so no service couples to
--   another through it;
-- * only the operator CLI (`otesse-auth audit`, `purge`) and the authorize service's app page
--   (the events of an app, for its owner) read it;
-- * rows are append-only: the triggers below refuse UPDATE and TRUNCATE, and DELETE of any row
--   younger than a day, so a compromised service or an injected statement cannot rewrite or
--   erase the recent past; purge deletes by age only. (Run the services under a role with
--   INSERT alone on this table where roles are separate; here they share one.)

CREATE TABLE audit.events (
    event_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Postgres' clock (the transaction's start), so replicas agree on the order of events.
    occurred_at     timestamptz NOT NULL DEFAULT now(),
    event_type      text NOT NULL CHECK (event_type IN (
                        'sign_in.succeeded', 'sign_in.failed', 'sign_in.locked',
                        'consent.granted', 'consent.revoked',
                        'code.replayed', 'refresh_token.reused',
                        'grant.revoked', 'access_token.revoked', 'token.issued',
                        'client.registered', 'client.updated', 'client.deleted',
                        'client.secret_rotated', 'signing_key.rotated')),
    -- Who did it: a user (their user id), a client (its client id), an operator (the CLI:
    -- 'operator'), the system itself (a replica, or the detection of an attack: 'system'), or
    -- a visitor not signed in (a sign-in that failed or was refused: 'anonymous').
    actor_kind      text NOT NULL
                    CHECK (actor_kind IN ('user', 'client', 'operator', 'system', 'anonymous')),
    actor_id        text NOT NULL CHECK (length(actor_id) BETWEEN 1 AND 128),
    -- The user whose account, consent, grant or app the event is about, when there is one.
    subject_user_id text CHECK (length(subject_user_id) <= 128),
    client_id       text CHECK (length(client_id) <= 128),
    grant_id        uuid,
    -- The client's address as the service resolved it through its trusted proxies.
    client_ip       inet,
    -- The request id the gateway gave the request (every service passes it on).
    request_id      text CHECK (length(request_id) <= 128),
    -- A few small facts (grant type, scope, reason, changed fields); never a secret.
    details         jsonb NOT NULL DEFAULT '{}'
                    CHECK (jsonb_typeof(details) = 'object' AND length(details::text) <= 2048)
);

-- What the readers ask, newest first: a time range (and purge, oldest first), one client, one
-- user. Every event is in these.
CREATE INDEX events_time_idx ON audit.events (occurred_at);
CREATE INDEX events_client_idx ON audit.events (client_id, occurred_at);
CREATE INDEX events_subject_idx ON audit.events (subject_user_id, occurred_at);
-- Token issuance is most of the rows (one per code exchange and per refresh) and never what
-- an app's page or a search by type looks for: these two leave it out, so the hot paths do not
-- write them, and finding the few other events of a busy client never walks past its tokens.
CREATE INDEX events_client_security_idx ON audit.events (client_id, occurred_at)
    WHERE event_type <> 'token.issued';
CREATE INDEX events_type_idx ON audit.events (event_type, occurred_at)
    WHERE event_type <> 'token.issued';

CREATE FUNCTION audit.refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Purge removes rows older than the retention (at least a day); nothing else removes any.
    IF TG_OP = 'DELETE' THEN
        IF OLD.occurred_at < now() - interval '1 day' THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION 'audit.events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON audit.events
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER events_never_truncated BEFORE TRUNCATE ON audit.events
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();
