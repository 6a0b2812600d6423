//! Conveniences every caller of a [`Backend`] needs, written once on top of the trait's own
//! methods, so no backend can get them subtly wrong and the trait itself stays small.

use crate::Result;
use crate::backend::{Backend, Meta};
use crate::key::Key;

/// How many names one `list` call asks for while [`BackendExt::list_all`] pages.
const PAGE: usize = 10_000;

/// Extension methods for every [`Backend`].
pub trait BackendExt: Backend {
    /// Reads a whole object; `None` when there is none.
    fn get_opt(&self, key: &Key) -> Result<Option<Vec<u8>>> {
        match self.get(key) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Size and modification time of an object; `None` when there is none.
    fn stat_opt(&self, key: &Key) -> Result<Option<Meta>> {
        match self.stat(key) {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether an object exists at `key`.
    fn exists(&self, key: &Key) -> Result<bool> {
        self.stat_opt(key).map(|m| m.is_some())
    }

    /// Every child name below `prefix`, sorted, paging through [`Backend::list`].
    fn list_all(&self, prefix: &Key) -> Result<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        loop {
            let page = self.list(prefix, out.last().map(String::as_str), PAGE)?;
            let done = page.len() < PAGE;
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }

    /// Whether anything is below `prefix`.
    fn any_below(&self, prefix: &Key) -> Result<bool> {
        self.list(prefix, None, 1).map(|l| !l.is_empty())
    }
}

impl<B: Backend + ?Sized> BackendExt for B {}
