//! Object keys: chosen by the server, checked once, then safe to use as an
//! S3 key, a path below the local root and a URL path alike.

use std::fmt;

/// Longest key accepted (S3 allows 1024 bytes).
const MAX_LEN: usize = 512;

/// A checked object key such as `attachments/<uuid>`: slash-separated
/// segments of ASCII letters, digits, `-`, `_` and `.`; no empty segment, no
/// `..` anywhere, no leading or trailing `/`, no backslash, no NUL.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey(String);

/// Why a string is not an [`ObjectKey`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("object key is empty")]
    Empty,
    #[error("object key is longer than {MAX_LEN} bytes")]
    TooLong,
    #[error("object key must not start or end with '/' or hold an empty segment")]
    EmptySegment,
    #[error("object key must not contain '..'")]
    DotDot,
    #[error("object key must not contain {0:?}")]
    ForbiddenChar(char),
}

impl ObjectKey {
    pub fn new(key: impl Into<String>) -> Result<Self, KeyError> {
        let key = key.into();
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if key.len() > MAX_LEN {
            return Err(KeyError::TooLong);
        }
        if let Some(c) = key.chars().find(|c| !is_key_char(*c)) {
            return Err(KeyError::ForbiddenChar(c));
        }
        if key.contains("..") {
            return Err(KeyError::DotDot);
        }
        if key
            .split('/')
            .any(|segment| segment.is_empty() || segment == ".")
        {
            return Err(KeyError::EmptySegment);
        }
        Ok(Self(key))
    }

    /// The key of an uploaded attachment: `attachments/<id>`.
    pub fn attachment(id: impl fmt::Display) -> Result<Self, KeyError> {
        Self::new(format!("attachments/{id}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The same key as an `object_store` path (its rules are looser than
    /// ours, so this cannot fail).
    pub(crate) fn to_path(&self) -> object_store::path::Path {
        object_store::path::Path::from_iter(self.0.split('/'))
    }
}

/// The characters a key may hold (`/` separates segments).
fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectKey({:?})", self.0)
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_chosen_keys_are_accepted() {
        for ok in [
            "attachments/0190e4b2-7c1a-7cc4-9a51-2f4b6c0d8e11",
            "inbound/-1001234567/42/0",
            "a",
            "a.b/c_d-e",
        ] {
            let key = ObjectKey::new(ok).unwrap();
            assert_eq!(key.as_str(), ok);
            assert_eq!(key.to_path().as_ref(), ok);
        }
        assert_eq!(
            ObjectKey::attachment("0190e4b2-7c1a-7cc4-9a51-2f4b6c0d8e11")
                .unwrap()
                .as_str(),
            "attachments/0190e4b2-7c1a-7cc4-9a51-2f4b6c0d8e11"
        );
    }

    #[test]
    fn traversal_and_odd_characters_are_refused() {
        let cases: &[(&str, KeyError)] = &[
            ("", KeyError::Empty),
            ("../etc/passwd", KeyError::DotDot),
            ("attachments/../x", KeyError::DotDot),
            ("attachments/..", KeyError::DotDot),
            ("a..b", KeyError::DotDot),
            ("/attachments/x", KeyError::EmptySegment),
            ("attachments/x/", KeyError::EmptySegment),
            ("attachments//x", KeyError::EmptySegment),
            ("attachments/./x", KeyError::EmptySegment),
            ("attachments\\x", KeyError::ForbiddenChar('\\')),
            ("attachments/x\0", KeyError::ForbiddenChar('\0')),
            ("attachments/x y", KeyError::ForbiddenChar(' ')),
            ("attachments/x%2F", KeyError::ForbiddenChar('%')),
            ("attachments/x#1", KeyError::ForbiddenChar('#')),
            ("attachments/x?a", KeyError::ForbiddenChar('?')),
            ("attachments/é", KeyError::ForbiddenChar('é')),
            ("attachments/x\n", KeyError::ForbiddenChar('\n')),
        ];
        for (bad, why) in cases {
            assert_eq!(ObjectKey::new(*bad).unwrap_err(), *why, "{bad:?}");
        }
        assert_eq!(
            ObjectKey::new("a".repeat(MAX_LEN + 1)).unwrap_err(),
            KeyError::TooLong
        );
        assert!(ObjectKey::new("a".repeat(MAX_LEN)).is_ok());
    }
}
