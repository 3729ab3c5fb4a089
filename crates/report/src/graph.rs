//! The DAG as an SVG: stages grouped (a matrix's expansions become one node), ranked and
//! ordered by layout-rs, drawn by a render backend of our own so each node carries its state's
//! colour, its words and the index the page's script opens on click.

use crate::{Page, StageState};
use layout::core::base::Orientation;
use layout::core::format::{ClipHandle, RenderBackend};
use layout::core::geometry::Point;
use layout::core::style::StyleAttr;
use layout::std_shapes::shapes::{Arrow, Element, ShapeKind};
use layout::topo::layout::VisualGraph;
use std::collections::BTreeSet;
use std::fmt::Write;

/// One node of the drawing: a stage, or the expansions of one matrix stage.
#[derive(Debug, Clone)]
pub struct GroupNode {
    /// The stage name, or the matrix stage's name in the file.
    pub label: String,
    /// Indices of its stages in [`Page::stages`].
    pub members: Vec<usize>,
}

/// The laid-out DAG.
#[derive(Debug, Clone)]
pub struct DagDrawing {
    /// The nodes, in the order their `data-node` attributes number them.
    pub nodes: Vec<GroupNode>,
    /// The SVG element.
    pub svg: String,
}

/// Groups the stages, lays the groups out top to bottom and draws them.
pub fn layout(page: &Page) -> DagDrawing {
    let (nodes, of_stage) = group(page);
    let mut edges = BTreeSet::new();
    for &(from, to) in &page.edges {
        if of_stage[from] != of_stage[to] {
            edges.insert((of_stage[from], of_stage[to]));
        }
    }
    let mut vg = VisualGraph::new(Orientation::TopToBottom);
    let handles: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let lines = node_text(page, n);
            let size = box_size(&lines);
            let shape = ShapeKind::new_box(&lines.join("\n"));
            let element = Element::create_with_properties(shape, StyleAttr::simple(), Orientation::TopToBottom, size, i.to_string());
            vg.add_node(element)
        })
        .collect();
    for &(a, b) in &edges {
        vg.add_edge(Arrow::simple(""), handles[a], handles[b]);
    }
    let mut svg = SvgCanvas::new(page, &nodes);
    if !nodes.is_empty() {
        vg.do_it(false, false, false, &mut svg);
    }
    DagDrawing { svg: svg.finish(), nodes }
}

/// A box for these lines of the page's 12 px sans-serif text (about 7 px a character, 16 px a
/// line), with a margin.
fn box_size(lines: &[String]) -> Point {
    let longest = lines.iter().map(|l| l.chars().count()).max().unwrap_or(1);
    Point::new(longest as f64 * 7.0 + 20.0, lines.len() as f64 * 16.0 + 12.0)
}

/// One node per stage, except that a matrix's expansions (stages sharing a base name) become
/// one; also each stage's node.
fn group(page: &Page) -> (Vec<GroupNode>, Vec<usize>) {
    let mut nodes: Vec<GroupNode> = Vec::new();
    let mut of_stage = Vec::with_capacity(page.stages.len());
    for (i, s) in page.stages.iter().enumerate() {
        match nodes.iter().position(|n| n.label == s.base) {
            Some(k) => {
                nodes[k].members.push(i);
                of_stage.push(k);
            }
            None => {
                of_stage.push(nodes.len());
                nodes.push(GroupNode {
                    label: s.base.clone(),
                    members: vec![i],
                });
            }
        }
    }
    (nodes, of_stage)
}

/// The node's lines: its name; its state word (for a group, a count per word), time and size;
/// for one stale or failed stage, the start of why.
pub fn node_text(page: &Page, node: &GroupNode) -> Vec<String> {
    let members: Vec<_> = node.members.iter().map(|&i| &page.stages[i]).collect();
    if let [s] = members[..] {
        let mut second = vec![s.state.word().to_owned()];
        second.extend(s.wall_s.map(seconds));
        second.extend(s.bytes.map(size));
        let mut lines = vec![s.name.clone(), second.join(" · ")];
        lines.extend(s.state.why().map(|w| shorten(w, 34)));
        return lines;
    }
    let counted = crate::count_states(members.iter().map(|s| &s.state));
    vec![format!("{} ×{} ▸", node.label, members.len()), counted]
}

/// The colour of a node: its stage's, or its worst member's.
fn node_colour(page: &Page, node: &GroupNode) -> &'static str {
    node.members
        .iter()
        .map(|&i| &page.stages[i].state)
        .max_by_key(|s| s.severity())
        .map_or("#ffffff", StageState::colour)
}

fn seconds(s: f64) -> String {
    match s {
        s if s < 60.0 => format!("{s:.1} s"),
        s if s < 3600.0 => format!("{:.1} min", s / 60.0),
        s => format!("{:.1} h", s / 3600.0),
    }
}

