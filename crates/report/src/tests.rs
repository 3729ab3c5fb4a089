use super::*;
use serde_json::json;

fn stage(name: &str, base: &str, state: StageState) -> StageView {
    StageView {
        name: name.into(),
        base: base.into(),
        kind: "train".into(),
        state,
        wall_s: Some(12.34),
        bytes: Some(4_500_000),
        details: json!({"stage": name, "params": {"m": 4}}),
    }
}

/// data → train@m=3, train@m=4 (a matrix) → evaluate, which failed; compare never ran.
fn page() -> Page {
    Page {
        name: "ablation".into(),
        file: "pipelines/a.yaml".into(),
        generated: "2026-11-30 09:00 UTC".into(),
        stages: vec![
            stage("data", "data", StageState::Cached),
            stage("train@m=3", "train", StageState::Ran),
            stage("train@m=4", "train", StageState::Stale("param `m` changed: 2 → 4".into())),
            stage(
                "evaluate",
                "evaluate",
                StageState::Failed("LFW pairs.txt: line 3 names no image\nmore".into()),
            ),
            stage("compare", "compare", StageState::NeverRun),
        ],
        edges: vec![(0, 1), (0, 2), (1, 3), (2, 3), (3, 4)],
        results: vec![spherepipe_headline::Row {
            label: "evaluate".into(),
            values: vec![("LFW".into(), json!(0.96667)), ("EER".into(), json!(0.123456))],
        }],
        missing: vec![],
        figures: vec![Figure {
            stage: "train@m=3".into(),
            caption: "loss".into(),
            image: Image::Svg("<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\"><circle r=\"1\"/></svg>".into()),
        }],
    }
}

/// The words of each node of the DAG, read back from its `<text>`.
fn node_texts(html: &str) -> Vec<String> {
    html.split("<text ")
        .skip(1)
        .map(|t| {
            let t = &t[..t.find("</text>").unwrap()];
            t.split("<tspan")
                .skip(1)
                .map(|s| s[s.find('>').unwrap() + 1..s.find("</tspan>").unwrap()].to_owned())
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect()
}

#[test]
fn every_stage_is_a_node_with_its_state_word_and_a_matrix_is_one_group() {
    let html = render(&page());
    assert_eq!(
        html.matches("<rect class=\"node\"").count(),
        4,
        "data, train group, evaluate, compare"
    );
    let mut texts = node_texts(&html);
    texts.sort();
    assert_eq!(
        texts,
        [
            "compare | never-run · 12.3 s · 4.5 MB",
            "data | cached · 12.3 s · 4.5 MB",
            "evaluate | failed · 12.3 s · 4.5 MB | LFW pairs.txt: line 3 names no im…",
            "train ×2 ▸ | 1 ran, 1 stale",
        ]
    );
    // The group is coloured as its worst member (stale), the failure red.
    assert!(html.contains(r##"data-node="1" "##) && html.contains("fill=\"#ffe08a\""));
    assert!(html.contains("fill=\"#f4a3a3\""));
    // Four edges between nodes: data→train (two stage edges, one drawn), train→evaluate, evaluate→compare.
    assert_eq!(html.matches("class=\"edge\"").count(), 3);
}

#[test]
fn the_script_data_holds_every_expanded_stage_with_its_details() {
    let html = render(&page());
    let at = html.find("id=\"stage-data\">").unwrap() + "id=\"stage-data\">".len();
    let data: serde_json::Value = serde_json::from_str(&html[at..at + html[at..].find("</script>").unwrap()]).unwrap();
    let names: Vec<&str> = data
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|n| n["members"].as_array().unwrap())
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["data", "train@m=3", "train@m=4", "evaluate", "compare"]);
    assert_eq!(data[2]["members"][0]["why"], "LFW pairs.txt: line 3 names no image\nmore");
    assert_eq!(data[1]["members"][1]["details"]["params"]["m"], 4);
}

#[test]
fn results_show_the_metrics_cells_and_the_page_needs_nothing_outside_it() {
    let html = render(&page());
    assert!(html.contains("<tr><th>stage</th><th>LFW</th><th>EER</th></tr>"), "{html}");
    let row = format!(
        "<tr><td>evaluate</td><td>{}</td><td>{}</td></tr>",
        spherepipe_headline::cell(&json!(0.96667)),
        spherepipe_headline::cell(&json!(0.123456))
    );
    assert!(html.contains(&row), "{row}");
    // The figure's SVG as an image (base64 of its bytes), never as markup in the page.
    let svg = "<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\"><circle r=\"1\"/></svg>";
    let data_uri = format!("src=\"data:image/svg+xml;base64,{}\"", crate::html::base64(svg.as_bytes()));
    assert!(html.contains(&data_uri) && !html.contains("<circle"), "{html}");
    assert!(
        !html.replace("http-equiv", "").contains("http") && !html.contains("://"),
        "a URL in the page"
    );
    assert!(!html.contains("src=\"") || html.matches("src=\"data:").count() == html.matches("src=\"").count());
    assert!(!html.contains("<link") && !html.contains("@import") && !html.contains("url(http"));
}

#[test]
fn text_from_the_pipeline_cannot_break_the_page() {
    let mut p = page();
    p.stages[0].name = "<script>alert(1)</script>".into();
    p.stages[0].details = json!({"note": "</script><script>alert(2)"});
    let html = render(&p);
    assert!(!html.contains("<script>alert"), "{html}");
    assert_eq!(html.matches("</script>").count(), 2, "only the page's own two scripts end");
}

#[test]
fn an_empty_pipeline_still_makes_a_page() {
    let html = render(&Page::default());
    assert!(html.contains("This pipeline has no stages.") && html.contains("No results yet."));
}
