//! The HTML document: sections as named steps, everything inline.

use crate::graph::{node_text, DagDrawing};
use crate::{Figure, Image, Page};
use serde_json::{json, Value};
use spherepipe_headline::{cell, Row};
use std::fmt::Write;

/// `text` safe inside HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Standard base64 (RFC 4648, with padding), for images inlined as data URIs.
pub fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (chunk[0] as u32) << 16 | (*chunk.get(1).unwrap_or(&0) as u32) << 8 | *chunk.get(2).unwrap_or(&0) as u32;
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * k)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;max-width:1200px;margin:1em auto;padding:0 1em;color:#222}
h1{margin:.2em 0}h2{margin-top:1.5em;border-bottom:1px solid #ddd}
.meta{color:#666}.legend span{display:inline-block;padding:0 .5em;margin-right:.4em;border:1px solid #999;border-radius:4px}
#dag rect.node{cursor:pointer}#dag rect.node:hover{stroke-width:2.5}
#details{background:#f7f7f7;border:1px solid #ddd;padding:.6em 1em;margin-top:.6em;overflow-x:auto}
#details pre{white-space:pre-wrap;word-break:break-all;margin:.3em 0}#details button{margin:.15em}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}td:first-child,th:first-child{text-align:left}
.figures{display:flex;flex-wrap:wrap}figure{margin:.5em;width:calc(50% - 1em);min-width:320px;max-width:100%}figure img{width:100%;height:auto}
figcaption{color:#444;font-size:13px}";

/// Shows a node's stages on click: one stage's `show --json`, or a group's members to pick;
/// `page.html#stage=NAME` opens that stage (or group) on load.
const SCRIPT: &str = "const data=JSON.parse(document.getElementById('stage-data').textContent);
const box=document.getElementById('details');
function stage(s){box.innerHTML='';const h=document.createElement('h3');h.textContent=s.name+' ['+s.kind+'] '+s.state+(s.why?': '+s.why:'');
const p=document.createElement('pre');p.textContent=JSON.stringify(s.details,null,2);box.append(h,p);}
function group(n){box.innerHTML='';const h=document.createElement('h3');h.textContent=n.label+': '+n.members.length+' expansions';box.append(h);
for(const s of n.members){const b=document.createElement('button');b.textContent=s.name+' — '+s.state;b.onclick=()=>stage(s);box.append(b);}}
function show(n){n.members.length==1?stage(n.members[0]):group(n);}
for(const r of document.querySelectorAll('#dag rect.node')){r.addEventListener('click',()=>show(data[+r.dataset.node]));}
const want=decodeURIComponent(location.hash.replace(/^#stage=/,''));
for(const n of data){const s=n.members.find(m=>m.name==want);if(s)stage(s);else if(n.label==want)show(n);}";

/// The page's Content-Security-Policy: nothing is fetched, images only from `data:` URIs, and
/// the one script that runs is ours, by its hash. Figures come from artifacts, which may come
/// from a shared store: whatever script hides in them does not run.
pub fn content_security_policy() -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(SCRIPT.as_bytes());
    format!(
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{}'; base-uri 'none'; form-action 'none'",
        base64(&digest)
    )
}

/// The whole page.
pub fn document(page: &Page, dag: &DagDrawing) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"Content-Security-Policy\" content=\"{}\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{} — spherepipe</title><style>{STYLE}</style></head><body>\n",
        content_security_policy(),
        escape(&page.name)
    );
    out += &header(page);
    out += &dag_section(page, dag);
    out += &results_section(page);
    out += &figures_section(&page.figures);
    let _ = write!(
        out,
        "<script type=\"application/json\" id=\"stage-data\">{}</script>\n<script>{SCRIPT}</script>\n</body></html>\n",
        stage_data(page, dag)
    );
    out
}

/// Title, file, time, and how many stages are in each state.
fn header(page: &Page) -> String {
    let summary = crate::count_states(page.stages.iter().map(|s| &s.state));
    format!(
        "<h1>{}</h1><p class=\"meta\">{} · {} stages: {} · written {}</p>\n",
        escape(&page.name),
        escape(&page.file),
        page.stages.len(),
        summary,
        escape(&page.generated)
    )
}

/// The DAG, its legend and the details box the script fills.
fn dag_section(page: &Page, dag: &DagDrawing) -> String {
    use crate::StageState::*;
    let legend: String = [Cached, Ran, Stale(String::new()), NeverRun, Failed(String::new())]
        .iter()
        .map(|s| format!("<span style=\"background:{}\">{}</span>", s.colour(), s.word()))
        .collect();
    let hint = if page.stages.is_empty() {
        "This pipeline has no stages."
    } else {
        "Click a stage for its kind, params, fingerprint, artifact and files; a group (▸) lists its expansions."
    };
    format!(
        "<h2>Stages</h2><p class=\"legend\">{legend}</p>{}\n<div id=\"details\"><em>{hint}</em></div>\n",
        dag.svg
    )
}

/// The headline table, as `spherepipe metrics` prints it.
fn results_section(page: &Page) -> String {
    let mut out = String::from("<h2>Results</h2>\n");
    if page.results.is_empty() {
        out += "<p>No results yet.</p>\n";
    } else {
        out += &results_table(&page.results);
    }
    for (stage, why) in &page.missing {
        let _ = writeln!(out, "<p>{}: no result for these params ({})</p>", escape(stage), escape(why));
    }
    out
}

/// Columns are the union of the rows' names, in order of first appearance.
fn results_table(rows: &[Row]) -> String {
    let mut columns: Vec<&str> = Vec::new();
    for r in rows {
        for (name, _) in &r.values {
            if !columns.contains(&name.as_str()) {
                columns.push(name);
            }
        }
    }
    let mut out = String::from("<table id=\"results\"><tr><th>stage</th>");
    for c in &columns {
        let _ = write!(out, "<th>{}</th>", escape(c));
    }
    out += "</tr>\n";
    for r in rows {
        let _ = write!(out, "<tr><td>{}</td>", escape(&r.label));
        for c in &columns {
            let v = r.values.iter().find(|(n, _)| n == c).map_or(String::new(), |(_, v)| cell(v));
            let _ = write!(out, "<td>{}</td>", escape(&v));
        }
        out += "</tr>\n";
    }
    out + "</table>\n"
}

/// Each figure under its stage's name.
fn figures_section(figures: &[Figure]) -> String {
    let mut out = String::from("<h2>Figures</h2>\n");
    if figures.is_empty() {
        out += "<p>No figures yet.</p>\n";
    }
    // Two a row: a flex row, so the whitespace between figures takes no room.
    out += "<div class=\"figures\">\n";
    for f in figures {
        // As images, never inline markup: an SVG shown through <img> runs no script and
        // fetches nothing, whatever it holds.
        let (mime, bytes) = match &f.image {
            Image::Svg(text) => ("image/svg+xml", text.as_bytes()),
            Image::Png(bytes) => ("image/png", bytes.as_slice()),
        };
        let image = format!("<img alt=\"{}\" src=\"data:{mime};base64,{}\">", escape(&f.caption), base64(bytes));
        let _ = writeln!(
            out,
            "<figure>{image}<figcaption><b>{}</b> — {}</figcaption></figure>",
            escape(&f.stage),
            escape(&f.caption)
        );
    }
    out + "</div>\n"
}

/// The nodes with their stages, for the script (every `<` written as `\u003c`, so nothing in
/// the JSON can end or open a script element).
fn stage_data(page: &Page, dag: &DagDrawing) -> String {
    let nodes: Vec<Value> = dag
        .nodes
        .iter()
        .map(|n| {
            let members: Vec<Value> = n
                .members
                .iter()
                .map(|&i| {
                    let s = &page.stages[i];
                    json!({"name": s.name, "kind": s.kind, "state": s.state.word(), "why": s.state.why(), "details": s.details})
                })
                .collect();
            json!({"label": n.label, "text": node_text(page, n), "members": members})
        })
        .collect();
    Value::Array(nodes).to_string().replace('<', "\\u003c")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_examples() {
        // RFC 4648, section 10.
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded, "{plain}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn escaping_leaves_no_markup() {
        assert_eq!(escape(r#"<a href="x">&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
    }

    #[test]
    fn the_policy_allows_exactly_the_pages_script() {
        use sha2::Digest;
        let csp = content_security_policy();
        // The hash of the script text, as CSP computes it: sha256 over its UTF-8, base64.
        let want = base64(&sha2::Sha256::digest(SCRIPT.as_bytes()));
        assert!(csp.contains(&format!("script-src 'sha256-{want}'")) && want.len() == 44, "{csp}");
        assert!(csp.starts_with("default-src 'none'") && csp.contains("img-src data:"), "{csp}");
    }
}
