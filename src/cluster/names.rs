//! Mesos-DNS's naming: Marathon task names and their sanitized DNS labels.

/// Marathon names the tasks of app `/a/b/c` `c.b.a`.
pub fn task_name(app_id: &str) -> String {
    let mut out = Vec::with_capacity(app_id.len());
    for part in app_id.as_bytes().rsplit(|&b| b == b'/') {
        if part.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(b'.');
        }
        out.extend_from_slice(part);
    }
    // Split at an ASCII byte, joined with one: still UTF-8.
    String::from_utf8(out).expect("UTF-8")
}

/// How long a label may be, and whether it must start with a letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelRule {
    /// RFC 1123: `a-z0-9-`, at most 63 characters (Mesos-DNS's default).
    Rfc1123,
    /// RFC 952: at most 24 characters, starting with a letter.
    Rfc952,
}

/// One DNS label from any name, as Mesos-DNS sanitizes it (`labels.RFC1123`/`RFC952`):
/// lowercase; `.` and `_` become `-`; other characters outside `a-z0-9-` are dropped; leading
/// `-` trimmed (and, under RFC 952, leading digits); then cut to the maximum length by
/// [`cut`].
pub fn label(name: &str, rule: LabelRule) -> String {
    let max = match rule {
        LabelRule::Rfc1123 => 63,
        LabelRule::Rfc952 => 24,
    };
    // Byte by byte: a character outside ASCII is dropped, and so is each of its UTF-8 bytes
    // (all >= 0x80), so this is the same as going by characters.
    let mut out = Vec::with_capacity(name.len());
    for b in name.bytes() {
        match b.to_ascii_lowercase() {
            c @ (b'a'..=b'z' | b'0'..=b'9' | b'-') => out.push(c),
            b'.' | b'_' => out.push(b'-'),
            _ => {}
        }
    }
    let start = out
        .iter()
        .position(|&c| !(c == b'-' || (rule == LabelRule::Rfc952 && c.is_ascii_digit())))
        .unwrap_or(out.len());
    out.drain(..start);
    let out = String::from_utf8(out).expect("ASCII");
    if out.len() <= max {
        // Within the limit, the cut only trims trailing `-`.
        let mut out = out;
        out.truncate(out.trim_end_matches('-').len());
        return out;
    }
    cut(&out, max)
}

/// Mesos-DNS's cut of a sanitized label to `max` characters (`trimCut`): when the cut leaves
/// trailing `-`, they go and the room they leave is filled from what follows the cut (its
/// leading `-` skipped): `hello-----…-f` at 24 is `hellof`, not `hello`. One difference: a fill
/// that ends in `-` is trimmed (Mesos-DNS would serve a label ending in `-`).
pub fn cut(label: &str, max: usize) -> String {
    let size = label.len().min(max);
    let head = label[..size].trim_end_matches('-');
    let mut out = head.to_string();
    if head.len() < size {
        let tail = label[size..].trim_start_matches('-');
        out.push_str(&tail[..tail.len().min(size - head.len())]);
        out.truncate(out.trim_end_matches('-').len());
    }
    out
}

/// The SRV service label for a label: `_` + it, which must stay within 63 characters, so a
/// 63-character label is cut to 62 by [`cut`]; the second value says whether it was.
pub fn service_label(label: &str) -> (String, bool) {
    let underscored = |label: &str| {
        let mut out = String::with_capacity(label.len() + 1);
        out.push('_');
        out.push_str(label);
        out
    };
    if label.len() < 63 {
        return (underscored(label), false);
    }
    (underscored(&cut(label, 62)), true)
}

/// A short, stable tag of a task id, to make per-task names unique (`{task}-{tag}-{agent}`).
pub fn tag(task_id: &str) -> String {
    String::from_utf8(tag_bytes(task_id).to_vec()).expect("ASCII")
}

