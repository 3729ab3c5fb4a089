//! From a parsed pipeline file to a checked, expanded DAG.

use crate::diag::{Diagnostic, Diagnostics};
use crate::locate::{locate, Locations, Pos};
use crate::{InputRef, PipelineFile, StageSpec};
use serde_json::Value;
use spherepipe_stage::{did_you_mean, Arity, ParamSpec, Params, Registry, Resources, Stage};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A `--set STAGE.PARAM=VALUE` from the command line. The value is read as YAML, so `3` is a
/// number, `[112, 112]` a list and `a-softmax` a string.
#[derive(Debug, Clone)]
pub struct Override {
    /// The stage (its name in the file).
    pub stage: String,
    /// The param, or the matrix axis to narrow.
    pub param: String,
    /// The value, read as YAML.
    pub value: serde_yaml::Value,
    /// The flag as typed, for messages.
    pub text: String,
}

/// Parses `STAGE.PARAM=VALUE`.
pub fn parse_override(text: &str) -> Result<Override, String> {
    let (lhs, rhs) = text
        .split_once('=')
        .ok_or_else(|| format!("`--set {text}`: expected STAGE.PARAM=VALUE, for example `--set train.m=3`"))?;
    let (stage, param) = lhs
        .trim()
        .split_once('.')
        .ok_or_else(|| format!("`--set {text}`: expected STAGE.PARAM=VALUE, for example `--set train.m=3`"))?;
    let value = serde_yaml::from_str(rhs).map_err(|e| format!("`--set {text}`: the value is not valid YAML: {e}"))?;
    Ok(Override {
        stage: stage.to_owned(),
        param: param.to_owned(),
        value,
        text: text.to_owned(),
    })
}

/// A named external input.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Its name in the file.
    pub name: String,
    /// The resolved path.
    pub path: PathBuf,
    /// The file's `about` text.
    pub about: Option<String>,
}

/// Where an input comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A dataset, by name.
    Dataset(String),
    /// Index into [`Pipeline::nodes`].
    Stage(usize),
}

/// One runnable stage (after matrix expansion).
#[derive(Clone)]
pub struct Node {
    /// `train`, or `train@patch=eyes` for a matrix expansion.
    pub name: String,
    /// The stage's name in the file (`train`).
    pub base: String,
    /// Its kind.
    pub kind: Arc<dyn Stage>,
    /// Resolved params: coerced, defaults filled in, matrix values set.
    pub params: Params,
    /// The matrix values of this expansion (empty for a plain stage).
    pub matrix: BTreeMap<String, Value>,
    /// Each axis's label, in the order the expansion's name shows them (`m`, `4` in
    /// `train@m=4`), kept as data so that propagation never parses names back apart.
    pub labels: Vec<(String, String)>,
    /// Each input's sources.
    pub inputs: BTreeMap<String, Vec<Source>>,
    /// What it asks of a cluster node: the file's `resources:` over the kind's defaults.
    /// Not part of the fingerprint.
    pub resources: Resources,
    /// How many parts its work is split into (1: not split). Not part of the fingerprint.
    pub parts: usize,
}

/// A checked pipeline: nodes in an order where every input comes before its users.
#[derive(Clone)]
pub struct Pipeline {
    /// The pipeline's name.
    pub name: String,
    /// The file it was read from.
    pub file: PathBuf,
    /// The directory relative paths were resolved against.
    pub root: PathBuf,
    /// The cache directory.
    pub cache: PathBuf,
    /// The shared store the file names, if any (the command line and environment win).
    pub store: Option<String>,
    /// The seed.
    pub seed: u64,
    /// External inputs by name.
    pub datasets: BTreeMap<String, Dataset>,
    /// The expanded stages, inputs first.
    pub nodes: Vec<Node>,
}

