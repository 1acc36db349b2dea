//! "Did you mean": the accepted word nearest to one that is not accepted,
//! for an unknown argument, an unknown mode, or a `tx = ...` that names no
//! parameter.
//!
//! This module imports no other: callers pass the words they accept, so each
//! list keeps its one home (the argument table and the modes in `attr`, the
//! parameters in the function's signature).

/// What an unknown argument was probably meant to be. `arguments` pairs each
/// argument's name with the words a user may reach for instead (which edit
/// distance would not find); a bare mode word (`shared`) was meant as
/// `mode = shared`.
pub(crate) fn argument(
    written: &str,
    arguments: &[(&str, &[&str])],
    modes: &[&str],
) -> Option<String> {
    if let Some((name, _)) = arguments
        .iter()
        .find(|(_, synonyms)| synonyms.contains(&written))
    {
        return Some((*name).to_owned());
    }
    if modes.contains(&written) {
        return Some(format!("mode = {written}"));
    }
    let names: Vec<&str> = arguments.iter().map(|(name, _)| *name).collect();
    closest(written, &names).map(str::to_owned)
}

/// The candidate nearest to `written` by edit distance, if near enough to
/// be a typo.
pub(crate) fn closest<'a>(written: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let written = written.to_lowercase();
    candidates
        .iter()
        .map(|candidate| (edit_distance(&written, candidate), *candidate))
        .filter(|(distance, candidate)| {
            *distance <= (candidate.len().max(written.len()) / 3).max(1)
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance, with a transposition counted as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}
