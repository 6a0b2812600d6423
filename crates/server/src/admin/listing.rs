//! Paging, sorting and filtering, the same way for every admin listing: `n` and `last` as in
//! the registry API, plus `after` (the sort key of `last`) for orders other than by name,
//! `sort`, and the `prefix` and `match` (a [`RepoPattern`]) filters. An answer names its next
//! page with a `Link` header; the CLI follows it, so no answer has to hold a whole listing.
//!
//! Knows nothing of what is listed: callers give the items, their name and their sort key.

use std::collections::HashMap;

use berth_oci::{RepoName, RepoPattern};

use crate::error::ApiError;

/// Page size when the client gives no `n`, and the most it may ask for (as the catalog).
pub const DEFAULT_N: usize = 100;
/// See [`DEFAULT_N`].
pub const MAX_N: usize = 1000;

/// An order of a listing. Names sort up; sizes, counts and times sort down (largest, most,
/// newest first), ties by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// By name.
    Name,
    /// By total size.
    Size,
    /// By shared bytes.
    Shared,
    /// By what deleting frees (`freed` is accepted too, as `berth du` calls it).
    Unique,
    /// By what deleting the image frees.
    ImageUnique,
    /// By number of tags.
    Tags,
    /// By push time.
    Pushed,
}

impl Sort {
    /// The name in a query.
    pub fn as_str(self) -> &'static str {
        match self {
            Sort::Name => "name",
            Sort::Size => "size",
            Sort::Shared => "shared",
            Sort::Unique => "unique",
            Sort::ImageUnique => "image_unique",
            Sort::Tags => "tags",
            Sort::Pushed => "pushed",
        }
    }

    fn parse(s: &str) -> Option<Sort> {
        Some(match s {
            "name" => Sort::Name,
            "size" => Sort::Size,
            "shared" => Sort::Shared,
            "unique" | "freed" => Sort::Unique,
            "image_unique" => Sort::ImageUnique,
            "tags" => Sort::Tags,
            "pushed" => Sort::Pushed,
            _ => return None,
        })
    }
}

/// What page of a listing to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// At most this many items.
    pub n: usize,
    /// Items after this one.
    pub last: Option<String>,
    /// The sort key of `last`, when not sorting by name.
    pub after: Option<u64>,
    /// The order.
    pub sort: Sort,
    /// Only names starting with this.
    pub prefix: Option<String>,
    /// Only repository names matching this.
    pub pattern: Option<RepoPattern>,
    /// Only names containing this, ignoring case (what a person types in a filter box).
    pub contains: Option<String>,
}

impl Default for Listing {
    fn default() -> Self {
        Listing { n: DEFAULT_N, last: None, after: None, sort: Sort::Name, prefix: None, pattern: None, contains: None }
    }
}

/// One page, and the query that gives the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paged<T, N = Listing> {
    /// The answer.
    pub body: T,
    /// The next page, if more follow.
    pub next: Option<N>,
}

impl<T, N> Paged<T, N> {
    /// The same page with its body turned into `U`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Paged<U, N> {
        Paged { body: f(self.body), next: self.next }
    }
}

fn bad(what: String) -> ApiError {
    ApiError::BadRequest(what)
}

/// `n` of a query: the page size, [`DEFAULT_N`] when absent, at most [`MAX_N`].
pub fn page_size(q: &HashMap<String, String>) -> Result<usize, ApiError> {
    match q.get("n") {
        None => Ok(DEFAULT_N),
        Some(s) => Ok(s.parse::<usize>().map_err(|_| ApiError::PaginationNumberInvalid(s.clone()))?.min(MAX_N)),
    }
}

impl Listing {
    /// Reads `n`, `last`, `after`, `sort`, `prefix`, `match` and `contains` from a query, allowing the
    /// orders in `sorts` (the first is the default).
    pub fn from_query(q: &HashMap<String, String>, sorts: &[Sort]) -> Result<Listing, ApiError> {
        let n = page_size(q)?;
        let sort = match q.get("sort") {
            None => sorts[0],
            Some(s) => Sort::parse(s).filter(|s| sorts.contains(s)).ok_or_else(|| {
                let allowed: Vec<&str> = sorts.iter().map(|s| s.as_str()).collect();
                bad(format!("sort must be one of {}, not {s:?}", allowed.join(", ")))
            })?,
        };
        let after = q
            .get("after")
            .map(|a| a.parse::<u64>().map_err(|_| bad(format!("after must be a number, not {a:?}"))))
            .transpose()?;
        let pattern = q.get("match").map(|p| p.parse::<RepoPattern>()).transpose()?;
        Ok(Listing {
            n,
            last: q.get("last").cloned(),
            after,
            sort,
            prefix: q.get("prefix").cloned().filter(|p| !p.is_empty()),
            pattern,
            contains: q.get("contains").map(|c| c.trim().to_lowercase()).filter(|c| !c.is_empty()),
        })
    }