impl Pipeline {
    /// The node named `name` exactly (an expansion's full name).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }
    /// Nodes whose name or base name is `name` (all expansions of a matrix stage).
    pub fn select(&self, name: &str) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].name == name || self.nodes[i].base == name)
            .collect()
    }
    /// Direct upstream stage indices of node `i`.
    pub fn upstream(&self, i: usize) -> BTreeSet<usize> {
        self.nodes[i]
            .inputs
            .values()
            .flatten()
            .filter_map(|s| if let Source::Stage(j) = s { Some(*j) } else { None })
            .collect()
    }
    /// The pipeline cut down to node `i` and what it depends on, inputs re-indexed (for
    /// commands that need one stage's artifact, such as `spherepipe export`).
    pub fn up_to(&self, i: usize) -> Pipeline {
        let mut keep = self.ancestors(i);
        keep.insert(i);
        let new_index: BTreeMap<usize, usize> = keep.iter().enumerate().map(|(new, &old)| (old, new)).collect();
        let nodes = keep
            .iter()
            .map(|&old| {
                let mut n = self.nodes[old].clone();
                for sources in n.inputs.values_mut() {
                    for s in sources.iter_mut() {
                        if let Source::Stage(j) = s {
                            *j = new_index[j];
                        }
                    }
                }
                n
            })
            .collect();
        Pipeline { nodes, ..self.clone() }
    }
    /// Everything `i` depends on, transitively (not `i` itself).
    pub fn ancestors(&self, i: usize) -> BTreeSet<usize> {
        let mut out = self.upstream(i);
        // Nodes are in dependency order, so one backward sweep sees each node's users first.
        for j in (0..i).rev() {
            if out.contains(&j) {
                out.extend(self.upstream(j));
            }
        }
        out
    }
}

struct Ctx<'a> {
    file: &'a Path,
    loc: Locations,
    diags: Vec<Diagnostic>,
}

impl Ctx<'_> {
    /// A problem with the key at `at`: the diagnostic points at the key.
    fn err_key(&mut self, at: &[&str], stage: Option<&str>, message: String, fix: impl Into<Option<String>>) {
        let pos = self.loc.key(at);
        self.push(pos, stage, message, fix);
    }

    /// A problem with the value at `at`: the diagnostic points at the value.
    fn err_value(&mut self, at: &[&str], stage: Option<&str>, message: String, fix: impl Into<Option<String>>) {
        let pos = self.loc.value(at);
        self.push(pos, stage, message, fix);
    }

    fn push(&mut self, pos: Option<Pos>, stage: Option<&str>, message: String, fix: impl Into<Option<String>>) {
        self.diags.push(Diagnostic {
            file: self.file.to_path_buf(),
            pos,
            stage: stage.map(str::to_owned),
            message,
            fix: fix.into(),
        });
    }
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric()) && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

const NAME_FIX: &str = "use letters, digits, `_`, `-` and `.`, starting with a letter or digit (names become file names in the cache, so they may not contain `/`)";

fn to_json(v: &serde_yaml::Value) -> Result<Value, String> {
    serde_json::to_value(v).map_err(|e| format!("cannot be used as a param value: {e}"))
}

/// How a matrix value appears in an expanded stage name.
fn label(v: &Value, index: usize) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Object(m) => m
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| index.to_string()),
        _ => index.to_string(),
    }
}

/// An expansion's name from its stage's name and its axes' labels, in order
/// (`train`, [(patch, eyes), (m, 2)] -> `train@patch=eyes,m=2`).
fn expanded_name(base: &str, labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return base.to_owned();
    }
    let parts: Vec<String> = labels.iter().map(|(k, l)| format!("{k}={l}")).collect();
    format!("{base}@{}", parts.join(","))
}

/// How many expansions propagation may make before the pipeline is refused: far more than any
/// real pipeline's, so reaching it means the stages expand each other without end.
const MAX_PROPAGATION_ROUNDS: usize = 10_000;

