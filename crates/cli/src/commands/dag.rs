//! `spherepipe dag`: the DAG as text or Graphviz.

use crate::failure::Failure;
use spherepipe_pipeline::{Pipeline, Source};

/// `spherepipe dag`: the expanded DAG as text or Graphviz.
pub(crate) fn dag(p: &Pipeline, dot: bool) -> Result<u8, Failure> {
    print!("{}", if dot { dag_dot(p) } else { dag_text(p) });
    Ok(0)
}

pub(crate) fn source_name(p: &Pipeline, s: &Source) -> String {
    match s {
        Source::Dataset(d) => format!("dataset {d}"),
        Source::Stage(j) => p.nodes[*j].name.clone(),
    }
}

pub(crate) fn dag_text(p: &Pipeline) -> String {
    let mut out = format!("pipeline {} ({} stages)\n", p.name, p.nodes.len());
    for (name, d) in &p.datasets {
        out += &format!("dataset {name}: {}\n", d.path.display());
    }
    for n in &p.nodes {
        out += &format!("{} [{}]\n", n.name, n.kind.kind());
        for (input, srcs) in &n.inputs {
            let from: Vec<String> = srcs.iter().map(|s| source_name(p, s)).collect();
            out += &format!("  {input} <- {}\n", from.join(", "));
        }
    }
    out
}

pub(crate) fn dag_dot(p: &Pipeline) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = format!("digraph {} {{\n  rankdir=LR;\n", q(&p.name));
    for name in p.datasets.keys() {
        out += &format!("  {} [shape=cylinder];\n", q(&format!("dataset {name}")));
    }
    for n in &p.nodes {
        out += &format!(
            "  {} [shape=box, label={}];\n",
            q(&n.name),
            q(&format!("{}\\n({})", n.name, n.kind.kind()))
        );
        for (input, srcs) in &n.inputs {
            for s in srcs {
                out += &format!("  {} -> {} [label={}];\n", q(&source_name(p, s)), q(&n.name), q(input));
            }
        }
    }
    out + "}\n"
}
