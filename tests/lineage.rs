//! `spherepipe lineage`: every artifact says how it was made, back to the datasets, from the
//! cache or from the shared store alone.

use crate::common::{shared_dir, Sandbox};
use serde_json::Value;

/// A dataset, a matrix and a fan-in: `total` sums both expansions of `scale`.
const MATRIX: &str = "name: lin
seed: 4
datasets:
  notes: {path: notes}
stages:
  words: {kind: wordcount, inputs: {text: notes}}
  draw: {kind: numbers, params: {count: 4}}
  scale: {kind: scale, inputs: {numbers: draw}, matrix: {factor: [2, 3]}}
  total: {kind: sum, inputs: {parts: [scale]}}
";

fn sandbox() -> Sandbox {
    let s = Sandbox::new();
    std::fs::create_dir(s.path().join("notes")).unwrap();
    std::fs::write(s.path().join("notes/a.txt"), "the cat and the hat").unwrap();
    s.write(MATRIX);
    s
}

fn chain(s: &Sandbox, args: &[&str]) -> Vec<Value> {
    let r = s.sp(args);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

/// The stage each link names, in chain order.
fn stages(links: &[Value]) -> Vec<&str> {
    links.iter().map(|l| l["lineage"]["stage"].as_str().unwrap()).collect()
}

#[test]
fn a_matrix_fan_in_has_a_complete_chain_whose_hashes_are_the_caches() {
    let s = sandbox();
    assert_eq!(s.run(&[]).code, 0);
    let arts = s.last_artifacts();
    let fps = s.last_field("fingerprint");
    let links = chain(&s, &["lineage", "p.yaml", "total", "--json"]);
    assert_eq!(stages(&links), ["total", "scale@factor=2.0", "scale@factor=3.0", "draw"]);
    for l in &links {
        let stage = l["lineage"]["stage"].as_str().unwrap();
        // Each link is the cache's: the artifact and fingerprint this run recorded.
        assert_eq!(l["artifact"], arts[stage].as_str(), "{stage}");
        assert_eq!(l["fingerprint"], fps[stage].as_str(), "{stage}");
        assert!(l["problems"].as_array().unwrap().is_empty(), "{l}");
        assert_eq!(l["in_store_only"], false);
        let made = &l["lineage"]["made"];
        assert_eq!(made["executor"], "local");
        assert_eq!(made["spherepipe"], env!("CARGO_PKG_VERSION"));
        assert!(made["ended_unix"].as_f64().unwrap() >= made["started_unix"].as_f64().unwrap());
        assert!(!made["host"].as_str().unwrap().is_empty());
        // ... and each input's hash is the artifact of the stage it names.
        for (input, origins) in l["lineage"]["sources"].as_object().unwrap() {
            for (k, o) in origins.as_array().unwrap().iter().enumerate() {
                let maker = o["name"].as_str().unwrap();
                assert_eq!(o["from"], "stage");
                assert_eq!(o["fingerprint"], fps[maker].as_str());
                assert_eq!(
                    l["lineage"]["material"]["inputs"][input][k],
                    arts[maker].as_str(),
                    "{stage} <- {maker}"
                );
            }
        }
    }
    let total = &links[0]["lineage"];
    assert_eq!(total["material"]["kind"], "sum");
    assert_eq!(links[3]["lineage"]["material"]["params"]["count"], 4);
    assert_eq!(links[3]["lineage"]["material"]["seed"], 4);
    // A dataset ends the chain, with its content hash.
    let words = chain(&s, &["lineage", "p.yaml", "words", "--json"]);
    assert_eq!(words.len(), 1);
    let origin = &words[0]["lineage"]["sources"]["text"][0];
    assert_eq!((origin["from"].as_str(), origin["name"].as_str()), (Some("dataset"), Some("notes")));
    assert!(origin["path"].as_str().unwrap().ends_with("/notes"), "{origin}");
    // "What made this directory?" answers the same chain.
    let dir = s.artifact_dir("total");
    let by_dir = chain(&s, &["lineage", "--artifact", dir.to_str().unwrap(), "--cache", "cache", "--json"]);
    assert_eq!(by_dir, links);
    // The page shows it on click: the stage's details in the page's data carry it.
    let r = s.sp(&["report", "p.yaml", "--out", "page.html"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let html = std::fs::read_to_string(s.path().join("page.html")).unwrap();
    let at = html.find("id=\"stage-data\">").unwrap() + "id=\"stage-data\">".len();
    let data: Value = serde_json::from_str(&html[at..at + html[at..].find("</script>").unwrap()]).unwrap();
    let on_page: Vec<&Value> = data
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|n| n["members"].as_array().unwrap())
        .filter(|m| m["name"] == "total")
        .collect();
    assert_eq!(on_page.len(), 1);
    assert_eq!(on_page[0]["details"]["lineage"], links[0]["lineage"]);
    // The text form names each stage, its inputs and where it ran.
    let text = s.sp(&["lineage", "p.yaml", "total"]).stdout;
    assert!(
        text.contains("total [sum v") && text.contains("input parts  `scale@factor=3.0`, artifact"),
        "{text}"
    );
    assert!(text.contains("by spherepipe ") && text.contains("local executor"), "{text}");
}

/// A lineage is read from files: one whose links were edited is reported link by link (exit
/// 1), and a maker's name that is no fingerprint is never looked up as a path.
#[test]
fn an_edited_lineage_is_reported_not_followed() {
    let s = sandbox();
    assert_eq!(s.run(&[]).code, 0);
    let fps = s.last_field("fingerprint");
    let entry_path = s.cache().join("index").join(format!("{}.json", fps["total"]));
    let mut entry: Value = serde_json::from_str(&std::fs::read_to_string(&entry_path).unwrap()).unwrap();
    let parts = &mut entry["provenance"]["sources"]["parts"];
    parts[0]["fingerprint"] = Value::from("../../../etc/passwd");
    parts[1]["fingerprint"] = Value::from(fps["draw"].clone());
    std::fs::write(&entry_path, serde_json::to_vec(&entry).unwrap()).unwrap();
    let r = s.sp(&["lineage", "p.yaml", "total", "--json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let links: Vec<Value> = serde_json::from_str(&r.stdout).unwrap();
    let problems: Vec<&str> = links[0]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("is not 64 lowercase hexadecimal characters"), "{problems:?}");
    assert!(
        problems[1].contains("its fingerprint records artifact") && problems[1].contains("but this artifact was made from"),
        "{problems:?}"
    );
    // Neither edited link was followed.
    assert_eq!(stages(&links), ["total"]);
}

#[test]
fn a_store_only_artifacts_lineage_is_read_from_the_store() {
    let (_dir, url) = shared_dir();
    let made_here = sandbox();
    assert_eq!(made_here.run(&["--store", &url]).code, 0);
    let here = chain(&made_here, &["lineage", "p.yaml", "total", "--json"]);
    // Another machine: a fresh cache, the same files, the store.
    let elsewhere = sandbox();
    let there = chain(&elsewhere, &["lineage", "p.yaml", "total", "--store", &url, "--json"]);
    assert_eq!(stages(&there), stages(&here));
    for (a, b) in here.iter().zip(&there) {
        assert_eq!(b["in_store_only"], true);
        assert_eq!((&a["artifact"], &a["lineage"]), (&b["artifact"], &b["lineage"]));
    }
    // Without the store there is nothing to read, and it says so.
    let r = elsewhere.sp(&["lineage", "p.yaml", "total"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("has no artifact yet (never-run)"), "{}", r.stderr);
    let r = elsewhere.sp(&["lineage", "--artifact", here[0]["artifact"].as_str().unwrap()]);
    assert!(
        r.code == 2 && r.stderr.contains("no index entry in cache names artifact"),
        "{}",
        r.stderr
    );
}