/// Matrix propagation: a stage that takes one artifact from a matrix stage, and does not pin
/// the axes itself, is expanded along with it — `extract: {inputs: {model: train}}` under
/// `train` with `matrix: {m: [1, 2, 3, 4]}` becomes `extract@m=1` … `extract@m=4`, each fed by
/// its own `train@m=…`, and so on downstream. Inherited axes label and pair the expansions but
/// set no params (the downstream kind need not have them). Lists still fan in. Runs to a fixed
/// point, so chains of any length propagate whatever the order stages are written in.
fn propagate_matrix(
    nodes: &mut Vec<Node>,
    refs: &mut Vec<BTreeMap<String, InputRef>>,
    datasets: &BTreeMap<String, Dataset>,
) -> Result<(), String> {
    'again: for _ in 0..MAX_PROPAGATION_ROUNDS {
        for i in 0..nodes.len() {
            let declared = nodes[i].kind.inputs();
            for (input, r) in &refs[i] {
                let one = declared.iter().any(|d| d.name == input && d.arity == Arity::One);
                let (InputRef::One(target), true) = (r, one) else { continue };
                if datasets.contains_key(target) || target.contains('@') {
                    continue;
                }
                let mine = &nodes[i].matrix;
                let ups: Vec<usize> = (0..nodes.len())
                    .filter(|&j| nodes[j].base == *target)
                    .filter(|&j| nodes[j].matrix.iter().all(|(k, v)| mine.get(k).is_none_or(|m| m == v)))
                    .collect();
                // Several upstream expansions: split. One that carries axes this stage lacks
                // (a matrix narrowed to one value by `--set`): take its axes, so names stay the
                // same whichever values a run selects.
                let new_axes = ups.len() == 1 && nodes[ups[0]].matrix.keys().any(|k| !mine.contains_key(k));
                if ups.len() < 2 && !new_axes {
                    continue;
                }
                let base = nodes[i].clone();
                let base_refs = refs[i].clone();
                let expanded: Vec<Node> = ups
                    .iter()
                    .map(|&j| {
                        let mut n = base.clone();
                        for (k, v) in &nodes[j].matrix {
                            n.matrix.entry(k.clone()).or_insert_with(|| v.clone());
                        }
                        // Every axis, in axis order: this stage's label, else the upstream one's.
                        let (own, up): (BTreeMap<_, _>, BTreeMap<_, _>) =
                            (base.labels.iter().cloned().collect(), nodes[j].labels.iter().cloned().collect());
                        n.labels = n
                            .matrix
                            .keys()
                            .filter_map(|k| own.get(k).or(up.get(k)).map(|l| (k.clone(), l.clone())))
                            .collect();
                        n.name = expanded_name(&n.base, &n.labels);
                        n
                    })
                    .collect();
                let count = expanded.len();
                nodes.splice(i..=i, expanded);
                refs.splice(i..=i, std::iter::repeat_n(base_refs, count));
                continue 'again;
            }
        }
        return Ok(());
    }
    Err(format!(
        "matrix propagation did not settle after {MAX_PROPAGATION_ROUNDS} expansions: stages expand each other without end"
    ))
}

/// Reads, checks and expands a pipeline file. `overrides` are `--set` values.
pub fn load(file: &Path, registry: &Registry, overrides: &[Override]) -> Result<Pipeline, Diagnostics> {
    let one = |message: String, fix: &str| {
        Diagnostics(vec![Diagnostic {
            file: file.to_path_buf(),
            pos: None,
            stage: None,
            message,
            fix: Some(fix.to_owned()),
        }])
    };
    let text = std::fs::read_to_string(file).map_err(|e| {
        one(
            format!("cannot read the pipeline file: {e}"),
            "check the path; the pipelines/ directory holds the shipped pipelines",
        )
    })?;
    if let Some(pos) = crate::nesting::too_deep(&text, crate::nesting::MAX_DEPTH) {
        return Err(Diagnostics(vec![Diagnostic {
            file: file.to_path_buf(),
            pos: Some(pos),
            stage: None,
            message: format!("brackets nest deeper than {} levels here", crate::nesting::MAX_DEPTH),
            fix: Some("a pipeline needs a few levels at most: close the brackets (`]`, `}`) or write the value as block YAML".into()),
        }]));
    }
    let mut cx = Ctx {
        file,
        loc: locate(&text),
        diags: Vec::new(),
    };
    for (path, pos, first) in std::mem::take(&mut cx.loc.duplicates) {
        let key = path.last().cloned().unwrap_or_default();
        cx.diags.push(Diagnostic {
            file: file.to_path_buf(),
            pos: Some(pos),
            stage: (path.first().map(String::as_str) == Some("stages") && path.len() == 2).then(|| key.clone()),
            message: format!("duplicate key `{key}` (first defined at line {})", first.line),
            fix: Some("rename or remove one of the two".into()),
        });
    }
    let spec: PipelineFile = match serde_yaml::from_str(&text) {
        Ok(s) => s,
        Err(e) => {
            let msg = e.to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
            let pos = e.location().map(|l| crate::Pos {
                line: l.line(),
                col: l.column(),
            });
            let fix = if msg.contains("unknown field") {
                "remove or rename the key: the allowed keys are listed in the message"
            } else {
                "fix the YAML at that position; README.md shows the pipeline file format"
            };
            cx.diags.push(Diagnostic {
                file: file.to_path_buf(),
                pos,
                stage: None,
                message: format!("invalid pipeline file: {msg}"),
                fix: Some(fix.into()),
            });
            return Err(Diagnostics(cx.diags));
        }
    };
    if !cx.diags.is_empty() {
        return Err(Diagnostics(cx.diags));
    }
    let pipeline = resolve(spec, &mut cx, registry, overrides);
    match pipeline {
        Some(p) if cx.diags.is_empty() => Ok(p),
        _ => Err(Diagnostics(cx.diags)),
    }
}

