//! "Did you mean …?": the closest known name to a misspelt one, for keys,
//! dependency ids and any other name a plan refers to.

/// The candidate closest to `word` by edit distance (case-insensitive,
/// transpositions count once), or `None` when nothing is close enough to be
/// a likely typo. Ties go to the earliest candidate.
pub fn did_you_mean<'a, I>(word: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let w = word.to_lowercase();
    // About one typo per three characters, at most three in all.
    let limit = (w.chars().count() / 3).clamp(1, 3);
    let mut best: Option<(usize, &'a str)> = None;
    for c in candidates {
        if c == word {
            continue;
        }
        let d = strsim::damerau_levenshtein(&w, &c.to_lowercase());
        if d <= limit && best.is_none_or(|(b, _)| d < b) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// `did you mean `x`?`, for a diagnostic's help line.
pub fn hint<'a, I>(word: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    did_you_mean(word, candidates).map(|c| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_names_are_found_and_far_ones_are_not() {
        let keys = ["depends_on", "allowed_paths", "priority", "tasks"];
        assert_eq!(did_you_mean("alowed_paths", keys), Some("allowed_paths"));
        assert_eq!(did_you_mean("depend_on", keys), Some("depends_on"));
        assert_eq!(did_you_mean("dependson", keys), Some("depends_on"));
        assert_eq!(did_you_mean("taks", keys), Some("tasks"));
        assert_eq!(did_you_mean("Priority", keys), Some("priority"));
        assert_eq!(did_you_mean("estimate", keys), None);
        assert_eq!(did_you_mean("x", keys), None);
        assert_eq!(did_you_mean("ws-1", ["WS-1", "WS-2"]), Some("WS-1"));
        assert_eq!(hint("WS-9", ["WS-1"]), Some("did you mean `WS-1`?".into()));
    }
}