fn size(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} kB", b / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.2} GB", b / 1e9),
    }
}

/// At most `n` characters, an ellipsis marking a cut.
fn shorten(text: &str, n: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() <= n {
        return line.to_owned();
    }
    line.chars().take(n - 1).chain(['…']).collect()
}

/// A layout-rs render backend writing SVG: nodes as `rect.node` with `data-node`, edges as
/// paths, text as `text`, each node's colour and tooltip from the page.
struct SvgCanvas {
    body: String,
    fills: Vec<&'static str>,
    tips: Vec<String>,
    max: Point,
}

impl SvgCanvas {
    fn new(page: &Page, nodes: &[GroupNode]) -> Self {
        SvgCanvas {
            body: String::new(),
            fills: nodes.iter().map(|n| node_colour(page, n)).collect(),
            tips: nodes.iter().map(|n| node_text(page, n).join("; ")).collect(),
            max: Point::new(0.0, 0.0),
        }
    }

    fn grow(&mut self, p: Point) {
        self.max = Point::new(self.max.x.max(p.x), self.max.y.max(p.y));
    }

    /// The `<svg>` element: it scales to the page's width, so it never scrolls sideways.
    fn finish(self) -> String {
        let (w, h) = (self.max.x + 10.0, self.max.y + 10.0);
        format!(
            r##"<svg id="dag" viewBox="0 0 {w:.0} {h:.0}" width="{w:.0}" style="max-width:100%;height:auto" role="img" aria-label="pipeline DAG"><defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>{}</svg>"##,
            self.body
        )
    }
}

impl RenderBackend for SvgCanvas {
    fn draw_rect(&mut self, xy: Point, size: Point, _look: &StyleAttr, properties: Option<String>, _clip: Option<ClipHandle>) {
        self.grow(Point::new(xy.x + size.x, xy.y + size.y));
        let Some(i) = properties.and_then(|p| p.parse::<usize>().ok()) else {
            return;
        };
        let _ = write!(
            self.body,
            r##"<rect class="node" data-node="{i}" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="6" fill="{}" stroke="#444" stroke-width="1.2"><title>{}</title></rect>"##,
            xy.x,
            xy.y,
            size.x,
            size.y,
            self.fills.get(i).copied().unwrap_or("#fff"),
            crate::escape(self.tips.get(i).map_or("", String::as_str))
        );
    }

    fn draw_line(&mut self, start: Point, stop: Point, _look: &StyleAttr, _properties: Option<String>) {
        self.grow(stop);
        let _ = write!(
            self.body,
            r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#555"/>"##,
            start.x, start.y, stop.x, stop.y
        );
    }

    fn draw_circle(&mut self, _xy: Point, _size: Point, _look: &StyleAttr, _properties: Option<String>) {}

    fn draw_text(&mut self, xy: Point, text: &str, _look: &StyleAttr) {
        let lines: Vec<&str> = text.lines().collect();
        let top = xy.y - (lines.len() as f64 - 1.0) * 8.0;
        let mut spans = String::new();
        for (k, line) in lines.iter().enumerate() {
            let weight = if k == 0 { r#" font-weight="600""# } else { "" };
            let _ = write!(
                spans,
                r#"<tspan x="{:.1}" y="{:.1}"{weight}>{}</tspan>"#,
                xy.x,
                top + 16.0 * k as f64,
                crate::escape(line)
            );
        }
        let _ = write!(
            self.body,
            r#"<text text-anchor="middle" dominant-baseline="middle" font-size="12" pointer-events="none">{spans}</text>"#
        );
    }

    fn draw_arrow(
        &mut self,
        path: &[(Point, Point)],
        dashed: bool,
        _head: (bool, bool),
        _look: &StyleAttr,
        _properties: Option<String>,
        _text: &str,
    ) {
        let [first, second, rest @ ..] = path else {
            return;
        };
        for p in path {
            self.grow(p.0);
            self.grow(p.1);
        }
        let mut d = format!(
            "M {:.1} {:.1} C {:.1} {:.1}, {:.1} {:.1}, {:.1} {:.1}",
            first.0.x, first.0.y, first.1.x, first.1.y, second.0.x, second.0.y, second.1.x, second.1.y
        );
        for p in rest {
            let _ = write!(d, " S {:.1} {:.1}, {:.1} {:.1}", p.0.x, p.0.y, p.1.x, p.1.y);
        }
        let dash = if dashed { r#" stroke-dasharray="5,5""# } else { "" };
        let _ = write!(
            self.body,
            r##"<path class="edge" d="{d}" fill="none" stroke="#555" stroke-width="1.3"{dash} marker-end="url(#arrow)"/>"##
        );
    }

    fn create_clip(&mut self, _xy: Point, _size: Point, _rounded_px: usize) -> ClipHandle {
        0
    }
}