/// The phases of resolving a parsed file: names, overrides, datasets, expanded stages, matrix
/// propagation, input binding, order. Each phase adds its problems to `cx`; a phase whose
/// result the next cannot use stops here.
fn resolve(mut spec: PipelineFile, cx: &mut Ctx<'_>, registry: &Registry, overrides: &[Override]) -> Option<Pipeline> {
    check_names(&spec, cx);
    apply_overrides(&mut spec, overrides, cx);
    let base = cx.file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let root = base.join(spec.root.as_deref().unwrap_or("."));
    let root = std::fs::canonicalize(&root).unwrap_or(root);
    let cache = root.join(spec.cache.as_deref().unwrap_or("cache"));
    let datasets = resolve_datasets(&spec, &root, cx);
    let (mut nodes, mut refs) = expand_stages(&spec, registry, cx);
    if !cx.diags.is_empty() {
        return None;
    }
    if let Err(why) = propagate_matrix(&mut nodes, &mut refs, &datasets) {
        cx.err_key(
            &["stages"],
            None,
            why,
            "check the `inputs:` of the matrix stages and of what takes their artifacts".to_owned(),
        );
        return None;
    }
    let bound = bind_inputs(&nodes, &refs, &datasets, cx);
    for (node, inputs) in nodes.iter_mut().zip(bound) {
        node.inputs = inputs;
    }
    if !cx.diags.is_empty() {
        return None;
    }
    let nodes = toposort(nodes, cx)?;
    Some(Pipeline {
        name: spec.name,
        file: cx.file.to_path_buf(),
        root,
        cache,
        store: spec.store,
        seed: spec.seed,
        datasets,
        nodes,
    })
}

/// Names become directory names in the cache, and datasets and stages share one namespace.
fn check_names(spec: &PipelineFile, cx: &mut Ctx<'_>) {
    if !valid_name(&spec.name) {
        cx.err_value(
            &["name"],
            None,
            format!("pipeline name `{}` is not allowed", spec.name),
            NAME_FIX.to_owned(),
        );
    }
    for name in spec.datasets.keys() {
        if !valid_name(name) {
            cx.err_key(
                &["datasets", name],
                None,
                format!("dataset name `{name}` is not allowed"),
                NAME_FIX.to_owned(),
            );
        }
        if spec.stages.contains_key(name) {
            cx.err_key(
                &["stages", name],
                Some(name),
                format!("`{name}` names both a dataset and a stage"),
                "rename one of them: inputs refer to either by name".to_owned(),
            );
        }
    }
    for name in spec.stages.keys() {
        if !valid_name(name) {
            cx.err_key(
                &["stages", name],
                Some(name),
                format!("stage name `{name}` is not allowed"),
                format!("{NAME_FIX}; `@` is reserved for matrix expansions"),
            );
        }
    }
}

/// `--set STAGE.PARAM=VALUE`: sets the param, or narrows a matrix axis to that one value.
fn apply_overrides(spec: &mut PipelineFile, overrides: &[Override], cx: &mut Ctx<'_>) {
    for o in overrides {
        let Some(st) = spec.stages.get_mut(&o.stage) else {
            let hint = did_you_mean(&o.stage, spec.stages.keys().map(String::as_str));
            cx.err_key(
                &["stages"],
                None,
                format!("`--set {}`: there is no stage `{}`", o.text, o.stage),
                format!("{hint}stages: {}", spec.stages.keys().cloned().collect::<Vec<_>>().join(", ")),
            );
            continue;
        };
        if let Some(axis) = st.matrix.get_mut(&o.param) {
            *axis = vec![o.value.clone()];
        } else {
            st.params.insert(o.param.clone(), o.value.clone());
        }
    }
}

/// The datasets with their paths resolved against `root`; a missing path is an error.
fn resolve_datasets(spec: &PipelineFile, root: &Path, cx: &mut Ctx<'_>) -> BTreeMap<String, Dataset> {
    let mut datasets = BTreeMap::new();
    for (name, d) in &spec.datasets {
        let path = root.join(&d.path);
        if !path.exists() {
            let about = d.about.as_deref().map(|a| format!(" ({a})")).unwrap_or_default();
            cx.err_value(
                &["datasets", name, "path"],
                None,
                format!("dataset `{name}`: path {} does not exist", path.display()),
                format!(
                    "create it or correct `path`{about}; relative paths are resolved against {}",
                    root.display()
                ),
            );
        }
        datasets.insert(
            name.clone(),
            Dataset {
                name: name.clone(),
                path,
                about: d.about.clone(),
            },
        );
    }
    datasets
}

