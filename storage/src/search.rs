//! The search key: how names are folded so that search is case- and
//! accent-insensitive ("Zoë" and "ZOE" both fold to "zoe").

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Folds `text` for search: compatibility decomposition, combining marks
/// (accents) removed, lowercased, whitespace collapsed to single spaces.
pub fn search_key(text: &str) -> String {
    let folded: String = text.nfkd().filter(|c| !is_combining_mark(*c)).flat_map(char::to_lowercase).collect();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_case_accents_and_spaces() {
        assert_eq!(search_key("Zoë  Ångström"), "zoe angstrom");
        assert_eq!(search_key("ÉLODIE"), "elodie");
        assert_eq!(search_key("ﬁne"), "fine");
        assert_eq!(search_key("  "), "");
    }
}
