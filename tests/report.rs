//! `spherepipe report`: the pipeline's page — every stage with its state word, the results
//! table as `spherepipe metrics` prints it, the figures, nothing fetched from outside — its cost
//! on 200 stages, and the demo's page in a real browser (Chromium, headless).

use crate::common::{Sandbox, TINY_DATA};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The tiny face pipeline with a two-way training matrix, its LFW evaluation, and a stage that
/// fails.
fn faces() -> String {
    format!(
        r#"
name: r
seed: 3
stages:
{TINY_DATA}  train:
    kind: train
    inputs: {{shards: shard}}
    matrix: {{m: [3, 4]}}
    params: {{net: sphere4, width: 0.125, features: 3, batch: 8, steps: 4, lr: 0.01, milestones: [1000], lambda_gamma: 1.0}}
  align_lfw: {{kind: align, inputs: {{images: synth}}, params: {{format: lfw}}}}
  extract_lfw: {{kind: extract, inputs: {{model: train, faces: align_lfw}}, params: {{batch: 16}}}}
  evaluate: {{kind: evaluate, inputs: {{data: synth, lfw: extract_lfw, model: train}}, params: {{protocol: unflipped}}}}
  broken: {{kind: fail, inputs: {{after: [shard]}}, params: {{message: "pairs.txt line 3: no such image"}}}}
"#
    )
}

/// A stage as the page's data has it: (name, state word, why).
type Shown = (String, String, Option<String>);

/// The page's stage data: (node label, its stages).
fn stage_data(html: &str) -> Vec<(String, Vec<Shown>)> {
    let at = html.find("id=\"stage-data\">").expect("stage data") + "id=\"stage-data\">".len();
    let end = at + html[at..].find("</script>").expect("its end");
    let data: serde_json::Value = serde_json::from_str(&html[at..end]).expect("JSON");
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    data.as_array()
        .expect("a list")
        .iter()
        .map(|n| {
            let members = n["members"].as_array().expect("members");
            let members = members
                .iter()
                .map(|s| (text(&s["name"]), text(&s["state"]), s["why"].as_str().map(str::to_owned)));
            (text(&n["label"]), members.collect())
        })
        .collect()
}

/// The results table's rows, each cell's text.
fn table_rows(html: &str) -> Vec<Vec<String>> {
    let table = &html[html.find("<table id=\"results\">").expect("a results table")..];
    let table = &table[..table.find("</table>").expect("its end")];
    table
        .split("<tr>")
        .skip(2)
        .map(|row| {
            row.split("<td>")
                .skip(1)
                .map(|c| c[..c.find("</td>").expect("cell end")].replace("&amp;", "&"))
                .collect()
        })
        .collect()
}

fn page_of(s: &Sandbox, extra: &[&str]) -> String {
    let mut args = vec!["report", "p.yaml", "--out", "page.html"];
    args.extend_from_slice(extra);
    let r = s.sp(&args);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    std::fs::read_to_string(s.path().join("page.html")).expect("the page")
}

