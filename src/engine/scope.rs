//! A recall's scope on one backend, resolved the same way for every provider. The adapter only
//! answers "every user", "who is in this group" and "who is this user"; here the groups and
//! named users are unioned, each user is kept once (by the provider's stable id), every name
//! or group that matched nobody is named, and exclusions are matched on the provider's id and
//! on every name they were given by.

use std::collections::{HashMap, HashSet};

use crate::backends::{ErrorKind, IdentityProvider, Membership, NameMatch, ScopeSelector, Unreadable, UserRef};
use crate::{Error, Result};

/// Named users looked up per page of a listed scope.
const NAMES_PER_PAGE: usize = 100;

/// One page of the scope: users not seen on an earlier page, and names that matched nobody.
#[derive(Debug, Default)]
pub struct ScopePage {
    pub users: Vec<UserRef>,
    /// Records the provider listed that did not decode: those users fail, the page goes on.
    pub unreadable: Vec<Unreadable>,
    /// Each as `user <name>` or `group <name>`.
    pub unresolved: Vec<String>,
    pub next: Option<String>,
}

/// Where a listed scope continues: within the group at `index` (at the provider's cursor, or
/// at its start), or at the name at `index` of the named users. Kept in the ledger as
/// `g:<index>:<cursor>`, `g:<index>` or `u:<index>`.
#[derive(Debug, PartialEq, Eq)]
enum Position {
    Group { index: usize, cursor: Option<String> },
    Names { index: usize },
}

impl Position {
    fn parse(cursor: &str) -> Option<Self> {
        let (part, rest) = cursor.split_once(':')?;
        match part {
            "g" => match rest.split_once(':') {
                Some((index, cursor)) => Some(Position::Group { index: index.parse().ok()?, cursor: Some(cursor.to_string()) }),
                None => Some(Position::Group { index: rest.parse().ok()?, cursor: None }),
            },
            "u" => Some(Position::Names { index: rest.parse().ok()? }),
            _ => None,
        }
    }

    fn encode(&self) -> String {
        match self {
            Position::Group { index, cursor: Some(cursor) } => format!("g:{index}:{cursor}"),
            Position::Group { index, cursor: None } => format!("g:{index}"),
            Position::Names { index } => format!("u:{index}"),
        }
    }

    /// The first position of a listed scope, or the one after the last group.
    fn first(groups: &[String], users: &[String], from_group: usize) -> Option<Self> {
        if from_group < groups.len() {
            Some(Position::Group { index: from_group, cursor: None })
        } else {
            (!users.is_empty()).then_some(Position::Names { index: 0 })
        }
    }
}

/// The page of `scope` at `cursor` (None: the first). `seen` holds the ids of users on earlier
/// pages of a listed scope (rebuilt from the ledger on resume); the users returned are added.
pub async fn next_page(provider: &dyn IdentityProvider, scope: &ScopeSelector, cursor: Option<&str>, seen: &mut HashSet<String>) -> Result<ScopePage> {
    let (groups, users, membership) = match scope {
        ScopeSelector::AllUsers => {
            let page = provider.list_users(cursor).await?;
            return Ok(ScopePage { users: page.users, unreadable: page.unreadable, unresolved: Vec::new(), next: page.next });
        }
        ScopeSelector::Listed { groups, users, membership } => (groups, users, *membership),
    };
    let corrupt = |c: &str| Error::Ledger { name: "scope cursor".into(), message: format!("{c:?} is not a position in this recall's scope") };
    let position = match cursor {
        None => Position::first(groups, users, 0),
        Some(c) => Some(Position::parse(c).ok_or_else(|| corrupt(c))?),
    };
    let mut page = ScopePage::default();
    let (found, next) = match position {
        None => (Vec::new(), None),
        Some(Position::Group { index, cursor: group_cursor }) => {
            let group = groups.get(index).ok_or_else(|| corrupt(cursor.unwrap_or_default()))?;
            match provider.group_members(group, membership, group_cursor.as_deref()).await {
                Ok(members) => {
                    page.unreadable = members.unreadable;
                    let next = match members.next {
                        Some(cursor) => Some(Position::Group { index, cursor: Some(cursor) }),
                        None => Position::first(groups, users, index + 1),
                    };
                    (members.users, next)
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    page.unresolved.push(format!("group {group}"));
                    (Vec::new(), Position::first(groups, users, index + 1))
                }
                Err(e) => return Err(e.into()),
            }
        }
        Some(Position::Names { index }) if index > users.len() => return Err(corrupt(cursor.unwrap_or_default())),
        Some(Position::Names { index }) => {
            let chunk: Vec<&String> = users.iter().skip(index).take(NAMES_PER_PAGE).collect();
            let mut found = Vec::with_capacity(chunk.len());
            for name in &chunk {
                let users = provider.find_user(name).await?;
                if users.is_empty() {
                    page.unresolved.push(format!("user {name}"));
                }
                found.extend(users);
            }
            let next_index = index + chunk.len();
            (found, (next_index < users.len()).then_some(Position::Names { index: next_index }))
        }
    };
    page.users = found.into_iter().filter(|u| seen.insert(u.id.clone())).collect();
    page.next = next.map(|p| p.encode());
    Ok(page)
}

