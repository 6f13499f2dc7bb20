-- The reference in-house identity store of crates/pg-backend: the tables a typical login service
-- keeps (users, nested groups, factors of several kinds with their creation times, sessions,
-- refresh tokens, remembered devices, one-time bypass codes) and an events table that triggers
-- keep complete, whoever writes the factors. Applied by `mfa-recall-pg-backend --apply-schema`;
-- idempotent.

create table if not exists users (
  id          text primary key,
  username    text not null,
  email       text,
  enabled     boolean not null default true,
  created_at  timestamptz not null default now()
);
-- People type names in any letter case: one user per name, whatever its case.
create unique index if not exists users_username_ci on users (lower(username));
create index if not exists users_email_ci on users (lower(email));

create table if not exists groups (
  id         text primary key,
  name       text not null unique,
  parent_id  text references groups (id) on delete set null
);

-- As for users: one group per name, whatever its case, so a name typed in another case names one group.
create unique index if not exists groups_name_ci on groups (lower(name));

create table if not exists group_members (
  group_id  text not null references groups (id) on delete cascade,
  user_id   text not null references users (id) on delete cascade,
  primary key (group_id, user_id)
);
create index if not exists group_members_user on group_members (user_id);

-- created_at null: a factor from before the store kept creation times (its age is unknown).
create table if not exists factors (
  id          text primary key,
  user_id     text not null references users (id) on delete cascade,
  kind        text not null check (kind in ('totp', 'hotp', 'webauthn', 'passkey', 'recoveryCodes', 'sms', 'email', 'push', 'hardwareToken', 'securityQuestion', 'appPassword')),
  type        text not null,
  secret      bytea,
  created_at  timestamptz
);
create index if not exists factors_user on factors (user_id);

create table if not exists sessions (
  id          text primary key,
  user_id     text not null references users (id) on delete cascade,
  created_at  timestamptz not null default now(),
  expires_at  timestamptz not null
);
create index if not exists sessions_user on sessions (user_id);

create table if not exists refresh_tokens (
  id          text primary key,
  user_id     text not null references users (id) on delete cascade,
  token_hash  text not null,
  expires_at  timestamptz not null
);
create index if not exists refresh_tokens_user on refresh_tokens (user_id);

create table if not exists remembered_devices (
  id          text primary key,
  user_id     text not null references users (id) on delete cascade,
  created_at  timestamptz not null default now()
);
create index if not exists remembered_devices_user on remembered_devices (user_id);

-- Kinds a user must set up at their next sign-in (the login service reads this).
create table if not exists required_enrollments (
  user_id   text primary key references users (id) on delete cascade,
  kinds     text[] not null,
  since     timestamptz not null default now()
);

create table if not exists bypass_codes (
  reference   text primary key,
  user_id     text not null references users (id) on delete cascade,
  code_hash   text not null,
  expires_at  timestamptz not null,
  used_at     timestamptz,
  revoked_at  timestamptz
);

create table if not exists events (
  seq          bigserial primary key,
  at           timestamptz not null default clock_timestamp(),
  user_id      text not null,
  type         text not null,
  factor_kind  text,
  ip           inet,
  user_agent   text,
  country      text,
  asn          integer
);
-- The transaction that wrote the event: readers go through the log in (tx, seq) order and only up
-- to the oldest transaction still running, so an event committed late is never passed over
-- (sequence numbers are taken at insert, not at commit).
alter table events add column if not exists tx xid8 not null default pg_current_xact_id();
create index if not exists events_user_at on events (user_id, at);
create index if not exists events_at on events (at);
create index if not exists events_tx_seq on events (tx, seq);

-- The login service names the client for the log in the transaction that writes the factor
-- (`select set_config('app.client_ip', '203.0.113.9', true)`, and app.user_agent,
-- app.client_country, app.client_asn from its geolocation); unset, they stay null.
create or replace function record_factor_event() returns trigger language plpgsql as $$
begin
  if tg_op = 'INSERT' then
    insert into events (user_id, type, factor_kind, at, ip, user_agent, country, asn)
    values (new.user_id, 'factorEnrolled', new.kind, coalesce(new.created_at, clock_timestamp()),
            nullif(current_setting('app.client_ip', true), '')::inet, nullif(current_setting('app.user_agent', true), ''),
            nullif(current_setting('app.client_country', true), ''), nullif(current_setting('app.client_asn', true), '')::integer);
    return new;
  end if;
  insert into events (user_id, type, factor_kind) values (old.user_id, 'factorRemoved', old.kind);
  return old;
end $$;

drop trigger if exists factors_events on factors;
create trigger factors_events after insert or delete on factors for each row execute function record_factor_event();

-- A factor set up again in place (a new secret, or another kind) is a new factor: its creation
-- time moves to now, so a recall never takes it for one from before its cutoff.
create or replace function renew_rekeyed_factor() returns trigger language plpgsql as $$
declare
  now_ timestamptz := clock_timestamp();
begin
  if new.secret is distinct from old.secret or new.kind is distinct from old.kind then
    new.created_at := now_;
    insert into events (user_id, type, factor_kind, at, ip, user_agent, country, asn)
    values (new.user_id, 'factorEnrolled', new.kind, now_,
            nullif(current_setting('app.client_ip', true), '')::inet, nullif(current_setting('app.user_agent', true), ''),
            nullif(current_setting('app.client_country', true), ''), nullif(current_setting('app.client_asn', true), '')::integer);
  end if;
  return new;
end $$;

drop trigger if exists factors_rekeyed on factors;
create trigger factors_rekeyed before update on factors for each row execute function renew_rekeyed_factor();
