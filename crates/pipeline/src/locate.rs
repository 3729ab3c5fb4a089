//! Where each key and value of a YAML document sits, so that errors found after parsing
//! (an unknown kind, a missing reference) can still point at a line and column.
//!
//! serde_yaml does the real parsing; this pass re-reads the text with yaml-rust2's event
//! parser, which carries source positions, and records them by key path.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

/// Positions by key path (`["stages", "train", "params", "m"]`).
#[derive(Debug, Default)]
pub struct Locations {
    keys: HashMap<Vec<String>, Pos>,
    values: HashMap<Vec<String>, Pos>,
    /// Mapping keys that appear twice in one mapping: (path of the second one, first pos).
    pub duplicates: Vec<(Vec<String>, Pos, Pos)>,
}

impl Locations {
    /// Position of the key at `path` (falls back to the nearest known ancestor).
    pub fn key(&self, path: &[&str]) -> Option<Pos> {
        self.lookup(&self.keys, path)
    }
    /// Position of the value at `path` (falls back to its key, then ancestors).
    pub fn value(&self, path: &[&str]) -> Option<Pos> {
        let owned: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        self.values.get(&owned).copied().or_else(|| self.key(path))
    }
    fn lookup(&self, map: &HashMap<Vec<String>, Pos>, path: &[&str]) -> Option<Pos> {
        let mut owned: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        loop {
            if let Some(p) = map.get(&owned) {
                return Some(*p);
            }
            owned.pop()?;
        }
    }
}

enum Frame {
    Map {
        path: Vec<String>,
        pending_key: Option<String>,
        seen: HashMap<String, Pos>,
    },
    Seq {
        path: Vec<String>,
        next: usize,
    },
}

struct Recorder {
    stack: Vec<Frame>,
    out: Locations,
}

impl Recorder {
    /// Called at the start of any node: returns the node's path if it is a value.
    fn node_path(&mut self, pos: Pos, scalar: Option<&str>) -> Option<Vec<String>> {
        match self.stack.last_mut() {
            None => Some(Vec::new()),
            Some(Frame::Seq { path, next }) => {
                let mut p = path.clone();
                p.push(next.to_string());
                *next += 1;
                Some(p)
            }
            Some(Frame::Map { path, pending_key, seen }) => match pending_key.take() {
                Some(k) => {
                    let mut p = path.clone();
                    p.push(k);
                    Some(p)
                }
                None => {
                    // This node is a key.
                    let k = scalar.unwrap_or("<complex key>").to_owned();
                    let mut p = path.clone();
                    p.push(k.clone());
                    if let Some(first) = seen.get(&k) {
                        self.out.duplicates.push((p.clone(), pos, *first));
                    } else {
                        seen.insert(k.clone(), pos);
                    }
                    self.out.keys.entry(p).or_insert(pos);
                    *pending_key = Some(k);
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Recorder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos {
            line: mark.line(),
            col: mark.col() + 1,
        };
        match ev {
            Event::Scalar(v, ..) => {
                if let Some(p) = self.node_path(pos, Some(&v)) {
                    self.out.values.entry(p).or_insert(pos);
                }
            }
            Event::Alias(_) => {
                if let Some(p) = self.node_path(pos, None) {
                    self.out.values.entry(p).or_insert(pos);
                }
            }
            Event::MappingStart(..) => {
                let path = self.node_path(pos, None).unwrap_or_default();
                self.out.values.entry(path.clone()).or_insert(pos);
                self.stack.push(Frame::Map {
                    path,
                    pending_key: None,
                    seen: HashMap::new(),
                });
            }
            Event::SequenceStart(..) => {
                let path = self.node_path(pos, None).unwrap_or_default();
                self.out.values.entry(path.clone()).or_insert(pos);
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

/// Records positions of every key and value. Returns an empty index on a syntax error
/// (serde_yaml reports that one, with its own position).
pub fn locate(text: &str) -> Locations {
    let mut rec = Recorder {
        stack: Vec::new(),
        out: Locations::default(),
    };
    let mut parser = Parser::new_from_str(text);
    if parser.load(&mut rec, false).is_err() {
        return Locations::default();
    }
    rec.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_and_flow_positions_are_one_based() {
        let text = "name: x\nstages:\n  a: {kind: gen, params: {n: 3}}\n  b:\n    kind: sum\n    inputs: {x: a}\n";
        let l = locate(text);
        assert_eq!(l.key(&["stages", "a"]), Some(Pos { line: 3, col: 3 }));
        assert_eq!(l.value(&["stages", "a", "kind"]), Some(Pos { line: 3, col: 13 }));
        assert_eq!(l.value(&["stages", "a", "params", "n"]), Some(Pos { line: 3, col: 30 }));
        assert_eq!(l.value(&["stages", "b", "kind"]), Some(Pos { line: 5, col: 11 }));
        assert_eq!(l.value(&["stages", "b", "inputs", "x"]), Some(Pos { line: 6, col: 17 }));
        // Unknown paths fall back to the nearest ancestor key.
        assert_eq!(l.key(&["stages", "b", "params", "zzz"]), Some(Pos { line: 4, col: 3 }));
    }

    #[test]
    fn duplicate_keys_are_found() {
        let l = locate("stages:\n  a: {kind: x}\n  a: {kind: y}\n");
        assert_eq!(l.duplicates.len(), 1);
        assert_eq!(l.duplicates[0].1, Pos { line: 3, col: 3 });
        assert_eq!(l.duplicates[0].2, Pos { line: 2, col: 3 });
    }
}
