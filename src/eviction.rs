//! The choice both bounded tables make when they are full: the entries seen least
//! recently go first (the failure counters' keys, [`crate::validation::FailureCounter`];
//! the chain heads, [`crate::chain::PartitionChains`]).

/// The `n` entries with the oldest times, oldest first; ties in name order, so that
/// the same table always gives up the same entries. Fewer if there are fewer entries.
pub fn least_recent<'a>(
    entries: impl Iterator<Item = (i64, &'a str)>,
    n: usize,
) -> Vec<(i64, &'a str)> {
    let mut oldest: Vec<(i64, &str)> = entries.collect();
    if n < oldest.len() {
        // Linear partition first: a full table is large, and only its oldest part is
        // sorted.
        oldest.select_nth_unstable(n);
        oldest.truncate(n);
    }
    oldest.sort_unstable();
    oldest
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::least_recent;

    #[test]
    fn the_oldest_go_first_and_ties_go_by_name() {
        let entries = [(30, "c"), (10, "b"), (20, "a"), (10, "a"), (40, "d")];
        assert_eq!(
            least_recent(entries.into_iter(), 3),
            vec![(10, "a"), (10, "b"), (20, "a")]
        );
        assert_eq!(least_recent(entries.into_iter(), 9).len(), 5);
        assert!(least_recent(entries.into_iter(), 0).is_empty());
    }

    proptest! {
        #[test]
        fn least_recent_is_the_head_of_the_sorted_entries(
            times in proptest::collection::vec(0i64..20, 0..60),
            n in 0usize..70,
        ) {
            let names: Vec<String> = (0..times.len()).map(|i| format!("k{i:02}")).collect();
            let entries: Vec<(i64, &str)> =
                times.iter().zip(&names).map(|(t, k)| (*t, k.as_str())).collect();
            let mut sorted = entries.clone();
            sorted.sort_unstable();
            sorted.truncate(n);
            prop_assert_eq!(least_recent(entries.into_iter(), n), sorted);
        }
    }
}
