//! The `access:` section: who may pull, push and delete in which repositories, and who is an
//! admin. Modelled on zot's access control with Docker's actions:
//!
//! ```yaml
//! access:
//!   repositories:
//!     "team/**":
//!       policies:
//!         - users: [ci]
//!           actions: [pull, push]
//!       default: [pull]      # any authenticated user
//!       anonymous: []        # no login
//!   admins: [alice]          # every action everywhere, plus the admin API's writes
//! ```
//!
//! For a repository, the most specific pattern that matches decides (the one with the most
//! literal characters; then the fewest wildcards; then the first in name order). A caller who
//! did not sign in has its `anonymous` rights; a signed-in user has those too, plus the union of
//! the policies naming them, or else `default`. A repository no pattern matches grants nothing.
//! Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};

use berth_oci::{RepoName, RepoPattern};

use super::action::Action;

/// One pattern's rules, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSpec {
    /// `(users, actions)` pairs.
    pub policies: Vec<(Vec<String>, Vec<String>)>,
    /// Rights of any signed-in user the policies do not name.
    pub default: Vec<String>,
    /// Rights of a caller who did not sign in.
    pub anonymous: Vec<String>,
}

#[derive(Debug, Clone)]
struct Rule {
    pattern: RepoPattern,
    users: Vec<(BTreeSet<String>, BTreeSet<Action>)>,
    default: BTreeSet<Action>,
    anonymous: BTreeSet<Action>,
}

impl Rule {
    fn specificity(&self) -> (usize, std::cmp::Reverse<usize>) {
        self.pattern.specificity()
    }
}

/// The access policy.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<Rule>,
    admins: BTreeSet<String>,
}

fn actions(list: &[String], where_: &str) -> Result<BTreeSet<Action>, String> {
    let mut out = BTreeSet::new();
    for a in list {
        out.extend(
            Action::parse_list(a).ok_or_else(|| format!("{where_}: unknown action {a:?} (pull, push, delete or *)"))?,
        );
    }
    Ok(out)
}

impl Policy {
    /// Checks and builds a policy from the section's patterns and admins.
    pub fn new(repositories: &BTreeMap<String, RuleSpec>, admins: &[String]) -> Result<Policy, String> {
        let mut rules = Vec::new();
        for (pattern, spec) in repositories {
            let at = format!("access.repositories.{pattern:?}");
            let users = spec
                .policies
                .iter()
                .enumerate()
                .map(|(i, (users, acts))| {
                    if users.is_empty() {
                        return Err(format!("{at}.policies[{i}]: users is empty"));
                    }
                    Ok((users.iter().cloned().collect(), actions(acts, &format!("{at}.policies[{i}]"))?))
                })
                .collect::<Result<_, String>>()?;
            rules.push(Rule {
                pattern: pattern.parse().map_err(|e| format!("{at}: {e}"))?,
                users,
                default: actions(&spec.default, &format!("{at}.default"))?,
                anonymous: actions(&spec.anonymous, &format!("{at}.anonymous"))?,
            });
        }
        // Most specific first; stable, so name order breaks ties.
        rules.sort_by_key(|r| std::cmp::Reverse(r.specificity()));
        Ok(Policy { rules, admins: admins.iter().cloned().collect() })
    }

    /// Whether `user` is an admin.
    pub fn is_admin(&self, user: Option<&str>) -> bool {
        user.is_some_and(|u| self.admins.contains(u))
    }

    /// What `user` (`None`: not signed in) may do in `repo`.
    pub fn allowed(&self, user: Option<&str>, repo: &RepoName) -> BTreeSet<Action> {
        if self.is_admin(user) {
            return [Action::Pull, Action::Push, Action::Delete].into();
        }
        let Some(rule) = self.rules.iter().find(|r| r.pattern.matches(repo)) else { return BTreeSet::new() };
        let mut rights = rule.anonymous.clone();
        if let Some(u) = user {
            let mut named = rule.users.iter().filter(|(users, _)| users.contains(u)).peekable();
            if named.peek().is_none() {
                rights.extend(rule.default.iter().copied());
            } else {
                rights.extend(named.flat_map(|(_, a)| a.iter().copied()));
            }
        }
        rights
    }

    /// Whether a caller who did not sign in may do anything anywhere (then the catalog and the
    /// admin listings answer them, with what they may pull).
    pub fn anonymous_anywhere(&self) -> bool {
        self.rules.iter().any(|r| !r.anonymous.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(policies: &[(&[&str], &[&str])], default: &[&str], anonymous: &[&str]) -> RuleSpec {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        RuleSpec {
            policies: policies.iter().map(|(u, a)| (s(u), s(a))).collect(),
            default: s(default),
            anonymous: s(anonymous),
        }
    }

    #[test]
    fn the_most_specific_pattern_decides() {
        use Action::*;
        let mut repos = BTreeMap::new();
        repos.insert(
            "team/**".to_owned(),
            spec(&[(&["ci"], &["pull", "push"]), (&["janitor"], &["pull", "delete"])], &["pull"], &[]),
        );
        repos.insert("team/secret".to_owned(), spec(&[(&["ci"], &["pull"])], &[], &[]));
        repos.insert("public/**".to_owned(), spec(&[], &["pull", "push"], &["pull"]));
        repos.insert("**".to_owned(), spec(&[], &["pull"], &[]));
        let p = Policy::new(&repos, &["alice".to_owned()]).unwrap();
        let n = |s: &str| s.parse::<RepoName>().unwrap();
        let set = |a: &[Action]| a.iter().copied().collect::<BTreeSet<_>>();
        assert_eq!(p.allowed(Some("ci"), &n("team/app")), set(&[Pull, Push]));
        assert_eq!(p.allowed(Some("janitor"), &n("team/a/b")), set(&[Pull, Delete]));
        assert_eq!(p.allowed(Some("bob"), &n("team/app")), set(&[Pull]), "default");
        assert_eq!(p.allowed(None, &n("team/app")), set(&[]));
        assert_eq!(p.allowed(Some("ci"), &n("team/secret")), set(&[Pull]), "the exact name beats team/**");
        assert_eq!(p.allowed(Some("bob"), &n("team/secret")), set(&[]));
        assert_eq!(p.allowed(None, &n("public/x")), set(&[Pull]));
        assert_eq!(p.allowed(Some("ci"), &n("public/x")), set(&[Pull, Push]), "signed in: anonymous rights too");
        assert_eq!(p.allowed(Some("bob"), &n("other")), set(&[Pull]), "** catches the rest");
        assert_eq!(p.allowed(Some("alice"), &n("team/secret")), set(&[Pull, Push, Delete]), "admins");
        assert!(p.is_admin(Some("alice")) && !p.is_admin(Some("ci")) && !p.is_admin(None));
        assert!(p.anonymous_anywhere());
        let none = Policy::new(&BTreeMap::new(), &[]).unwrap();
        assert_eq!(none.allowed(Some("bob"), &n("a")), set(&[]), "no pattern, no rights");
    }

    #[test]
    fn mistakes_are_reported_with_where_they_are() {
        let mut repos = BTreeMap::new();
        repos.insert("team/**".to_owned(), spec(&[(&["ci"], &["pull", "publish"])], &[], &[]));
        let e = Policy::new(&repos, &[]).unwrap_err();
        assert!(e.contains("team/**") && e.contains("publish"), "{e}");
        let mut repos = BTreeMap::new();
        repos.insert("Team/**".to_owned(), spec(&[], &[], &[]));
        assert!(Policy::new(&repos, &[]).is_err());
    }
}
