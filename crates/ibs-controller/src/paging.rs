//! Keyset paging of the controller's lists (ADR 0024). A page is asked for with a [`PageRequest`]
//! (how many rows, and the key of the last row already served) and answered with a [`Page`] (the
//! rows, and the key to continue after when more follow). Each list orders its rows by a unique
//! key and selects `key < after` (or `>` for ascending lists) in SQL with `LIMIT limit + 1`, so a
//! page costs the same however long the list, and rows inserted between two page fetches never
//! shift a later page: no row is served twice or skipped.
//!
//! The key is two integers and a text ([`PageKey`]); each list documents what they hold. The API
//! turns a key into an opaque cursor and back (`ibs-api`'s `paging`).

/// The sort key of one row: what a list orders by, unique per row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PageKey {
    pub a: i64,
    pub b: i64,
    pub s: String,
}

impl PageKey {
    pub fn nums(a: i64, b: i64) -> Self {
        PageKey {
            a,
            b,
            s: String::new(),
        }
    }
}

/// Which page: at most `limit` rows after `after` (none: the first page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    pub after: Option<PageKey>,
}

impl PageRequest {
    /// The first `limit` rows.
    pub fn first(limit: u32) -> Self {
        PageRequest { limit, after: None }
    }
    /// The row count to ask SQL for: one more than the page, to learn whether more follow.
    pub(crate) fn fetch(&self) -> i64 {
        i64::from(self.limit) + 1
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The key of the last row served, when more rows follow.
    pub next: Option<PageKey>,
}

impl<T> Page<T> {
    /// Builds the page from up to `limit + 1` keyed rows in list order.
    pub(crate) fn from_rows(mut rows: Vec<(PageKey, T)>, limit: u32) -> Self {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next = if more {
            rows.last().map(|(k, _)| k.clone())
        } else {
            None
        };
        Page {
            items: rows.into_iter().map(|(_, t)| t).collect(),
            next,
        }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next: self.next,
        }
    }
}

/// A page of an in-memory list identified by a unique name per row (the components, kept as one
/// configuration value): the rows after the one named `after.s`, in list order. `None` when that
/// name is no longer in the list (a stale cursor).
pub fn page_by_name<T>(
    items: Vec<T>,
    name: impl Fn(&T) -> &str,
    req: &PageRequest,
) -> Option<Page<T>> {
    let start = match &req.after {
        None => 0,
        Some(k) => items.iter().position(|t| name(t) == k.s)? + 1,
    };
    let rows = items
        .into_iter()
        .skip(start)
        .take(req.limit as usize + 1)
        .map(|t| {
            let k = PageKey {
                s: name(&t).to_string(),
                ..PageKey::default()
            };
            (k, t)
        })
        .collect();
    Some(Page::from_rows(rows, req.limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_rows_sets_next_only_when_more_follow() {
        let rows = |n: i64| (0..n).map(|i| (PageKey::nums(i, 0), i)).collect::<Vec<_>>();
        let p = Page::from_rows(rows(3), 3);
        assert_eq!((p.items.len(), p.next), (3, None));
        let p = Page::from_rows(rows(4), 3);
        assert_eq!(p.items, vec![0, 1, 2]);
        assert_eq!(p.next, Some(PageKey::nums(2, 0)));
    }

    #[test]
    fn by_name_continues_after_the_named_row() {
        let names = vec!["a", "b", "c"];
        let req = PageRequest {
            limit: 2,
            after: None,
        };
        let p = page_by_name(names.clone(), |s| s, &req).unwrap();
        assert_eq!(p.items, vec!["a", "b"]);
        let req = PageRequest {
            limit: 2,
            after: p.next,
        };
        let p = page_by_name(names.clone(), |s| s, &req).unwrap();
        assert_eq!((p.items, p.next), (vec!["c"], None));
        let stale = PageRequest {
            limit: 2,
            after: Some(PageKey {
                s: "gone".into(),
                ..PageKey::default()
            }),
        };
        assert!(page_by_name(names, |s| s, &stale).is_none());
    }
}
