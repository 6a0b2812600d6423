//! Retention policies: which of a repository's tags a policy keeps, and why, as a pure function
//! of the tags' facts (where each points, when it was pushed and last pulled).
//!
//! The rules follow zot's retention, with lower-case keys: a policy applies to the
//! repositories its patterns match (where several match, the one with the most specific
//! pattern, as in access rules, and the first in the list among equally specific ones; a
//! repository no policy matches is never touched); within it, a tag is kept if **any** `keeptags` rule keeps
//! it, and a policy without `keeptags` keeps every tag. A rule's `patterns` narrow which tags it
//! looks at; its other keys must all hold: among the `mostrecentlypushedcount` most recently
//! pushed (of the tags it looks at), among the `mostrecentlypulledcount` most recently pulled,
//! pulled within `pulledwithin`, pushed within `pushedwithin`. Equal times are ordered by tag
//! name, so a run decides the same way every time. A tag that points at the image a kept tag
//! points at is kept too: dropping it would free nothing and surprise everyone.
//!
//! This module decides; it removes nothing. A retention run removes what it decides through
//! `delete` (trash entry, audit line), like any other delete.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use berth_oci::{Digest, RepoName, RepoPattern, Tag};

/// The `retention:` settings a server runs with.
#[derive(Debug, Clone, Default)]
pub struct Retention {
    /// In order: the first whose patterns match a repository applies to it.
    pub policies: Vec<RetentionPolicy>,
    /// Report what would go; delete nothing (`retention.dryrun`).
    pub dry_run: bool,
}

/// One retention policy.
#[derive(Debug, Clone)]
pub struct RetentionPolicy {
    /// What the audit log calls it (`retention:<name>`); its position in the list if unnamed.
    pub name: String,
    /// The repositories it applies to.
    pub repositories: Vec<RepoPattern>,
    /// Untagged manifests older than this go (`None`: they stay).
    pub delete_untagged: Option<Duration>,
    /// Referrers whose subject is gone go.
    pub delete_referrers: bool,
    /// A tag is kept if any rule keeps it; no rules keep every tag.
    pub keep_tags: Vec<KeepRule>,
}

/// One `keeptags` rule.
#[derive(Debug, Clone, Default)]
pub struct KeepRule {
    /// The tags the rule looks at (all when empty): a tag matching any of them.
    pub patterns: Vec<regex::Regex>,
    /// Among the this many most recently pushed of the tags it looks at.
    pub most_recently_pushed: Option<usize>,
    /// Among the this many most recently pulled of the tags it looks at.
    pub most_recently_pulled: Option<usize>,
    /// Pulled within this long.
    pub pulled_within: Option<Duration>,
    /// Pushed within this long.
    pub pushed_within: Option<Duration>,
}

/// What is known of one tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFacts {
    /// The tag.
    pub tag: Tag,
    /// The manifest it points at.
    pub digest: Digest,
    /// When it was last pointed somewhere.
    pub pushed: SystemTime,
    /// When it was last pulled, if ever.
    pub pulled: Option<SystemTime>,
}

/// What a policy decides for a tag, and why (in words for the report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// It stays.
    Kept(String),
    /// It goes.
    Dropped(String),
}

impl Fate {
    /// Whether it stays.
    pub fn kept(&self) -> bool {
        matches!(self, Fate::Kept(_))
    }
}

/// The policy that applies to `repo`, with its position: the one with the most specific
/// pattern matching it (as in access rules), the first in the list among equally specific ones.
pub fn policy_for<'a>(policies: &'a [RetentionPolicy], repo: &RepoName) -> Option<(usize, &'a RetentionPolicy)> {
    let mut best: Option<(usize, &RetentionPolicy, _)> = None;
    for (i, p) in policies.iter().enumerate() {
        let Some(s) = p.repositories.iter().filter(|pat| pat.matches(repo)).map(|pat| pat.specificity()).max() else {
            continue;
        };
        if best.as_ref().is_none_or(|(_, _, b)| s > *b) {
            best = Some((i, p, s));
        }
    }
    best.map(|(i, p, _)| (i, p))
}

