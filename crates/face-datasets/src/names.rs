//! Name normalisation for matching identities across datasets.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Folds case, strips diacritics (NFKD, then drops combining marks) and treats `_`, `-`, `.`
/// and spaces alike, so `José_GARCÍA`, `jose-garcia` and `Jose Garcia` compare equal.
pub fn normalize_name(name: &str) -> String {
    let folded: String = name
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect();
    folded
        .split(|c: char| c == '_' || c == '-' || c == '.' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::normalize_name;

    #[test]
    fn spellings_of_one_name_agree() {
        for n in ["José_GARCÍA", "jose-garcia", "Jose Garcia", "  JOSE__garcia ", "Jose.Garcia"] {
            assert_eq!(normalize_name(n), "jose garcia", "{n}");
        }
        assert_eq!(normalize_name("Zoë Ångström-Lübeck"), "zoe angstrom lubeck");
        assert_ne!(normalize_name("Jose_Garcia"), normalize_name("Josef_Garcia"));
    }
}