/// Every stage, in file order, expanded along its matrix; each node with the input
/// references it was written with (bound later).
fn expand_stages(spec: &PipelineFile, registry: &Registry, cx: &mut Ctx<'_>) -> (Vec<Node>, Vec<BTreeMap<String, InputRef>>) {
    let mut order: Vec<(&String, &StageSpec)> = spec.stages.iter().collect();
    order.sort_by_key(|(n, _)| cx.loc.key(&["stages", n]).map(|p| (p.line, p.col)));
    let mut nodes = Vec::new();
    let mut refs = Vec::new();
    for (name, st) in order {
        for node in expand_stage(name, st, registry, cx) {
            nodes.push(node);
            refs.push(st.inputs.clone());
        }
    }
    (nodes, refs)
}

/// One stage's nodes: its kind looked up, params checked, coerced and defaulted, one node per
/// combination of matrix values (named `stage@axis=value,...`), each validated by its kind.
fn expand_stage(name: &str, st: &StageSpec, registry: &Registry, cx: &mut Ctx<'_>) -> Vec<Node> {
    let Some(kind) = registry.get(&st.kind) else {
        let kinds = registry.kinds();
        let hint = did_you_mean(&st.kind, kinds.iter().copied());
        cx.err_value(
            &["stages", name, "kind"],
            Some(name),
            format!("unknown stage kind `{}`", st.kind),
            format!("{hint}valid kinds: {}", kinds.join(", ")),
        );
        return Vec::new();
    };
    let specs = kind.params();
    let keys_ok = check_param_keys(name, st, &specs, cx);
    let (fixed, axes) = (fixed_params(name, st, &specs, cx), matrix_axes(name, st, &specs, cx));
    let parts = check_parts(name, st, &kind, registry, cx);
    let resources_ok = check_resources(name, st, cx);
    let (true, true, Some(fixed), Some(axes), Some(parts)) = (keys_ok, resources_ok, fixed, axes, parts) else {
        return Vec::new();
    };
    combinations(&axes)
        .into_iter()
        .filter_map(|combo| expansion(name, &kind, &fixed, combo, cx))
        .map(|mut node| {
            node.resources = st.resources.clone().unwrap_or_default().or(kind.resources(&node.params));
            node.parts = parts;
            node
        })
        .collect()
}

/// Whether the stage's `resources:` can be asked of Slurm (memory and time in its notation, a
/// retry factor above 1).
fn check_resources(name: &str, st: &StageSpec, cx: &mut Ctx<'_>) -> bool {
    let Some(r) = &st.resources else { return true };
    match r.check() {
        Ok(()) => true,
        Err(why) => {
            cx.err_value(
                &["stages", name, "resources"],
                Some(name),
                format!("resources: {why}"),
                "see README: Scaling out (resources:)".to_owned(),
            );
            false
        }
    }
}