fn hours(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl KeepRule {
    fn looks_at(&self, tag: &Tag) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| p.is_match(tag.as_str()))
    }

    /// Why this rule keeps each of `tags` it keeps (indexes into `tags`).
    fn keeps(&self, tags: &[TagFacts], now: SystemTime) -> BTreeMap<usize, String> {
        let seen: Vec<usize> = (0..tags.len()).filter(|&i| self.looks_at(&tags[i].tag)).collect();
        let top = |n: usize, key: &dyn Fn(&TagFacts) -> Option<SystemTime>| -> Vec<usize> {
            let mut order = seen.clone();
            // Newest first; never (None) last; equal times by tag name.
            order.sort_by(|&a, &b| {
                (Reverse(key(&tags[a])), &tags[a].tag.as_str()).cmp(&(Reverse(key(&tags[b])), &tags[b].tag.as_str()))
            });
            order.truncate(n);
            order
        };
        let within =
            |t: Option<SystemTime>, d: Duration| t.is_some_and(|t| now.duration_since(t).unwrap_or_default() <= d);
        let pushed_top = self.most_recently_pushed.map(|n| top(n, &|f| Some(f.pushed)));
        let pulled_top = self.most_recently_pulled.map(|n| top(n, &|f| f.pulled));
        let mut out = BTreeMap::new();
        for &i in &seen {
            let f = &tags[i];
            let mut why = Vec::new();
            if !self.patterns.is_empty() {
                let p = self.patterns.iter().find(|p| p.is_match(f.tag.as_str())).expect("looked at");
                why.push(format!("matches {}", p.as_str()));
            }
            if let (Some(n), Some(top)) = (self.most_recently_pushed, &pushed_top) {
                if !top.contains(&i) {
                    continue;
                }
                why.push(format!("among the {n} most recently pushed"));
            }
            if let (Some(n), Some(top)) = (self.most_recently_pulled, &pulled_top) {
                // A tag never pulled is not among the most recently pulled, whatever the count.
                if !top.contains(&i) || f.pulled.is_none() {
                    continue;
                }
                why.push(format!("among the {n} most recently pulled"));
            }
            if let Some(d) = self.pulled_within {
                if !within(f.pulled, d) {
                    continue;
                }
                why.push(format!("pulled within {}", hours(d)));
            }
            if let Some(d) = self.pushed_within {
                if !within(Some(f.pushed), d) {
                    continue;
                }
                why.push(format!("pushed within {}", hours(d)));
            }
            if why.is_empty() {
                why.push("every tag".to_owned());
            }
            out.insert(i, why.join(" and "));
        }
        out
    }
}

