//! The one font the PNGs are drawn with: a DejaVu Sans subset (printable ASCII, θ λ ψ, superscript
//! digits and a few signs; `fonts/make-subset.sh`), compiled in so that a chart renders the
//! same everywhere without system fonts. SVGs only name the family.

use plotters::style::FontStyle;
use std::sync::OnceLock;

/// The family every text element asks for; the embedded font is registered under it.
pub(crate) const FAMILY: &str = "sans-serif";

static DEJAVU_SANS_SUBSET: &[u8] = include_bytes!("../fonts/DejaVuSans-subset.ttf");

/// Makes the embedded font plotters' `sans-serif` (once per process).
pub(crate) fn register() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, DEJAVU_SANS_SUBSET).is_ok());
    anyhow::ensure!(
        ok,
        "the embedded chart font (fonts/DejaVuSans-subset.ttf) is not a readable TrueType font"
    );
    Ok(())
}
