-- Otesse users who sign in to approve apps. Passwords are stored as Argon2id hashes only.
CREATE TABLE authorize.users (
    user_id       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email         text NOT NULL,
    password_hash text NOT NULL,
    disabled_at   timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX users_email_key ON authorize.users (lower(email));