/// What `policy` decides for each of a repository's `tags` at `now`, in the order given.
pub fn judge_tags(policy: &RetentionPolicy, tags: &[TagFacts], now: SystemTime) -> Vec<(Tag, Fate)> {
    if policy.keep_tags.is_empty() {
        return tags.iter().map(|f| (f.tag.clone(), Fate::Kept("the policy has no keeptags rules".into()))).collect();
    }
    let mut fates: Vec<Option<Fate>> = vec![None; tags.len()];
    for (r, rule) in policy.keep_tags.iter().enumerate() {
        for (i, why) in rule.keeps(tags, now) {
            if fates[i].is_none() {
                fates[i] = Some(Fate::Kept(format!("keeptags[{r}]: {why}")));
            }
        }
    }
    // A tag sharing its image with a kept tag stays: dropping it frees nothing.
    let kept_images: BTreeMap<&Digest, &Tag> =
        tags.iter().zip(&fates).filter(|(_, f)| f.is_some()).map(|(t, _)| (&t.digest, &t.tag)).collect();
    tags.iter()
        .zip(fates)
        .map(|(f, fate)| {
            let fate = fate.unwrap_or_else(|| match kept_images.get(&f.digest) {
                Some(other) => Fate::Kept(format!("points at the image {other} keeps")),
                None => Fate::Dropped("no keeptags rule keeps it".into()),
            });
            (f.tag.clone(), fate)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn facts(tag: &str, image: &str, pushed_h_ago: u64, pulled_h_ago: Option<u64>) -> TagFacts {
        TagFacts {
            tag: tag.parse().unwrap(),
            digest: Digest::sha256_of(image.as_bytes()),
            pushed: now() - HOUR * pushed_h_ago as u32,
            pulled: pulled_h_ago.map(|h| now() - HOUR * h as u32),
        }
    }

    fn policy(rules: Vec<KeepRule>) -> RetentionPolicy {
        RetentionPolicy {
            name: "0".into(),
            repositories: vec!["team/**".parse().unwrap()],
            delete_untagged: None,
            delete_referrers: false,
            keep_tags: rules,
        }
    }

    fn kept(p: &RetentionPolicy, tags: &[TagFacts]) -> Vec<String> {
        judge_tags(p, tags, now()).into_iter().filter(|(_, f)| f.kept()).map(|(t, _)| t.to_string()).collect()
    }

    #[test]
    fn keep_last_n_by_push_time_breaks_equal_times_by_name() {
        let tags =
            [facts("c", "c", 5, None), facts("b", "b", 1, None), facts("a", "a", 1, None), facts("d", "d", 1, None)];
        let p = policy(vec![KeepRule { most_recently_pushed: Some(2), ..Default::default() }]);
        assert_eq!(kept(&p, &tags), ["b", "a"], "a and b tie at 1 h; by name, a then b, before d");
        // The same input decides the same in any order.
        let mut shuffled = tags.clone();
        shuffled.reverse();
        let mut k = kept(&p, &shuffled);
        k.sort();
        assert_eq!(k, ["a", "b"]);
    }

    #[test]
    fn any_rule_keeps_and_a_rule_s_keys_must_all_hold() {
        let semver = regex::Regex::new(r"^v[0-9]+\.[0-9]+\.[0-9]+$").unwrap();
        let tags = [
            facts("v1.0.0", "r1", 2000, None),
            facts("v1.1.0", "r2", 10, None),
            facts("main-abc", "m1", 1, Some(1)),
            facts("main-old", "m2", 500, Some(2000)),
            facts("pr-7", "p", 300, None),
        ];
        let p = policy(vec![
            KeepRule { patterns: vec![semver.clone()], ..Default::default() },
            KeepRule { pulled_within: Some(HOUR * 720), pushed_within: Some(HOUR * 168), ..Default::default() },
        ]);
        assert_eq!(kept(&p, &tags), ["v1.0.0", "v1.1.0", "main-abc"]);
        // The pattern narrows a count: the newest release only.
        let p = policy(vec![KeepRule { patterns: vec![semver], most_recently_pushed: Some(1), ..Default::default() }]);
        let fates = judge_tags(&p, &tags, now());
        assert_eq!(
            fates[1].1,
            Fate::Kept(r"keeptags[0]: matches ^v[0-9]+\.[0-9]+\.[0-9]+$ and among the 1 most recently pushed".into())
        );
        assert_eq!(fates[0].1, Fate::Dropped("no keeptags rule keeps it".into()));
    }

    #[test]
    fn never_pulled_tags_are_not_among_the_most_recently_pulled() {
        let tags = [facts("a", "a", 1, None), facts("b", "b", 1, Some(3)), facts("c", "c", 1, None)];
        let p = policy(vec![KeepRule { most_recently_pulled: Some(2), ..Default::default() }]);
        assert_eq!(kept(&p, &tags), ["b"]);
    }

    #[test]
    fn a_tag_sharing_an_image_with_a_kept_tag_stays() {
        let tags =
            [facts("latest", "img", 1, None), facts("old-name", "img", 900, None), facts("gone", "x", 900, None)];
        let p = policy(vec![KeepRule { most_recently_pushed: Some(1), ..Default::default() }]);
        let fates = judge_tags(&p, &tags, now());
        assert_eq!(fates[1].1, Fate::Kept("points at the image latest keeps".into()));
        assert!(!fates[2].1.kept());
    }

    #[test]
    fn no_keeptags_keeps_everything_and_the_first_matching_policy_applies() {
        let tags = [facts("a", "a", 9000, None)];
        assert_eq!(kept(&policy(vec![]), &tags), ["a"]);
        let mut second = policy(vec![]);
        second.repositories = vec!["**".parse().unwrap()];
        second.name = "default".into();
        let policies = [policy(vec![KeepRule::default()]), second];
        assert_eq!(policy_for(&policies, &"team/app".parse().unwrap()).map(|(i, _)| i), Some(0));
        assert_eq!(policy_for(&policies, &"other/app".parse().unwrap()).map(|(_, p)| p.name.as_str()), Some("default"));
        assert!(policy_for(&policies[..1], &"other/app".parse().unwrap()).is_none(), "unmatched: never touched");
        // The most specific pattern decides, wherever it is in the list; then the first.
        let reversed = [policies[1].clone(), policies[0].clone()];
        assert_eq!(policy_for(&reversed, &"team/app".parse().unwrap()).map(|(i, _)| i), Some(1), "team/** beats **");
        let mut twin = policies[0].clone();
        twin.name = "twin".into();
        let tied = [policies[0].clone(), twin];
        assert_eq!(policy_for(&tied, &"team/app".parse().unwrap()).map(|(i, _)| i), Some(0), "a tie: the first");
    }
}