/// The stage's `parts:`, if its kind can be split and the count makes sense.
fn check_parts(name: &str, st: &StageSpec, kind: &Arc<dyn Stage>, registry: &Registry, cx: &mut Ctx<'_>) -> Option<usize> {
    match st.parts {
        None => Some(1),
        Some(0) => {
            cx.err_value(
                &["stages", name, "parts"],
                Some(name),
                "`parts: 0` leaves no part to run".to_owned(),
                "use parts: 1 or more".to_owned(),
            );
            None
        }
        Some(n) if n > 1 && !kind.splittable() => {
            cx.err_key(
                &["stages", name, "parts"],
                Some(name),
                format!("stage kind `{}` cannot be split into parts", st.kind),
                format!(
                    "remove `parts:`; kinds that can be split: {}",
                    registry
                        .iter()
                        .filter(|k| k.splittable())
                        .map(|k| k.kind())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            None
        }
        Some(n) => Some(n),
    }
}

/// Every param and matrix key is one the kind declares, set in one place, with values.
fn check_param_keys(name: &str, st: &StageSpec, specs: &[ParamSpec], cx: &mut Ctx<'_>) -> bool {
    let declared: Vec<&str> = specs.iter().map(|p| p.name).collect();
    let mut ok = true;
    for key in st.params.keys().chain(st.matrix.keys()) {
        if !declared.contains(&key.as_str()) {
            let hint = did_you_mean(key, declared.iter().copied());
            let section = if st.params.contains_key(key) { "params" } else { "matrix" };
            cx.err_key(
                &["stages", name, section, key],
                Some(name),
                format!("stage kind `{}` has no param `{key}`", st.kind),
                format!("{hint}its params: {}", declared.join(", ")),
            );
            ok = false;
        }
    }
    for key in st.matrix.keys().filter(|k| st.params.contains_key(*k)) {
        cx.err_key(
            &["stages", name, "matrix", key],
            Some(name),
            format!("`{key}` is set both in `params` and in `matrix`"),
            "keep it in one place: the matrix sets the param for each expansion".to_owned(),
        );
        ok = false;
    }
    for (key, values) in &st.matrix {
        if values.is_empty() {
            cx.err_key(
                &["stages", name, "matrix", key],
                Some(name),
                format!("matrix axis `{key}` has no values"),
                "give at least one value".to_owned(),
            );
            ok = false;
        }
    }
    ok
}

/// The params that no matrix axis sets, coerced to their declared types, defaults filled in;
/// `None` after reporting any that is missing or mistyped.
fn fixed_params(name: &str, st: &StageSpec, specs: &[ParamSpec], cx: &mut Ctx<'_>) -> Option<BTreeMap<String, Value>> {
    let mut fixed = BTreeMap::new();
    let mut ok = true;
    for p in specs.iter().filter(|p| !st.matrix.contains_key(p.name)) {
        let raw = match st.params.get(p.name).map(to_json) {
            Some(Ok(j)) => Some(j),
            Some(Err(e)) => {
                cx.err_value(
                    &["stages", name, "params", p.name],
                    Some(name),
                    format!("param `{}` {e}", p.name),
                    format!("expected {}", p.ty),
                );
                ok = false;
                continue;
            }
            None => p.default.clone(),
        };
        let Some(v) = raw else {
            cx.err_key(
                &["stages", name, "params"],
                Some(name),
                format!("required param `{}` is missing", p.name),
                format!("add `{}: <{}>` under params ({})", p.name, p.ty, p.doc),
            );
            ok = false;
            continue;
        };
        match p.ty.coerce(&v) {
            Ok(c) => {
                fixed.insert(p.name.to_owned(), c);
            }
            Err(e) => {
                cx.err_value(
                    &["stages", name, "params", p.name],
                    Some(name),
                    format!("param `{}`: {e}", p.name),
                    format!("expected {} ({})", p.ty, p.doc),
                );
                ok = false;
            }
        }
    }
    ok.then_some(fixed)
}

/// The matrix axes with their values coerced to the params' types; `None` after reporting a
/// value that does not fit.
fn matrix_axes(name: &str, st: &StageSpec, specs: &[ParamSpec], cx: &mut Ctx<'_>) -> Option<Vec<(String, Vec<Value>)>> {
    let mut axes = Vec::new();
    let mut ok = true;
    for (key, values) in &st.matrix {
        let Some(p) = specs.iter().find(|p| p.name == key) else { continue };
        let mut coerced = Vec::new();
        for (i, v) in values.iter().enumerate() {
            match to_json(v).and_then(|j| p.ty.coerce(&j)) {
                Ok(c) => coerced.push(c),
                Err(e) => {
                    let idx = i.to_string();
                    cx.err_value(
                        &["stages", name, "matrix", key, &idx],
                        Some(name),
                        format!("matrix value {i} of `{key}`: {e}"),
                        format!("expected {}", p.ty),
                    );
                    ok = false;
                }
            }
        }
        axes.push((key.clone(), coerced));
    }
    ok.then_some(axes)
}

/// The cross product of the axes: one list of (axis, value, index of the value) per expansion.
fn combinations(axes: &[(String, Vec<Value>)]) -> Vec<Vec<(String, Value, usize)>> {
    let mut combos: Vec<Vec<(String, Value, usize)>> = vec![Vec::new()];
    for (key, values) in axes {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                values.iter().enumerate().map(move |(i, v)| {
                    let mut c = c.clone();
                    c.push((key.clone(), v.clone(), i));
                    c
                })
            })
            .collect();
    }
    combos
}

/// The node of one matrix combination, named and validated by its kind.
fn expansion(
    name: &str,
    kind: &Arc<dyn Stage>,
    fixed: &BTreeMap<String, Value>,
    combo: Vec<(String, Value, usize)>,
    cx: &mut Ctx<'_>,
) -> Option<Node> {
    let mut params = fixed.clone();
    let mut matrix = BTreeMap::new();
    let mut labels = Vec::new();
    for (k, v, i) in combo {
        labels.push((k.clone(), label(&v, i)));
        params.insert(k.clone(), v.clone());
        matrix.insert(k, v);
    }
    let node_name = expanded_name(name, &labels);
    if !labels.is_empty() && !node_name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-@=,+".contains(c)) {
        cx.err_key(
            &["stages", name, "matrix"],
            Some(name),
            format!("matrix expansion `{node_name}` is not a usable stage name"),
            "use matrix values made of letters, digits, `_`, `-`, `.` (or mappings with such a `name`)".to_owned(),
        );
        return None;
    }
    let params = Params(params);
    if let Err(e) = kind.validate(&params) {
        cx.err_key(
            &["stages", name, "params"],
            Some(&node_name),
            format!("invalid params: {e}"),
            "adjust the params as the message says".to_owned(),
        );
        return None;
    }
    Some(Node {
        name: node_name,
        base: name.to_owned(),
        kind: kind.clone(),
        params,
        matrix,
        labels,
        inputs: BTreeMap::new(),
        resources: Resources::default(),
        parts: 1,
    })
}

