//! Outside text shown on one line. Names, ids, label keys and reasons come from the scheduler,
//! from apps' labels and from clients; written raw into a log line or a terminal, a line feed
//! in one forges a line of its own and an escape sequence moves the cursor or recolours what
//! follows. [`escaped`] is the one rule for that, used wherever such text is shown: log
//! lines of rejected input and problems, and the CLI's output.

use std::fmt;

/// `text` as it is shown: control characters (C0, DEL, C1), the Unicode line and paragraph
/// separators and the bidirectional overrides written as Rust escapes (`\n`, `\u{1b}`,
/// `\u{202e}`); everything else as it is. Written without allocating.
pub fn escaped(text: &str) -> Escaped<'_> {
    Escaped(text)
}

/// Whether `c` is shown escaped.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// See [`escaped`].
pub struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        // Runs of plain text in one write; most text has nothing to escape.
        while let Some((at, c)) = rest.char_indices().find(|&(_, c)| hidden(c)) {
            f.write_str(&rest[..at])?;
            write!(f, "{}", c.escape_default())?;
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_separators_and_overrides_are_escaped() {
        let cases = [
            ("plain /app-1.x", "plain /app-1.x"),
            ("a\nforged line", "a\\nforged line"),
            ("\r\t\u{7f}", "\\r\\t\\u{7f}"),
            ("\u{1b}[31mred", "\\u{1b}[31mred"),
            ("\u{85}next", "\\u{85}next"),
            ("x\u{2028}y", "x\\u{2028}y"),
            ("\u{202e}txt.exe", "\\u{202e}txt.exe"),
            ("é ünïcode 名前", "é ünïcode 名前"),
        ];
        for (text, shown) in cases {
            assert_eq!(escaped(text).to_string(), shown, "{text:?}");
        }
    }

    proptest::proptest! {
        /// Whatever the text, what is shown has no character a terminal or a log line would act
        /// on, and text without such characters is shown as it is.
        #[test]
        fn what_is_shown_is_one_inert_line(text in "\\PC*|.*[\\x00-\\x1f\\x7f-\\u{9f}].*") {
            let shown = escaped(&text).to_string();
            proptest::prop_assert!(!shown.chars().any(hidden));
            if !text.chars().any(hidden) {
                proptest::prop_assert_eq!(shown, text);
            }
        }
    }
}
