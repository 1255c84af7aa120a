//! REST routes, one module per resource.

pub mod conversations;
pub mod health;
pub mod messages;

/// Keyset pagination cursors: `<rfc3339 timestamp>|<uuid>`, opaque to clients.
pub mod cursor {
    use chrono::{DateTime, Utc};
    use uuid::Uuid;

    use crate::error::ApiError;

    pub fn encode(at: DateTime<Utc>, id: Uuid) -> String {
        format!(
            "{}|{id}",
            at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        )
    }

    pub fn decode(raw: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
        let bad =
            || ApiError::bad_request("invalid_cursor", "the cursor is not one this API issued");
        let (at, id) = raw.split_once('|').ok_or_else(bad)?;
        let at = DateTime::parse_from_rfc3339(at)
            .map_err(|_| bad())?
            .with_timezone(&Utc);
        let id = Uuid::parse_str(id).map_err(|_| bad())?;
        Ok((at, id))
    }

    /// Trims a page fetched with `limit + 1` rows to `limit` and returns the
    /// cursor of its last row when more follow.
    pub fn page<T>(
        items: &mut Vec<T>,
        limit: i64,
        key: impl Fn(&T) -> (DateTime<Utc>, Uuid),
    ) -> Option<String> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        if items.len() <= limit {
            return None;
        }
        items.truncate(limit);
        items.last().map(|last| {
            let (at, id) = key(last);
            encode(at, id)
        })
    }

    /// Page size from the query, 50 by default, at most 200.
    pub fn limit(requested: Option<i64>) -> Result<i64, ApiError> {
        match requested {
            None => Ok(50),
            Some(n) if (1..=200).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::bad_request(
                "invalid_limit",
                "limit must be between 1 and 200",
            )),
        }
    }
}