/// The sources of every node's inputs: datasets, named expansions, or a matrix stage's
/// expansions (paired by shared axes); declared inputs only, one-artifact inputs given one.
fn bind_inputs(
    nodes: &[Node],
    refs: &[BTreeMap<String, InputRef>],
    datasets: &BTreeMap<String, Dataset>,
    cx: &mut Ctx<'_>,
) -> Vec<BTreeMap<String, Vec<Source>>> {
    let names = Names::new(nodes, datasets);
    let mut bound = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let declared = node.kind.inputs();
        let mut inputs = BTreeMap::new();
        for (input, r) in &refs[i] {
            let Some(d) = declared.iter().find(|d| d.name == input) else {
                let all: Vec<&str> = declared.iter().map(|d| d.name).collect();
                cx.err_key(
                    &["stages", &node.base, "inputs", input],
                    Some(&node.name),
                    format!("stage kind `{}` has no input `{input}`", node.kind.kind()),
                    format!("{}its inputs: {}", did_you_mean(input, all.iter().copied()), all.join(", ")),
                );
                continue;
            };
            let sources = names.sources(node, input, r, cx);
            check_arity(node, input, d.arity, &sources, nodes, cx);
            inputs.insert(input.clone(), sources);
        }
        for d in declared.iter().filter(|d| !d.optional && !refs[i].contains_key(d.name)) {
            cx.err_key(
                &["stages", &node.base],
                Some(&node.name),
                format!("required input `{}` is not bound", d.name),
                format!("add `inputs: {{{}: <dataset or stage>}}` ({})", d.name, d.doc),
            );
        }
        bound.push(inputs);
    }
    bound
}

/// What an input reference can name: datasets, expanded stages by full name, matrix stages by
/// base name.
struct Names<'a> {
    nodes: &'a [Node],
    datasets: &'a BTreeMap<String, Dataset>,
    by_base: HashMap<&'a str, Vec<usize>>,
    by_name: HashMap<&'a str, usize>,
}

impl<'a> Names<'a> {
    fn new(nodes: &'a [Node], datasets: &'a BTreeMap<String, Dataset>) -> Self {
        let by_base = nodes
            .iter()
            .enumerate()
            .fold(HashMap::new(), |mut m: HashMap<&str, Vec<usize>>, (i, n)| {
                m.entry(n.base.as_str()).or_default().push(i);
                m
            });
        let by_name = nodes.iter().enumerate().map(|(i, n)| (n.name.as_str(), i)).collect();
        Names {
            nodes,
            datasets,
            by_base,
            by_name,
        }
    }

    /// The sources that input `input` of `node` names through `r`.
    fn sources(&self, node: &Node, input: &str, r: &InputRef, cx: &mut Ctx<'_>) -> Vec<Source> {
        let mut sources = Vec::new();
        for target in r.names() {
            if self.datasets.contains_key(target) {
                sources.push(Source::Dataset(target.to_owned()));
            } else if let Some(&j) = self.by_name.get(target).filter(|_| target.contains('@')) {
                sources.push(Source::Stage(j));
            } else if let Some(exps) = self.by_base.get(target) {
                // Same-matrix stages pair up expansion by expansion.
                let matching = exps.iter().copied().filter(|&j| {
                    self.nodes[j]
                        .matrix
                        .iter()
                        .all(|(k, v)| node.matrix.get(k).is_none_or(|mine| mine == v))
                });
                sources.extend(matching.map(Source::Stage));
            } else {
                let all = self.datasets.keys().map(String::as_str).chain(self.by_base.keys().copied());
                cx.err_value(
                    &["stages", node.base.as_str(), "inputs", input],
                    Some(&node.name),
                    format!("input `{input}` refers to `{target}`, which is neither a dataset nor a stage"),
                    format!("{}declare it under `datasets:` or `stages:`", did_you_mean(target, all)),
                );
            }
        }
        sources
    }
}

