//! Rules for names: ids, branch names, relative paths, environment variable names.

pub(super) const ID_RULE: &str =
    "allowed: letters, digits, `.`, `_`, `-`, at most 64, no `..`, not starting with `-` or `.`";

/// Why `id` cannot be a workstream/task/run id (a branch component and a file name).
pub fn id_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        return Some("is empty".into());
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Some(format!("contains {}", describe_char(c)));
    }
    if id.chars().count() > 64 {
        return Some(format!("is {} characters long", id.chars().count()));
    }
    if id.starts_with('-') || id.starts_with('.') {
        return Some(format!("starts with `{}`", &id[..1]));
    }
    if id.contains("..") {
        return Some("contains `..`".into());
    }
    if id.ends_with('.') {
        return Some("ends with `.`".into());
    }
    if id.ends_with(".lock") {
        return Some("ends with `.lock`".into());
    }
    None
}

/// Ids starting with `_` are mpw's own: its setup logs (`_setup1`), gate
/// logs (`logs/_integrate/`) and gate worktrees (`_gate-…`) live beside the
/// plan's ids, so no plan id may take one of their names.
pub(super) fn reserved_problem(kind: &str, id: &str) -> Option<String> {
    id.starts_with('_').then(|| {
        format!(
            "{kind} id `{id}` starts with `_`, which mpw reserves for its own files \
             (setup logs `_setup<n>`, gate logs `_integrate`, gate worktrees `_gate-…`); rename it"
        )
    })
}

fn describe_char(c: char) -> String {
    match c {
        ' ' => "a space".into(),
        c if c.is_control() => format!("control character U+{:04X}", c as u32),
        c => format!("`{c}`"),
    }
}

/// Why `name` is not a valid git branch name (`git check-ref-format --branch`).
pub fn branch_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".into());
    }
    if name == "@" {
        return Some("is `@`".into());
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c.is_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\'))
    {
        return Some(format!("contains {}", describe_char(c)));
    }
    if name.starts_with('-') {
        return Some("starts with `-`".into());
    }
    if name.starts_with('/') || name.ends_with('/') {
        return Some("starts or ends with `/`".into());
    }
    if name.ends_with('.') {
        return Some("ends with `.`".into());
    }
    for bad in ["..", "//", "@{"] {
        if name.contains(bad) {
            return Some(format!("contains `{bad}`"));
        }
    }
    for comp in name.split('/') {
        if comp.starts_with('.') {
            return Some(format!("has a component starting with `.` (`{comp}`)"));
        }
        if comp.ends_with(".lock") {
            return Some(format!("has a component ending with `.lock` (`{comp}`)"));
        }
    }
    None
}

/// Why a path that must stay inside the worktree does not.
pub fn relative_path_problem(p: &str) -> Option<String> {
    let b = p.as_bytes();
    if p.starts_with('/')
        || p.starts_with('\\')
        || (b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic())
    {
        return Some("is absolute; it must be relative to the worktree".into());
    }
    let mut depth = 0i64;
    for comp in p.split(['/', '\\']) {
        match comp {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return Some("escapes the worktree (`..` above its root)".into());
                }
            }
            _ => depth += 1,
        }
    }
    None
}

pub(super) fn env_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.contains('=') {
        Some("contains `=`")
    } else if name.contains('\0') {
        Some("contains a NUL character")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `rule` finds no problem in each of `ok` and one in each of `bad`.
    fn holds(rule: fn(&str) -> Option<String>, ok: &[&str], bad: &[&str]) {
        for ok in ok {
            assert_eq!(rule(ok), None, "{ok}");
        }
        for bad in bad {
            assert!(rule(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn ids() {
        let longest = "x".repeat(64);
        holds(
            id_problem,
            &["WS-1", "T1", "a.b_c-d", &longest, "1"],
            &[
                "", "a/b", "a b", "a..b", "-a", ".a", "a.", "a.lock", "a~", "a^", "a:", "a?", "a*",
                "a[", "a\\", "é",
            ],
        );
        assert!(id_problem(&"x".repeat(65)).is_some());
    }

    #[test]
    fn branches() {
        holds(
            branch_problem,
            &["main", "feature/x", "mpw/run/WS-1", "a.b", "a@b"],
            &[
                "",
                "@",
                "a..b",
                "a//b",
                "/a",
                "a/",
                "a.",
                "a.lock",
                "a/b.lock/c",
                "a@{b",
                "a b",
                "a~1",
                "a^",
                "a:b",
                "a?",
                "a*",
                "a[",
                "a\\b",
                "-a",
                "a/.b",
                "a\u{7}",
            ],
        );
    }

    #[test]
    fn relative_paths() {
        holds(
            relative_path_problem,
            &["", ".", "sub/dir", "a/../b", "a/b/../.."],
            &[
                "/abs",
                "\\abs",
                "C:\\x",
                "..",
                "a/../..",
                "../x",
                "a\\..\\..\\b",
            ],
        );
    }
}
