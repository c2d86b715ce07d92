/// `, did you mean "x"?` when one candidate is close enough to be a likely
/// typo, else empty. Close means an edit distance (with transpositions) of
/// at most a third of the word (at least 1), or a Jaro-Winkler similarity of
/// 0.85 or more for longer words with several slips.
pub(crate) fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> String {
    let input = input.to_ascii_lowercase();
    let limit = (input.chars().count() / 3).max(1);
    let mut best: Option<(usize, f64, &str)> = None;
    for c in candidates {
        let lc = c.to_ascii_lowercase();
        let d = strsim::damerau_levenshtein(&input, &lc);
        let jw = strsim::jaro_winkler(&input, &lc);
        if d > limit && jw < 0.85 {
            continue;
        }
        if best.is_none_or(|(bd, bjw, _)| (d, -jw) < (bd, -bjw)) {
            best = Some((d, jw, c));
        }
    }
    match best {
        Some((_, _, c)) => format!(", did you mean \"{c}\"?"),
        None => String::new(),
    }
}
