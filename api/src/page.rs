//! Keyset pagination: what a list asks for ([`PageRequest`]) and what it
//! answers ([`Page`]). Cursors are `<rfc3339 timestamp>|<uuid>` (or an id for
//! the audit log), opaque to clients.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;

/// Page size when none is asked for.
pub const DEFAULT_LIMIT: u64 = 50;
/// Largest page served.
pub const MAX_LIMIT: u64 = 200;

/// One page of a list, newest first, and the cursor of the next one.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// A checked page request: its size and where it starts (after `K`).
#[derive(Debug, Clone, Copy)]
pub struct PageRequest<K> {
    pub limit: u64,
    pub after: Option<K>,
}

/// A position in a list ordered by time, then id.
pub type TimeKey = (DateTime<Utc>, Uuid);

impl<K> PageRequest<K> {
    /// Page size from the query, [`DEFAULT_LIMIT`] by default, at most
    /// [`MAX_LIMIT`].
    pub fn new(limit: Option<i64>, after: Option<K>) -> Result<Self, ApiError> {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(n) => u64::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request("invalid_limit", "limit must be between 1 and 200")
                })?,
        };
        Ok(Self { limit, after })
    }

    /// Rows to fetch: one more than the page, to learn whether more follow.
    pub fn fetch(&self) -> u64 {
        self.limit + 1
    }

    /// Trims rows fetched with [`Self::fetch`] to the page and names the
    /// cursor of its last row when more follow.
    pub fn page<T>(&self, mut items: Vec<T>, cursor: impl Fn(&T) -> String) -> Page<T> {
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(cursor)
        } else {
            None
        };
        Page { items, next_cursor }
    }
}

impl PageRequest<TimeKey> {
    /// A request whose cursor is a time key.
    pub fn by_time(limit: Option<i64>, cursor: Option<&str>) -> Result<Self, ApiError> {
        Self::new(limit, cursor.map(decode).transpose()?)
    }
}

fn invalid_cursor() -> ApiError {
    ApiError::bad_request("invalid_cursor", "the cursor is not one this API issued")
}

pub fn encode((at, id): TimeKey) -> String {
    format!(
        "{}|{id}",
        at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    )
}

pub fn decode(raw: &str) -> Result<TimeKey, ApiError> {
    let (at, id) = raw.split_once('|').ok_or_else(invalid_cursor)?;
    let at = DateTime::parse_from_rfc3339(at)
        .map_err(|_| invalid_cursor())?
        .with_timezone(&Utc);
    let id = Uuid::parse_str(id).map_err(|_| invalid_cursor())?;
    Ok((at, id))
}

/// An id cursor (the audit log's).
pub fn decode_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse().map_err(|_| invalid_cursor())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked() {
        assert_eq!(PageRequest::<i64>::new(None, None).unwrap().limit, 50);
        assert_eq!(PageRequest::<i64>::new(Some(200), None).unwrap().limit, 200);
        for bad in [0, -1, 201] {
            assert!(PageRequest::<i64>::new(Some(bad), None).is_err());
        }
    }

    #[test]
    fn a_page_names_its_last_row_only_when_more_follow() {
        let req = PageRequest::<i64>::new(Some(2), None).unwrap();
        let full = req.page(vec![5, 4, 3], i64::to_string);
        assert_eq!(
            (full.items, full.next_cursor),
            (vec![5, 4], Some("4".into()))
        );
        let last = req.page(vec![2, 1], i64::to_string);
        assert_eq!((last.items, last.next_cursor), (vec![2, 1], None));
    }

    #[test]
    fn time_cursors_round_trip_and_refuse_junk() {
        let key = (Utc::now(), Uuid::now_v7());
        let back = decode(&encode(key)).unwrap();
        assert_eq!(back.1, key.1);
        assert_eq!(back.0.timestamp_micros(), key.0.timestamp_micros());
        for junk in ["", "x|y", "2026-01-01T00:00:00Z|nope"] {
            assert!(decode(junk).is_err());
        }
    }
}
