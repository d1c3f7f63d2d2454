//! Positions in the plan text: JSON pointers to 1-based line:column, columns
//! counted in characters.

use super::Location;
use jsonc_parser::ast;
use std::path::Path;

/// Byte offsets → line:col, for one text.
pub(crate) struct LineIndex<'t> {
    text: &'t str,
    /// Byte offset where each line starts.
    starts: Vec<usize>,
}

impl<'t> LineIndex<'t> {
    pub(crate) fn new(text: &'t str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, starts }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub(crate) fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let start = self.starts[line];
        let col = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line + 1, col + 1)
    }

    pub(crate) fn location(&self, file: &Path, offset: usize) -> Location {
        let (line, col) = self.line_col(offset);
        Location {
            file: file.to_path_buf(),
            line,
            col,
        }
    }
}

/// Splits a JSON pointer (`/a/0/b~1c`) into unescaped segments.
pub(crate) fn pointer_segments(pointer: &str) -> Vec<String> {
    if pointer.is_empty() {
        return Vec::new();
    }
    pointer
        .trim_start_matches('/')
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// Escapes one segment for a JSON pointer.
pub(crate) fn esc(segment: &str) -> String {
    if segment.contains(['~', '/']) {
        segment.replace('~', "~0").replace('/', "~1")
    } else {
        segment.to_string()
    }
}

/// Byte offset of what `pointer` names in the AST: the value, or with
/// `at_key` the key of the last segment. When the pointer leads nowhere
/// (a missing key), the deepest existing node is used.
pub(crate) fn offset_of(root: &ast::Value<'_>, pointer: &str, at_key: bool) -> usize {
    let segments = pointer_segments(pointer);
    let mut node = root;
    let mut offset = value_start(root);
    let n = segments.len();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == n;
        match node {
            ast::Value::Object(obj) => {
                // The last property of that name: the one that counts.
                let Some(prop) = obj.properties.iter().rev().find(|p| p.name.as_str() == seg)
                else {
                    return offset;
                };
                if last && at_key {
                    return prop.range.start;
                }
                node = &prop.value;
            }
            ast::Value::Array(arr) => {
                let Some(v) = seg.parse::<usize>().ok().and_then(|i| arr.elements.get(i)) else {
                    return offset;
                };
                node = v;
            }
            _ => return offset,
        }
        offset = value_start(node);
    }
    offset
}

fn value_start(v: &ast::Value<'_>) -> usize {
    match v {
        ast::Value::StringLit(x) => x.range.start,
        ast::Value::NumberLit(x) => x.range.start,
        ast::Value::BooleanLit(x) => x.range.start,
        ast::Value::Object(x) => x.range.start,
        ast::Value::Array(x) => x.range.start,
        ast::Value::NullKeyword(x) => x.range.start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters() {
        let t = "ab\n\u{e9}\u{e9}x\n";
        let idx = LineIndex::new(t);
        assert_eq!(idx.line_col(0), (1, 1));
        assert_eq!(idx.line_col(3), (2, 1));
        // 'x' is after two 2-byte characters
        assert_eq!(idx.line_col(7), (2, 3));
    }

    #[test]
    fn pointer_escapes_round_trip() {
        assert_eq!(
            pointer_segments(&format!("/env/{}", esc("a/b~c"))),
            vec!["env", "a/b~c"]
        );
        assert!(pointer_segments("").is_empty());
    }
}
