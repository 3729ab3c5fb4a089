//! A cheap guard against absurdly nested flow collections (`[[[[…`), run before any YAML
//! parser sees the text: the parsers take time that grows with the square of the depth, so a
//! 200 KB file of brackets would keep `spherepipe` busy for minutes before it said anything.

use crate::Pos;

/// Deeper than any pipeline needs (a stage's params nest a few levels), far below where the
/// parsers slow down.
pub const MAX_DEPTH: usize = 64;

/// Where flow collections (`[` / `{`) first nest deeper than `limit`, counting brackets outside
/// comments and quoted strings, or `None`. Line and column are 1-based.
pub fn too_deep(text: &str, limit: usize) -> Option<Pos> {
    let mut depth = 0usize;
    for (i, line) in text.lines().enumerate() {
        let mut quote: Option<char> = None;
        let mut prev = ' ';
        for (col, c) in line.chars().enumerate() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '#') if prev.is_whitespace() => break,
                (None, '\'' | '"') => quote = Some(c),
                (None, '[' | '{') => {
                    depth += 1;
                    if depth > limit {
                        return Some(Pos { line: i + 1, col: col + 1 });
                    }
                }
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                _ => {}
            }
            prev = c;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_flow_brackets_outside_comments_and_strings() {
        assert_eq!(too_deep("a: [[1], {b: [2]}]\n", 3), None);
        assert_eq!(too_deep("a: [[1], {b: [2]}]\n", 2), Some(Pos { line: 1, col: 14 }));
        assert_eq!(too_deep("a: [[[1]]]\n", 2), Some(Pos { line: 1, col: 6 }));
        // Closed brackets free their depth; comments and quoted strings do not count.
        assert_eq!(too_deep("a: [[1]]\nb: [[2]]  # [[[[\nc: '[[[[' \"{{{{\"\n", 2), None);
        assert_eq!(too_deep("x:\n  - [\n    [\n      [0]]]\n", 2), Some(Pos { line: 4, col: 7 }));
    }

    #[test]
    fn a_deep_file_is_caught_at_once() {
        let text = format!("name: x\nstages: {}\n", "[".repeat(100_000));
        assert_eq!(
            too_deep(&text, MAX_DEPTH),
            Some(Pos {
                line: 2,
                col: 9 + MAX_DEPTH
            })
        );
    }
}
