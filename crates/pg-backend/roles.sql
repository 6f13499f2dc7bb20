-- The grants of the role mfa-recall-pg-backend connects as beside an existing store (README.md):
-- it reads what a recall needs, never a factor's secret or a token's hash, and makes only the
-- writes a recall makes. Run as the tables' owner, once the role exists
-- (create role mfa_recall_backend login password '…'). tests/protocol.rs runs the backend as it.

-- Reads.
grant select (id, username, email, enabled) on users to mfa_recall_backend;
grant select on groups, group_members, required_enrollments, events to mfa_recall_backend;
grant select (id, user_id, kind, type, created_at) on factors to mfa_recall_backend;
grant select (id, user_id, expires_at) on sessions, refresh_tokens to mfa_recall_backend;
grant select (id, user_id) on remembered_devices to mfa_recall_backend;
grant select (reference, user_id, expires_at, used_at, revoked_at) on bypass_codes to mfa_recall_backend;
-- Revocation: factors one by one, and every session, refresh token and remembered device.
grant delete on factors, sessions, refresh_tokens, remembered_devices to mfa_recall_backend;
-- The next sign-in asks for a new factor; bypass codes (stored hashed).
grant insert, update on required_enrollments, bypass_codes to mfa_recall_backend;
-- Disable and enable (quarantine, onDeadline: Disable), and nothing else of a user.
grant update (enabled) on users to mfa_recall_backend;
-- The triggers on factors record removals in events as the deleting role.
grant insert on events to mfa_recall_backend;
grant usage on sequence events_seq_seq to mfa_recall_backend;
