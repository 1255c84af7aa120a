//! The header values an attachment travels with: its `Content-Type`
//! (checked before it is signed into a URL) and the `Content-Disposition`
//! that gives a download its original name.

use crate::StorageError;

/// Longest content type accepted.
const MAX_CONTENT_TYPE: usize = 255;
/// Longest download name put in a header, in characters.
const MAX_NAME_CHARS: usize = 255;

/// Checks that `content_type` is a media type (`type/subtype`, optional
/// parameters) that can travel as a header value and in a signature.
pub fn check_content_type(content_type: &str) -> Result<(), StorageError> {
    let invalid = || StorageError::InvalidContentType(content_type.to_owned());
    if content_type.is_empty()
        || content_type.len() > MAX_CONTENT_TYPE
        || content_type != content_type.trim()
        || !content_type
            .bytes()
            .all(|b| b == b' ' || b.is_ascii_graphic())
    {
        return Err(invalid());
    }
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let (kind, subtype) = essence.split_once('/').ok_or_else(invalid)?;
    if is_token(kind) && is_token(subtype) {
        Ok(())
    } else {
        Err(invalid())
    }
}

/// An RFC 9110 token.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// Whether two content types name the same media type: `type/subtype`
/// compared without case, parameters ignored (`Text/Plain; charset=utf-8`
/// matches `text/plain`).
pub fn essence_matches(a: &str, b: &str) -> bool {
    fn essence(s: &str) -> &str {
        s.split(';').next().unwrap_or_default().trim()
    }
    essence(a).eq_ignore_ascii_case(essence(b))
}

/// `Content-Disposition: attachment` naming the file `name` (RFC 6266 with
/// RFC 8187 for non-ASCII): `attachment; filename="<ascii fallback>";
/// filename*=UTF-8''<percent-encoded>`.
///
/// The name is a display name, never a path: control and bidirectional
/// formatting characters are dropped, `/` and `\` become `_`, and a name left
/// empty or made only of dots becomes `download`. The quoted fallback holds
/// printable ASCII only, with `"`, `\` and `%` (which some browsers decode)
/// replaced by `_`.
pub fn content_disposition(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .filter(|c| !c.is_control() && !is_bidi_control(*c))
        .map(|c| if c == '/' || c == '\\' { '_' } else { c })
        .take(MAX_NAME_CHARS)
        .collect();
    let cleaned = cleaned.trim();
    let cleaned = if cleaned.chars().all(|c| c == '.') {
        "download"
    } else {
        cleaned
    };
    let fallback: String = cleaned
        .chars()
        .map(|c| {
            if c == ' ' || (c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '%')) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::with_capacity(cleaned.len() * 3);
    for b in cleaned.bytes() {
        if is_attr_char(b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// RFC 8187 `attr-char`: what may stand unencoded in `filename*`.
fn is_attr_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#' | b'$' | b'&' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
        )
}

/// Characters that reorder text on screen (`invoice` U+202E `fdp.exe` shows
/// as `invoiceexe.pdf`).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_names_are_kept() {
        assert_eq!(
            content_disposition("report-2024.pdf"),
            "attachment; filename=\"report-2024.pdf\"; filename*=UTF-8''report-2024.pdf"
        );
        assert_eq!(
            content_disposition("my notes.txt"),
            "attachment; filename=\"my notes.txt\"; filename*=UTF-8''my%20notes.txt"
        );
    }

    #[test]
    fn utf8_names_get_an_ascii_fallback_and_an_encoded_form() {
        assert_eq!(
            content_disposition("Отчёт.pdf"),
            "attachment; filename=\"_____.pdf\"; \
             filename*=UTF-8''%D0%9E%D1%82%D1%87%D1%91%D1%82.pdf"
        );
        assert_eq!(
            content_disposition("日本.png"),
            "attachment; filename=\"__.png\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.png"
        );
    }

    #[test]
    fn quotes_backslashes_and_percent_cannot_break_out() {
        let cd = content_disposition("a\"; filename=evil.exe; x=\"b%41.txt");
        assert_eq!(
            cd,
            "attachment; filename=\"a_; filename=evil.exe; x=_b_41.txt\"; \
             filename*=UTF-8''a%22%3B%20filename%3Devil.exe%3B%20x%3D%22b%2541.txt"
        );
        // The value has exactly the two quotes that delimit the fallback.
        assert_eq!(cd.matches('"').count(), 2);
    }

    #[test]
    fn path_tricks_become_plain_names() {
        assert_eq!(
            content_disposition("../x"),
            "attachment; filename=\".._x\"; filename*=UTF-8''.._x"
        );
        assert_eq!(
            content_disposition("a\\b"),
            "attachment; filename=\"a_b\"; filename*=UTF-8''a_b"
        );
        assert_eq!(
            content_disposition("/etc/passwd"),
            "attachment; filename=\"_etc_passwd\"; filename*=UTF-8''_etc_passwd"
        );
        for nothing in ["", "..", ".", "  ", "\r\n", "\u{202E}"] {
            assert_eq!(
                content_disposition(nothing),
                "attachment; filename=\"download\"; filename*=UTF-8''download",
                "{nothing:?}"
            );
        }
    }

    #[test]
    fn control_and_reordering_characters_are_dropped() {
        assert_eq!(
            content_disposition("in\r\nvoice\u{202E}fdp.exe\0"),
            "attachment; filename=\"invoicefdp.exe\"; filename*=UTF-8''invoicefdp.exe"
        );
    }

    #[test]
    fn the_header_value_is_always_visible_ascii() {
        for name in ["Отчёт \"итог\".pdf", "a\tb", "😀.gif", &"x".repeat(1000)] {
            let cd = content_disposition(name);
            assert!(
                cd.bytes().all(|b| b == b' ' || b.is_ascii_graphic()),
                "{cd}"
            );
            assert!(axum::http::HeaderValue::from_str(&cd).is_ok());
        }
        assert!(content_disposition(&"x".repeat(1000)).len() < 600);
    }

    #[test]
    fn content_types_are_checked() {
        for ok in [
            "image/png",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "text/plain; charset=utf-8",
        ] {
            assert!(check_content_type(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "png",
            "image/",
            "/png",
            " image/png",
            "image/png\r\nX-Evil: 1",
            "image /png",
            "image/pn\u{e9}",
            &format!("image/{}", "a".repeat(300)),
        ] {
            assert!(check_content_type(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn media_types_compare_by_essence() {
        assert!(essence_matches("Text/Plain; charset=utf-8", "text/plain"));
        assert!(essence_matches("image/png", "IMAGE/PNG"));
        assert!(!essence_matches("image/png", "image/jpeg"));
        assert!(!essence_matches("image/png", "image/png+x"));
    }
}
