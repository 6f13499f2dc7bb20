//! A recall's scope on one backend, resolved the same way for every provider. The adapter only
//! answers "every user", "who is in this group" and "who is this user"; here the groups and
//! named users are unioned, each user is kept once (by the provider's stable id), every name
//! or group that matched nobody is named, and exclusions are matched on the provider's id and
//! on every name they were given by.

use std::collections::{HashMap, HashSet};

use crate::backends::{IdentityProvider, Membership, NameMatch, ProviderError, ScopeSelector, UserRef};
use crate::{Error, Result};

/// Named users looked up per page of a listed scope.
const NAMES_PER_PAGE: usize = 100;

/// One page of the scope: users not seen on an earlier page, and names that matched nobody.
#[derive(Debug, Default)]
pub struct ScopePage {
    pub users: Vec<UserRef>,
    /// Each as `user <name>` or `group <name>`.
    pub unresolved: Vec<String>,
    pub next: Option<String>,
}

/// Where a listed scope continues: within the group at `index` (at the provider's cursor), or
/// at the name at `index` of the named users. Kept in the ledger as `g:<index>:<cursor>` or
/// `u:<index>`.
#[derive(Debug, PartialEq, Eq)]
enum Position {
    Group { index: usize, cursor: Option<String> },
    Names { index: usize },
}

impl Position {
    fn parse(cursor: &str) -> Option<Self> {
        let (part, rest) = cursor.split_once(':')?;
        match part {
            "g" => {
                let (index, cursor) = rest.split_once(':')?;
                Some(Position::Group { index: index.parse().ok()?, cursor: Some(cursor.to_string()).filter(|c| !c.is_empty()) })
            }
            "u" => Some(Position::Names { index: rest.parse().ok()? }),
            _ => None,
        }
    }

    fn encode(&self) -> String {
        match self {
            Position::Group { index, cursor } => format!("g:{index}:{}", cursor.as_deref().unwrap_or("")),
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
            return Ok(ScopePage { users: page.users, unresolved: Vec::new(), next: page.next });
        }
        ScopeSelector::Listed { groups, users, membership } => (groups, users, *membership),
    };
    let position = match cursor {
        None => Position::first(groups, users, 0),
        Some(c) => Some(Position::parse(c).ok_or_else(|| Error::Ledger { name: "scope cursor".into(), message: format!("{c:?} is not a position in a listed scope") })?),
    };
    let mut page = ScopePage::default();
    let (found, next) = match position {
        None => (Vec::new(), None),
        Some(Position::Group { index, cursor }) => {
            let Some(group) = groups.get(index) else { return Ok(page) };
            match provider.group_members(group, membership, cursor.as_deref()).await {
                Ok(members) => {
                    let next = match members.next {
                        Some(cursor) => Some(Position::Group { index, cursor: Some(cursor) }),
                        None => Position::first(groups, users, index + 1),
                    };
                    (members.users, next)
                }
                Err(ProviderError::NotFound(_)) => {
                    page.unresolved.push(format!("group {group}"));
                    (Vec::new(), Position::first(groups, users, index + 1))
                }
                Err(e) => return Err(e.into()),
            }
        }
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
#[derive(Debug, Default)]
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
        let names = provider.capabilities().names;
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
            let mut cursor = None;
            loop {
                let page = match provider.group_members(group, Membership::Transitive, cursor.as_deref()).await {
                    Ok(page) => page,
                    Err(ProviderError::NotFound(message)) => return Err(Error::ExclusionGroupNotFound(message)),
                    Err(e) => return Err(e.into()),
                };
                for member in page.users {
                    exclusions.by_id.entry(member.id).or_insert_with(|| rule.clone());
                }
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        Ok(exclusions)
    }

    /// The rule that spares `user`, if any.
    pub fn rule_for(&self, user: &UserRef) -> Option<&str> {
        self.by_id
            .get(&user.id)
            .or_else(|| self.by_name.get(&self.names.key(&user.username)))
            .or_else(|| self.by_name.get(&self.names.key(&user.id)))
            .map(String::as_str)
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
            Position::Names { index: 200 },
        ] {
            assert_eq!(Position::parse(&position.encode()), Some(position));
        }
        assert_eq!(Position::parse("17"), None, "a cursor of another scope is refused, not restarted");
    }

    #[test]
    fn the_first_position_skips_to_named_users_after_the_groups() {
        let (groups, users) = (vec!["a".to_string()], vec!["x".to_string()]);
        assert_eq!(Position::first(&groups, &users, 0), Some(Position::Group { index: 0, cursor: None }));
        assert_eq!(Position::first(&groups, &users, 1), Some(Position::Names { index: 0 }));
        assert_eq!(Position::first(&groups, &[], 1), None);
    }
}