/// A one-artifact input bound to several sources is an error naming them.
fn check_arity(node: &Node, input: &str, arity: Arity, sources: &[Source], nodes: &[Node], cx: &mut Ctx<'_>) {
    if arity != Arity::One || sources.len() <= 1 {
        return;
    }
    let names: Vec<String> = sources
        .iter()
        .map(|s| match s {
            Source::Stage(j) => nodes[*j].name.clone(),
            Source::Dataset(d) => d.clone(),
        })
        .collect();
    cx.err_value(
        &["stages", &node.base, "inputs", input],
        Some(&node.name),
        format!("input `{input}` takes one artifact but gets {}: {}", names.len(), names.join(", ")),
        "name one expansion (like `train@patch=eyes`), or give this stage the same matrix so expansions pair up".to_owned(),
    );
}

/// Orders nodes so inputs come first (ties keep file order); reports a cycle if there is one.
fn toposort(nodes: Vec<Node>, cx: &mut Ctx<'_>) -> Option<Vec<Node>> {
    let n = nodes.len();
    let deps: Vec<BTreeSet<usize>> = nodes
        .iter()
        .map(|nd| {
            nd.inputs
                .values()
                .flatten()
                .filter_map(|s| if let Source::Stage(j) = s { Some(*j) } else { None })
                .collect()
        })
        .collect();
    let mut indeg: Vec<usize> = deps.iter().map(BTreeSet::len).collect();
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(&i) = ready.iter().next() {
        ready.remove(&i);
        order.push(i);
        for j in 0..n {
            if deps[j].contains(&i) {
                indeg[j] -= 1;
                if indeg[j] == 0 {
                    ready.insert(j);
                }
            }
        }
    }
    if order.len() < n {
        // Walk upstream from a node left over until a node repeats: that loop is a cycle.
        let left: BTreeSet<usize> = (0..n).filter(|i| !order.contains(i)).collect();
        let mut path = vec![*left.iter().next()?];
        loop {
            let last = *path.last()?;
            let next = *deps[last].iter().find(|d| left.contains(d))?;
            if let Some(pos) = path.iter().position(|&p| p == next) {
                // path runs downstream -> upstream; print it upstream -> downstream, starting
                // from the stage that comes first in the file.
                let mut ring: Vec<usize> = path[pos..].iter().rev().copied().collect();
                let start = ring.iter().enumerate().min_by_key(|(_, &k)| k).map(|(i, _)| i).unwrap_or(0);
                ring.rotate_left(start);
                let mut cycle: Vec<&str> = ring.iter().map(|&k| nodes[k].name.as_str()).collect();
                cycle.push(cycle[0]);
                let first = nodes[ring[0]].base.clone();
                cx.err_key(
                    &["stages", &first, "inputs"],
                    Some(&first),
                    format!("the stages form a cycle: {}", cycle.join(" -> ")),
                    "break the cycle: a stage cannot depend, even indirectly, on its own output".to_owned(),
                );
                return None;
            }
            path.push(next);
        }
    }
    // Renumber Source::Stage indices to the new order.
    let mut new_index = vec![0; n];
    for (new, &old) in order.iter().enumerate() {
        new_index[old] = new;
    }
    let mut slots: Vec<Option<Node>> = nodes.into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(n);
    for &old in &order {
        let mut node = slots[old].take()?;
        for sources in node.inputs.values_mut() {
            for s in sources.iter_mut() {
                if let Source::Stage(j) = s {
                    *j = new_index[*j];
                }
            }
        }
        out.push(node);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_read_their_value_as_yaml() {
        let o = parse_override("train.m=3").unwrap();
        assert_eq!((o.stage.as_str(), o.param.as_str(), o.value.as_i64()), ("train", "m", Some(3)));
        let o = parse_override("align.size=[112, 112]").unwrap();
        assert_eq!(to_json(&o.value).unwrap(), serde_json::json!([112, 112]));
        let o = parse_override("train.loss=a-softmax").unwrap();
        assert_eq!(o.value.as_str(), Some("a-softmax"));
        assert!(parse_override("train=3").unwrap_err().contains("STAGE.PARAM=VALUE"));
        assert!(parse_override("train.m").unwrap_err().contains("STAGE.PARAM=VALUE"));
    }

    #[test]
    fn names_and_labels() {
        assert!(valid_name("train-2.b_c"));
        assert!(!valid_name("../x") && !valid_name("a/b") && !valid_name("") && !valid_name(".hidden") && !valid_name("a@b"));
        assert_eq!(label(&serde_json::json!({"name": "eyes", "box": [0, 0, 1, 1]}), 4), "eyes");
        assert_eq!(label(&serde_json::json!([1, 2]), 4), "4");
        assert_eq!(label(&serde_json::json!(3), 0), "3");
    }
}