#[test]
fn the_page_shows_each_stage_its_results_and_figures_and_needs_nothing_else() {
    let s = Sandbox::new();
    s.write(&faces());
    let r = s.run(&["--keep-going"]);
    assert_eq!(r.code, 1, "`broken` fails: {}\n{}", r.stdout, r.stderr);
    let written = s.cache().join("reports/r.html");
    assert!(r.stdout.contains(&format!("report: {}", written.display())), "{}", r.stdout);
    let html = page_of(&s, &[]);
    assert_eq!(
        std::fs::read_to_string(written).unwrap().len(),
        html.len(),
        "run wrote the same page"
    );

    // One node per stage, a matrix's expansions as one group; every stage with its word.
    let data = stage_data(&html);
    let labels: Vec<&str> = data.iter().map(|n| n.0.as_str()).collect();
    let want = [
        "synth",
        "dedupe",
        "align",
        "flip",
        "shard",
        "train",
        "align_lfw",
        "extract_lfw",
        "evaluate",
        "broken",
    ];
    assert_eq!(labels, want);
    assert_eq!(html.matches("<rect class=\"node\"").count(), want.len());
    let stages: Vec<_> = data.iter().flat_map(|n| n.1.clone()).collect();
    assert_eq!(stages.len(), 13);
    for (name, state, why) in &stages {
        match name.as_str() {
            "broken" => assert_eq!(
                (state.as_str(), why.as_deref()),
                ("failed", Some("pairs.txt line 3: no such image"))
            ),
            _ => assert_eq!(state, "ran", "{name}"),
        }
    }
    assert!(html.contains("train ×2 ▸") && html.contains(">broken</tspan>") && html.contains(">failed · "));

    // The results table has `spherepipe metrics`' numbers.
    let metrics = s.sp(&["metrics", "p.yaml"]).stdout;
    let rows = table_rows(&html);
    assert_eq!(rows.len(), 2, "{html}");
    for row in &rows {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&row[0]))
            .unwrap_or_else(|| panic!("{} in {metrics}", row[0]));
        let words = |t: &str| t.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(words(&row.join(" ")), words(line), "{metrics}");
    }

    // Figures: each training's curve, the evaluations' ROC, curve and feature sphere (FC1 is
    // 3-D), and the faces of the first shard.
    for caption in [
        "Training loss and accuracy",
        "ROC of the verification pairs",
        "Test features on the unit circle or sphere",
    ] {
        assert!(html.matches(caption).count() >= 2, "{caption}");
    }
    assert!(html.contains("<img alt=\"24 faces of shard-00000.parquet"), "the contact sheet");
    assert!(
        !html.replace("http-equiv", "").contains("http") && !html.contains("://"),
        "the page names a URL"
    );
    // Every image is inline: PNGs and the figures' SVGs, each as a data URI.
    assert_eq!(
        html.matches(" src=\"").count(),
        html.matches(" src=\"data:image/png;base64,").count() + html.matches(" src=\"data:image/svg+xml;base64,").count()
    );

    // A param change: the trainings and what follows are stale, with the reason.
    let stale = page_of(&s, &["--set", "train.steps=5"]);
    let stages: Vec<_> = stage_data(&stale).into_iter().flat_map(|n| n.1).collect();
    let train = stages.iter().find(|s| s.0 == "train@m=3").unwrap();
    assert_eq!(train.1, "stale");
    assert!(train.2.as_deref().unwrap_or_default().contains("steps"), "{train:?}");
    assert_eq!(stages.iter().find(|s| s.0 == "synth").unwrap().1, "ran");

    // Run that variant: with --history the page lists the first run's results after its own.
    assert_eq!(s.run(&["--keep-going", "--set", "train.steps=5"]).code, 1);
    let both = page_of(&s, &["--set", "train.steps=5", "--history"]);
    let labels: Vec<String> = table_rows(&both).into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(labels.len(), 4, "{labels:?}");
    assert_eq!(labels[..2], ["evaluate@m=3", "evaluate@m=4"]);
    assert!(
        labels[2].starts_with("evaluate@m=3 (run ") && labels[3].starts_with("evaluate@m=4 (run "),
        "{labels:?}"
    );
}

#[test]
fn a_page_of_200_stages_is_written_in_moments() {
    let s = Sandbox::new();
    // A binary tree of scale stages under one numbers stage.
    let mut yaml = String::from("name: big\nseed: 1\nstages:\n  s0: {kind: numbers, params: {count: 3}}\n");
    for k in 1..200 {
        yaml += &format!(
            "  s{k}: {{kind: scale, inputs: {{numbers: s{}}}, params: {{factor: 2}}}}\n",
            (k - 1) / 2
        );
    }
    s.write(&yaml);
    assert_eq!(s.run(&[]).code, 0);
    let start = Instant::now();
    let html = page_of(&s, &[]);
    let took = start.elapsed();
    eprintln!("report of a 200-stage pipeline: {:.2} s (this build)", took.as_secs_f64());
    assert_eq!(html.matches("<rect class=\"node\"").count(), 200);
    assert_eq!(html.matches("class=\"edge\"").count(), 199);
}

/// The Chromium (or Chrome) to render with; CI requires one.
fn browser() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|name| {
        std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()))
    });
    if found.is_none() {
        assert!(
            std::env::var_os("SPHEREPIPE_REQUIRE_CHROMIUM").is_none(),
            "SPHEREPIPE_REQUIRE_CHROMIUM is set but no chromium is on PATH (.ci/run installs it with apt)"
        );
        eprintln!("browser part skipped: no chromium on PATH (apt-get install chromium)");
    }
    found
}