/// [`tag`] as its five ASCII bytes, without allocating.
pub fn tag_bytes(task_id: &str) -> [u8; 5] {
    // FNV-1a: stable across processes and versions, unlike std's hasher.
    let mut hash: u32 = 0x811c9dc5;
    for b in task_id.bytes() {
        hash ^= b as u32;
        hash = hash.wrapping_mul(0x01000193);
    }
    let hash = hash & 0xfffff;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    std::array::from_fn(|i| HEX[(hash >> (4 * (4 - i)) & 0xf) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn marathon_task_names() {
        assert_eq!(task_name("/prod/api"), "api.prod");
        assert_eq!(task_name("/a/b/c"), "c.b.a");
        assert_eq!(task_name("/web"), "web");
    }

    #[test]
    fn mesos_dns_documented_cases() {
        let l = |s| label(s, LabelRule::Rfc1123);
        assert_eq!(l("api.prod"), "api-prod");
        assert_eq!(l("pod_123$abc"), "pod-123abc");
        assert_eq!(l("My_App.Group"), "my-app-group");
        assert_eq!(l("-leading.and.trailing-"), "leading-and-trailing");
        assert_eq!(l("..."), "");
        assert_eq!(l("123app"), "123app");
        let long = "a".repeat(70) + ".b";
        assert_eq!(l(&long), "a".repeat(63));
        let cut_at_dash = "a".repeat(62) + ".bbb";
        assert_eq!(
            l(&cut_at_dash),
            "a".repeat(62) + "b",
            "a cut leaves no trailing dash, and the room is filled from after the cut"
        );
    }

    /// Mesos-DNS's own cases (records/labels/labels_test.go).
    #[test]
    fn mesos_dns_cut_cases() {
        let l = |s| label(s, LabelRule::Rfc952);
        assert_eq!(l("4abc123"), "abc123");
        assert_eq!(l("-4abc123"), "abc123");
        assert_eq!(
            l("fd%gsf---gs7-f$gs--d7fddg-123"),
            "fdgsf---gs7-fgs--d7fddg1"
        );
        assert_eq!(
            l("89fdgsf---gs7-fgs--d7fddg-123"),
            "fdgsf---gs7-fgs--d7fddg1"
        );
        assert_eq!(
            l("89fdgsf---gs7-fgs--d7fddg---123"),
            "fdgsf---gs7-fgs--d7fddg1"
        );
        assert_eq!(l("89fdgsf---gs7-fgs--d7fddg-"), "fdgsf---gs7-fgs--d7fddg");
        assert_eq!(
            l("chronos with a space AND MIXED CASE-2.0.1"),
            "chronoswithaspaceandmixe"
        );
        let dashes = "hello".to_string() + &"-".repeat(56) + "f";
        assert_eq!(l(&dashes), "hellof");
        // A fill that would end in `-` is trimmed.
        assert_eq!(cut(&("a".repeat(61) + "--b-cc"), 63), "a".repeat(61) + "b");
    }

    #[test]
    fn service_labels_stay_within_63() {
        assert_eq!(service_label("api-prod"), ("_api-prod".to_string(), false));
        let (l, cut) = service_label(&"a".repeat(62));
        assert_eq!((l.len(), cut), (63, false));
        let long = "a".repeat(61) + "-b";
        let (l, cut) = service_label(&long);
        assert!(cut && l.len() <= 63 && !l.ends_with('-'), "{l}");
        assert_eq!(l, "_".to_string() + &"a".repeat(61) + "b");
    }

    #[test]
    fn rfc952_mode() {
        let l = |s| label(s, LabelRule::Rfc952);
        assert_eq!(l("123-app.prod"), "app-prod");
        // Mesos-DNS fills the room the trailing `-` left from after the cut.
        assert_eq!(
            l("a-very-long-application-name.group"),
            "a-very-long-applicationn"
        );
    }

    #[test]
    fn tags_are_stable_and_short() {
        assert_eq!(tag("web.1"), tag("web.1"));
        assert_ne!(tag("web.1"), tag("web.2"));
        assert_eq!(tag("x").len(), 5);
    }

    /// The functions as they were written first (by characters, through `format!`), which the
    /// faster ones must equal.
    fn label_by_chars(name: &str, rule: LabelRule) -> String {
        let max = match rule {
            LabelRule::Rfc1123 => 63,
            LabelRule::Rfc952 => 24,
        };
        let out: String = name
            .chars()
            .filter_map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9' | '-') => Some(c),
                '.' | '_' => Some('-'),
                _ => None,
            })
            .collect();
        let leading: &[char] = match rule {
            LabelRule::Rfc1123 => &['-'],
            LabelRule::Rfc952 => &['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'],
        };
        cut(out.trim_start_matches(leading), max)
    }

    fn task_name_by_join(app_id: &str) -> String {
        let mut parts: Vec<&str> = app_id.split('/').filter(|p| !p.is_empty()).collect();
        parts.reverse();
        parts.join(".")
    }

    fn tag_by_format(task_id: &str) -> String {
        let mut hash: u32 = 0x811c9dc5;
        for b in task_id.bytes() {
            hash ^= b as u32;
            hash = hash.wrapping_mul(0x01000193);
        }
        format!("{:05x}", hash & 0xfffff)
    }

    proptest! {
        #[test]
        fn names_are_as_first_written(
            name in "[a-zA-Z0-9._/ $-]{0,100}|.{0,100}|[0-9-]{0,30}[a-z.-]{0,70}",
        ) {
            for rule in [LabelRule::Rfc1123, LabelRule::Rfc952] {
                prop_assert_eq!(label(&name, rule), label_by_chars(&name, rule));
            }
            prop_assert_eq!(task_name(&name), task_name_by_join(&name));
            prop_assert_eq!(tag(&name), tag_by_format(&name));
        }

        #[test]
        fn labels_are_always_valid(name in ".{0,100}") {
            for rule in [LabelRule::Rfc1123, LabelRule::Rfc952] {
                let l = label(&name, rule);
                prop_assert!(l.len() <= 63);
                prop_assert!(l.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-')));
                prop_assert!(!l.starts_with('-') && !l.ends_with('-'));
            }
            prop_assert!(label(&name, LabelRule::Rfc952).len() <= 24);
        }
    }
}