    /// The query naming this page (for a `Link` header).
    pub fn to_query(&self) -> Vec<(&'static str, String)> {
        let mut q = vec![("n", self.n.to_string())];
        if self.sort != Sort::Name {
            q.push(("sort", self.sort.as_str().to_owned()));
        }
        if let Some(l) = &self.last {
            q.push(("last", l.clone()));
        }
        if let Some(a) = self.after {
            q.push(("after", a.to_string()));
        }
        if let Some(p) = &self.prefix {
            q.push(("prefix", p.clone()));
        }
        if let Some(p) = &self.pattern {
            q.push(("match", p.to_string()));
        }
        if let Some(c) = &self.contains {
            q.push(("contains", c.clone()));
        }
        q
    }

    /// Whether a repository (or tag) name passes the filters; `match` only admits repository
    /// names.
    pub fn admits(&self, name: &str) -> bool {
        self.prefix.as_ref().is_none_or(|p| name.starts_with(p.as_str()))
            && self.pattern.as_ref().is_none_or(|p| name.parse::<RepoName>().is_ok_and(|n| p.matches(&n)))
            && self.contains.as_ref().is_none_or(|c| name.to_lowercase().contains(c.as_str()))
    }

    /// Sorts `items`, keeps those after the cursor, and cuts the page. `name` is what `last`
    /// names, `key` what the order sorts by (ignored by name).
    pub fn page<T>(&self, mut items: Vec<T>, name: impl Fn(&T) -> &str, key: impl Fn(&T) -> u64) -> Paged<Vec<T>> {
        let by_name = self.sort == Sort::Name;
        if by_name {
            items.sort_by(|a, b| name(a).cmp(name(b)));
        } else {
            items.sort_by(|a, b| key(b).cmp(&key(a)).then_with(|| name(a).cmp(name(b))));
        }
        let start = match (&self.last, self.after) {
            (None, _) => 0,
            (Some(l), _) if by_name => items.partition_point(|x| name(x) <= l.as_str()),
            (Some(l), Some(k)) => items.partition_point(|x| key(x) > k || (key(x) == k && name(x) <= l.as_str())),
            // A key order without the key: continue after the item of that name, if it is there.
            (Some(l), None) => items.iter().position(|x| name(x) == l.as_str()).map_or(0, |i| i + 1),
        };
        let mut rest: Vec<T> = items.into_iter().skip(start).collect();
        let more = rest.len() > self.n;
        rest.truncate(self.n);
        let next = match rest.last() {
            Some(x) if more => {
                Some(Listing { last: Some(name(x).to_owned()), after: (!by_name).then(|| key(x)), ..self.clone() })
            }
            _ => None,
        };
        Paged { body: rest, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// Pages through everything, as the CLI does; returns the names in order.
    fn all(items: &[(&str, u64)], first: Listing) -> Vec<String> {
        let mut out = Vec::new();
        let mut l = Some(first);
        while let Some(listing) = l {
            let page = listing.page(items.to_vec(), |x| x.0, |x| x.1);
            assert!(page.body.len() <= listing.n);
            out.extend(page.body.iter().map(|x| x.0.to_owned()));
            // What goes over the wire is the query, not the struct.
            l = page.next.map(|n| {
                let back: HashMap<String, String> = n.to_query().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                Listing::from_query(&back, &[Sort::Name, Sort::Size]).unwrap()
            });
        }
        out
    }

    #[test]
    fn paging_by_name_and_by_key_visits_each_item_once_in_order() {
        let items = [("c", 5), ("a", 5), ("e", 1), ("b", 9), ("d", 5)];
        let by_name = Listing { n: 2, ..Listing::default() };
        assert_eq!(all(&items, by_name), ["a", "b", "c", "d", "e"]);
        let by_size = Listing { n: 2, sort: Sort::Size, ..Listing::default() };
        assert_eq!(all(&items, by_size), ["b", "a", "c", "d", "e"], "ties broken by name, across pages");
        let one = Listing { n: 1, sort: Sort::Size, ..Listing::default() };
        assert_eq!(all(&items, one), ["b", "a", "c", "d", "e"]);
    }

    #[test]
    fn queries_are_checked() {
        let l = Listing::from_query(
            &q(&[("n", "5000"), ("sort", "freed"), ("match", "team/**")]),
            &[Sort::Name, Sort::Unique],
        )
        .unwrap();
        assert_eq!((l.n, l.sort), (MAX_N, Sort::Unique));
        assert!(l.admits("team/app") && !l.admits("other/app"));
        for bad in [("n", "-1"), ("sort", "color"), ("sort", "tags"), ("after", "x"), ("match", "A/**")] {
            assert!(Listing::from_query(&q(&[bad]), &[Sort::Name, Sort::Unique]).is_err(), "{bad:?}");
        }
    }
}