/// The users a recall leaves alone on one backend, each with the rule that spares them.
#[derive(Clone, Debug, Default)]
pub struct Exclusions {
    by_id: HashMap<String, String>,
    /// `exclude.users` names as the provider compares them, for users the lookup did not find
    /// (a name matched against usernames and ids as listed).
    by_name: HashMap<String, String>,
    names: NameMatch,
    /// `exclude.users` names that matched nobody on this backend.
    pub unresolved: Vec<String>,
}

/// The rule that spares users named in `exclude.users`.
const EXCLUDE_USERS: &str = "exclude.users";

impl Exclusions {
    /// Looks up every excluded name and lists every excluded group's members, subgroups always
    /// included (nothing narrows an exclusion). Fails when an exclusion group does not exist:
    /// a recall never runs without the spares it was told about.
    pub async fn resolve(provider: &dyn IdentityProvider, users: &[String], groups: &[String]) -> Result<Self> {
        let names = provider.capabilities().name_match;
        let mut exclusions = Exclusions { names, ..Default::default() };
        for name in users {
            exclusions.by_name.entry(names.key(name)).or_insert_with(|| EXCLUDE_USERS.to_string());
            let users = provider.find_user(name).await?;
            if users.is_empty() {
                exclusions.unresolved.push(format!("{EXCLUDE_USERS}: {name}"));
            }
            for user in users {
                exclusions.by_id.entry(user.id).or_insert_with(|| EXCLUDE_USERS.to_string());
            }
        }
        for group in groups {
            let rule = format!("exclude.groups: {group}");
            let members = match provider.all_group_members(group, Membership::Transitive).await {
                Ok(members) => members,
                Err(e) if e.kind() == ErrorKind::NotFound => return Err(Error::ExclusionGroupNotFound(e.to_string())),
                Err(e) => return Err(e.into()),
            };
            for member in members {
                exclusions.by_id.entry(member.id).or_insert_with(|| rule.clone());
            }
        }
        Ok(exclusions)
    }

    /// The rule that spares `user`, if any.
    pub fn rule_for(&self, user: &UserRef) -> Option<&str> {
        if let Some(rule) = self.by_id.get(&user.id) {
            return Some(rule);
        }
        if self.by_name.is_empty() {
            return None;
        }
        self.by_name.get(&self.names.key(&user.username)).or_else(|| self.by_name.get(&self.names.key(&user.id))).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip() {
        for position in [
            Position::Group { index: 0, cursor: None },
            Position::Group { index: 3, cursor: Some("https://graph/next?$skiptoken=a:b".into()) },
            Position::Group { index: 1, cursor: Some(String::new()) },
            Position::Names { index: 200 },
        ] {
            assert_eq!(Position::parse(&position.encode()), Some(position));
        }
        assert_eq!(Position::parse("17"), None, "a cursor of another scope is refused, not restarted");
    }

    #[test]
    fn a_cursor_that_does_not_move_on_is_refused() {
        let mut cursors = crate::backends::PageCursors::default();
        cursors.remember("a");
        assert!(cursors.take(Some("b")).is_ok());
        assert!(cursors.take(None).is_ok());
        assert!(cursors.take(Some("a")).is_err(), "the cursor just used, again");
        assert!(cursors.take(Some("b")).is_err(), "a cursor that comes back later");
        assert!(cursors.take(Some("")).is_err());
    }

    #[test]
    fn the_first_position_skips_to_named_users_after_the_groups() {
        let (groups, users) = (vec!["a".to_string()], vec!["x".to_string()]);
        assert_eq!(Position::first(&groups, &users, 0), Some(Position::Group { index: 0, cursor: None }));
        assert_eq!(Position::first(&groups, &users, 1), Some(Position::Names { index: 0 }));
        assert_eq!(Position::first(&groups, &[], 1), None);
    }
}
