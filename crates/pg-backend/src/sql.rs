//! Every statement the backend runs, in one place to read and review (each prepared once per connection). Times go in and out as
//! RFC 3339 text (`$n::text::timestamptz` in, `to_char(... 'UTC' ...)` out), so no driver type mapping
//! stands between the store and the protocol.

/// RFC 3339 in UTC with microseconds, as PostgreSQL keeps them.
macro_rules! rfc3339 {
    ($column:literal) => {
        concat!("to_char(", $column, " at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
    };
}

pub const SCHEMA: &str = include_str!("../schema.sql");

/// A page of users after a cursor (an id), in id order.
pub const USERS_AFTER: &str = "select id, username from users where id > $1 order by id limit $2";

/// Users a name names: username or email in any letter case, or the id itself.
pub const USERS_NAMED: &str = "select id, username from users where lower(username) = lower($1) or lower(email) = lower($1) or id = $1 order by id limit $2";

/// A group by id, else by name in any letter case (one group per name, whatever its case: schema.sql).
pub const GROUP: &str = "select id from groups where id = $1 or lower(name) = lower($1) order by (id = $1) desc limit 1";

/// Members of a group ($1) and, unless $2 (direct only), of its subgroups at any depth, after a cursor.
pub const GROUP_MEMBERS_AFTER: &str = "
    with recursive tree(id) as (
        select $1::text
        union
        select g.id from groups g join tree t on g.parent_id = t.id where not $2
    )
    select distinct u.id, u.username from users u join group_members m on m.user_id = u.id join tree t on t.id = m.group_id
    where u.id > $3 order by u.id limit $4";

pub const USER: &str = "select id, username, enabled, email from users where id = $1";

pub const FACTORS: &str = concat!("select id, kind, type, ", rfc3339!("created_at"), " from factors where user_id = $1 order by id");

/// What a user is signed in with now: live sessions and refresh tokens, and remembered devices.
pub const SESSIONS: &str = "select (select count(*) from sessions where user_id = $1 and expires_at > now()) + (select count(*) from refresh_tokens where user_id = $1 and expires_at > now()) + (select count(*) from remembered_devices where user_id = $1)";

pub const DELETE_FACTOR: &str = "delete from factors where user_id = $1 and id = $2";

/// Each deletes every row of the user's and counts those that were live.
pub const DELETE_SESSIONS: &str = "with gone as (delete from sessions where user_id = $1 returning expires_at) select count(*) filter (where expires_at > now()) from gone";
pub const DELETE_REFRESH_TOKENS: &str = "with gone as (delete from refresh_tokens where user_id = $1 returning expires_at) select count(*) filter (where expires_at > now()) from gone";
pub const DELETE_REMEMBERED_DEVICES: &str = "with gone as (delete from remembered_devices where user_id = $1 returning id) select count(*) from gone";

pub const REQUIRE_ENROLLMENT: &str = "insert into required_enrollments (user_id, kinds) values ($1, $2) on conflict (user_id) do update set kinds = excluded.kinds, since = now()";

/// The first factor created from a time, with the client its enrollment event names.
pub const FIRST_FACTOR_SINCE: &str = concat!(
    "select f.kind, ", rfc3339!("f.created_at"), ", host(e.ip), e.user_agent, e.country, e.asn from factors f ",
    "left join lateral (select ip, user_agent, country, asn from events e where e.user_id = f.user_id and e.type = 'factorEnrolled' and e.factor_kind = f.kind and e.at = f.created_at order by seq desc limit 1) e on true ",
    "where f.user_id = $1 and f.created_at >= $2::text::timestamptz order by f.created_at limit 1"
);

pub const SET_ENABLED: &str = "update users set enabled = $2 where id = $1";

/// Events after a cursor (a transaction and a sequence number), or from a time; optionally until a
/// time and about one user. Only transactions older than every one still running are read: their
/// events are final, and every later event sorts after them.
pub const EVENTS: &str = concat!(
    "select seq, ", rfc3339!("at"), ", user_id, type, factor_kind, host(ip), user_agent, country, asn, tx::text from events ",
    "where (tx, seq) > ($1::text::xid8, $2) and tx < pg_snapshot_xmin(pg_current_snapshot()) ",
    "and at >= coalesce($3::text::timestamptz, '-infinity') and at < coalesce($4::text::timestamptz, 'infinity') and ($5::text is null or user_id = $5) ",
    "order by tx, seq limit $6"
);

/// One live bypass per user: issuing one withdraws the earlier ones (a retried issue leaves one).
pub const WITHDRAW_LIVE_BYPASSES: &str = "update bypass_codes set revoked_at = now() where user_id = $1 and revoked_at is null and used_at is null and expires_at > now()";
pub const ISSUE_BYPASS: &str = concat!("insert into bypass_codes (reference, user_id, code_hash, expires_at) values ($1, $2, $3, now() + make_interval(secs => $4)) returning ", rfc3339!("expires_at"));
pub const BYPASS_USED: &str = "select used_at is not null from bypass_codes where user_id = $1 and reference = $2";
/// Withdraws a bypass that could still be used; one used, expired or withdrawn already is gone.
pub const REVOKE_BYPASS: &str = "update bypass_codes set revoked_at = now() where user_id = $1 and reference = $2 and revoked_at is null and used_at is null and expires_at > now()";
/// Whether a cursor's transaction is one this server could have given: at most the next it would
/// assign (a log's end given out while nothing ran is that one).
pub const CURSOR_POSSIBLE: &str = "select $1::text::xid8 <= pg_snapshot_xmax(pg_current_snapshot())";
/// The log's end: the oldest transaction still running (or the next to start); a reader with nothing
/// to read yet goes on from there.
pub const LOG_END: &str = "select pg_snapshot_xmin(pg_current_snapshot())::text";
pub const LOG_BYPASS_ISSUED: &str = "insert into events (user_id, type) values ($1, 'bypassIssued')";