/// Chromium, headless, on `page` with `args`: (stdout, stderr).
fn headless(browser: &Path, page: &str, args: &[&str]) -> (String, String) {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .args(args)
        .arg(page)
        .output()
        .expect("starting chromium");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_demos_page_renders_in_a_real_browser() {
    let Some(browser) = browser() else { return };
    let s = Sandbox::new();
    let demo = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/demo.yaml")).unwrap();
    s.write(&demo.replace("root: ..", "root: ."));
    // The demo's stages on the tiny corpus: 5 + 5 training steps, the 10-distractor list.
    let small = [
        "--set",
        "synth.preset=tiny",
        "--set",
        "warmup.steps=5",
        "--set",
        "train.steps=5",
        "--set",
        "align_distractors.list=megaface/templatelists/megaface_features_list.json_10_1",
    ];
    let r = s.run(&small);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let page = s.cache().join("reports/demo.html");
    let url = format!("file://{}", page.display());

    let shot = s.path().join("demo.png");
    let (_, log) = headless(
        &browser,
        &url,
        &["--window-size=1366,900", &format!("--screenshot={}", shot.display())],
    );
    assert!(!log.contains(":CONSOLE"), "the page wrote to the console:\n{log}");
    let img = image::open(&shot)
        .unwrap_or_else(|e| panic!("no screenshot ({e}):\n{log}"))
        .to_rgb8();
    let inked = img.pixels().filter(|p| p.0.iter().any(|&c| c < 200)).count();
    let colours: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    assert!(
        inked > img.len() / 3 / 50 && colours.len() > 50,
        "a blank screenshot: {inked} inked pixels, {} colours",
        colours.len()
    );

    // After the script ran: one node per stage or group, and `#stage=` opens a stage's details.
    let (dom, log) = headless(&browser, &format!("{url}#stage=evaluate"), &["--dump-dom"]);
    assert!(!log.contains(":CONSOLE"), "{log}");
    let nodes = [
        "synth",
        "dedupe",
        "align",
        "flip",
        "shard",
        "warmup",
        "train",
        "align_lfw",
        "align_ytf",
        "align_facescrub",
        "align_distractors",
    ];
    let groups = ["extract_lfw", "extract_ytf", "extract_facescrub", "extract_distractors"];
    let single = [
        "ensemble_lfw",
        "ensemble_ytf",
        "ensemble_facescrub",
        "ensemble_distractors",
        "evaluate",
    ];
    assert_eq!(
        dom.matches("<rect class=\"node\"").count(),
        nodes.len() + groups.len() + single.len()
    );
    let details = &dom[dom.find("id=\"details\"").expect("the details box")..];
    assert!(
        details.starts_with("id=\"details\"><h3>evaluate [evaluate] ran</h3><pre>"),
        "{}",
        &details[..300.min(details.len())]
    );
    assert!(details.contains("\"fingerprint\": \""), "the details show `show --json`");
}

/// A figure in a shared store that carries script — a `<script>` element and an `onload`
/// handler — is shown on the page as an image, and nothing in it runs: the page's own script
/// still does (the Content-Security-Policy allows it by hash), theirs does not.
#[test]
fn a_figure_with_script_from_a_store_runs_nothing_in_the_page() {
    let Some(browser) = browser() else { return };
    let (_dir, url) = crate::common::shared_dir();
    let hostile = r##"<svg xmlns="http://www.w3.org/2000/svg" width="200" height="100" onload="console.log('PWNED-onload');document.title='PWNED'"><script>console.log('PWNED-script');document.body.innerHTML='PWNED'</script><rect width="200" height="100" fill="#c00"/></svg>"##;
    let pipeline = serde_yaml::to_string(&serde_json::json!({
        "name": "hostile",
        "stages": {"fig": {"kind": "figure", "params": {"svg": hostile}}},
    }))
    .unwrap();
    // One machine puts the figure in the store; another downloads it and writes its page.
    let a = Sandbox::new();
    a.write(&pipeline);
    assert_eq!(a.run(&["--store", &url]).code, 0);
    let b = Sandbox::new();
    b.write(&pipeline);
    let r = b.run(&["--store", &url]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let page = b.cache().join("reports/hostile.html");
    let html = std::fs::read_to_string(&page).unwrap();
    // The SVG is in the page only as an image (its text shows, as JSON data, in `fig`'s params).
    assert!(
        !html.contains("<script>console") && !html.contains("<rect width=\"200\""),
        "the figure is markup in the page"
    );
    assert!(html.contains(" src=\"data:image/svg+xml;base64,"), "the figure is shown");
    let (dom, log) = headless(&browser, &format!("file://{}#stage=fig", page.display()), &["--dump-dom"]);
    assert!(!log.contains("PWNED-"), "the figure's script ran:\n{log}");
    assert!(
        dom.contains("<title>hostile — spherepipe</title>"),
        "the figure's onload ran: {dom}"
    );
    let details = &dom[dom.find("id=\"details\"").expect("the details box")..];
    assert!(
        details.starts_with("id=\"details\"><h3>fig [figure] cached</h3>"),
        "the page's own script ran: {}",
        &details[..200.min(details.len())]
    );
}
