//! Reading back figures that may be NaN: serde_json writes a NaN as `null`, so a field that
//! can be NaN reads `null` as NaN instead of refusing the file it wrote itself.

use serde::{Deserialize, Deserializer};

/// A number, or NaN for `null`.
pub(crate) fn f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// A list of numbers, NaN for each `null`.
pub(crate) fn f64s<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    Ok(Vec::<Option<f64>>::deserialize(d)?
        .into_iter()
        .map(|v| v.unwrap_or(f64::NAN))
        .collect())
}
