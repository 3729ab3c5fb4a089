//! Stage fingerprints: blake3 over a canonical JSON encoding of everything that determines
//! a stage's output.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use spherepipe_pipeline::Node;
use std::collections::BTreeMap;

/// JSON with object keys sorted and no whitespace, whatever serde_json's map ordering is.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                write_canonical(&m[k.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// What a fingerprint covers: kind, kind version, resolved params (less the kind's execution
/// settings, such as `devices`), the content hashes of the inputs (in binding order), and the
/// seed when the kind uses it. Its canonical JSON is what is hashed, so a field added here
/// moves every fingerprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Material {
    /// The stage kind.
    pub kind: String,
    /// The kind's `version()`.
    pub version: String,
    /// Resolved params.
    pub params: BTreeMap<String, Value>,
    /// Content hashes of each input's sources.
    pub inputs: BTreeMap<String, Vec<String>>,
    /// The pipeline's seed, for kinds that use one.
    pub seed: Option<u64>,
}

impl Material {
    /// The material of `node` with these input hashes.
    pub fn of(node: &Node, input_hashes: &BTreeMap<String, Vec<String>>, seed: u64) -> Material {
        Material {
            kind: node.kind.kind().to_owned(),
            version: node.kind.version().to_owned(),
            params: node.params.outcome(&node.kind.params()),
            inputs: input_hashes.clone(),
            seed: node.kind.uses_seed().then_some(seed),
        }
    }

    /// The fingerprint: blake3 over a prefix and the canonical JSON.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.to_json())
    }

    /// The material as JSON, built field by field so it cannot fail (serde's `to_value` can,
    /// in principle, and a fallback there would give different stages one fingerprint). Keys
    /// are the serde field names, so this equals what `Serialize` writes.
    fn to_json(&self) -> Value {
        let inputs = self
            .inputs
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.clone())))
            .collect::<serde_json::Map<_, _>>();
        let fields = [
            ("kind", Value::from(self.kind.clone())),
            ("version", Value::from(self.version.clone())),
            ("params", Value::Object(self.params.clone().into_iter().collect())),
            ("inputs", Value::Object(inputs)),
            ("seed", self.seed.map_or(Value::Null, Value::from)),
        ];
        Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }
}

/// blake3 over the prefix and the canonical JSON of `material`.
pub fn fingerprint(material: &Value) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"spherepipe-fingerprint-v1\n");
    h.update(canonical_json(material).as_bytes());
    h.finalize().to_hex().to_string()
}

/// The fingerprint of part `part` of the stage with fingerprint `stage`: a part's artifact
/// depends on exactly what the stage's does, and on which part of how many it is.
pub fn part_fingerprint(stage: &str, part: spherepipe_stage::Part) -> String {
    fingerprint(&serde_json::json!({"stage": stage, "part": part.index, "of": part.count}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let v = json!({"b": 1, "a": {"z": [1, {"y": 2, "x": 1.5}], "c": "s"}});
        assert_eq!(canonical_json(&v), r#"{"a":{"c":"s","z":[1,{"x":1.5,"y":2}]},"b":1}"#);
    }

    #[test]
    fn material_json_is_what_serde_writes() {
        let m = Material {
            kind: "train".into(),
            version: "3".into(),
            params: BTreeMap::from([("m".to_owned(), json!(4)), ("patch".to_owned(), json!({"box": [0, 1]}))]),
            inputs: BTreeMap::from([("shards".to_owned(), vec!["ab".to_owned()])]),
            seed: Some(7),
        };
        assert_eq!(m.to_json(), serde_json::to_value(&m).unwrap());
        let unseeded = Material { seed: None, ..m };
        assert_eq!(unseeded.to_json()["seed"], Value::Null);
        assert_eq!(unseeded.to_json(), serde_json::to_value(&unseeded).unwrap());
    }

    #[test]
    fn fingerprint_is_blake3_of_the_prefixed_canonical_text() {
        let v = json!({"kind": "k"});
        let expect = blake3::hash(b"spherepipe-fingerprint-v1\n{\"kind\":\"k\"}").to_hex().to_string();
        assert_eq!(fingerprint(&v), expect);
    }
}
