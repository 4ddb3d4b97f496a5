//! Partition -> broker assignment.
//!
//! Every partition has one owner broker (on a single node a broker is a core; in a cluster,
//! one core of one node). New partitions go to the least-loaded broker; when the set of
//! brokers changes, partitions of vanished brokers move first, then the most-loaded brokers
//! give partitions to the least-loaded until no two differ by more than one. Each move bumps
//! the partition's leader epoch so clients notice the new leader.

/// Owner of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOwner {
    /// Kafka broker id of the owner.
    pub broker: u32,
    /// Kafka leader epoch: bumped whenever the owner changes.
    pub epoch: i32,
    /// Placed by an operator (a reassignment, or an explicit assignment at creation): load
    /// balancing leaves it where it is; only its broker leaving moves it (and unpins it).
    pub pinned: bool,
}

impl PartitionOwner {
    pub fn new(broker: u32) -> Self {
        PartitionOwner { broker, epoch: 0, pinned: false }
    }
}

/// Partition counts per broker (index = position in `brokers`) over a set of owners.
pub fn load(brokers: &[u32], owners: impl Iterator<Item = u32>) -> Vec<u32> {
    let mut load = vec![0u32; brokers.len()];
    for b in owners {
        if let Ok(i) = brokers.binary_search(&b) {
            load[i] += 1;
        }
    }
    load
}

/// Picks owners (indices into the broker list) for `count` new partitions of a topic, given
/// the topic's own load (`topic`) and every broker's (`total`), updating both. A topic is
/// spread first (no broker gets a second of its partitions before each has one), then the
/// least-loaded broker wins; ties go to the lowest index after `start`, so topics spread
/// their first partitions around. That is the layout [`rebalance`] keeps, so the cluster's
/// leader does not move partitions right after they were created.
pub fn place(topic: &mut [u32], total: &mut [u32], count: usize, start: usize) -> Vec<usize> {
    let n = total.len();
    debug_assert_eq!(topic.len(), n);
    if n == 0 {
        return Vec::new();
    }
    (0..count)
        .map(|i| {
            let best = (0..n).map(|k| (start + i + k) % n).min_by_key(|&c| (topic[c], total[c])).unwrap_or(0);
            topic[best] += 1;
            total[best] += 1;
            best
        })
        .collect()
}

/// Owners for `count` new partitions of a topic on `brokers` (sorted), given every existing
/// owner (`existing`) and the topic's own (`siblings`, empty for a new topic).
pub fn place_on(
    brokers: &[u32],
    existing: impl Iterator<Item = u32>,
    siblings: impl Iterator<Item = u32>,
    count: usize,
    start: usize,
) -> Vec<u32> {
    let mut total = load(brokers, existing);
    let mut topic = load(brokers, siblings);
    place(&mut topic, &mut total, count, start % brokers.len().max(1)).into_iter().map(|i| brokers[i]).collect()
}

/// Rebalances every topic's owners (`topics[t][p]`) onto `brokers` (sorted, not empty), as
/// Kafka spreads a topic's partitions over its brokers: partitions of vanished brokers move
/// first, then each topic is evened out (no two brokers differ by more than one of its
/// partitions), then the brokers' totals, by moves that keep every topic even. Ties go to the
/// broker with fewer partitions overall, so small topics land on different brokers. Returns
/// the moved (topic, partition) indices.
pub fn rebalance(topics: &mut [Vec<PartitionOwner>], brokers: &[u32]) -> Vec<(usize, usize)> {
    debug_assert!(brokers.windows(2).all(|w| w[0] < w[1]));
    let mut moved = Vec::new();
    if brokers.is_empty() {
        return moved;
    }
    let n = brokers.len();
    let mut total = load(brokers, topics.iter().flatten().map(|o| o.broker));
    let mut per_topic: Vec<Vec<u32>> = topics.iter().map(|t| load(brokers, t.iter().map(|o| o.broker))).collect();
    let mut shift = |topics: &mut [Vec<PartitionOwner>],
                     total: &mut [u32],
                     per_topic: &mut [Vec<u32>],
                     (t, p): (usize, usize),
                     from: Option<usize>,
                     to: usize| {
        if let Some(f) = from {
            total[f] -= 1;
            per_topic[t][f] -= 1;
        }
        total[to] += 1;
        per_topic[t][to] += 1;
        topics[t][p].broker = brokers[to];
        topics[t][p].epoch += 1;
        topics[t][p].pinned = false;
        moved.push((t, p));
    };
    for t in 0..topics.len() {
        for p in 0..topics[t].len() {
            if brokers.binary_search(&topics[t][p].broker).is_err() {
                let to = (0..n).min_by_key(|&b| (per_topic[t][b], total[b], (b + n - p % n) % n)).unwrap_or(0);
                shift(topics, &mut total, &mut per_topic, (t, p), None, to);
            }
        }
        loop {
            let from = (0..n).max_by_key(|&b| (per_topic[t][b], total[b], std::cmp::Reverse(b))).unwrap_or(0);
            let to = (0..n).min_by_key(|&b| (per_topic[t][b], total[b], b)).unwrap_or(0);
            if per_topic[t][from] <= per_topic[t][to] + 1 {
                break;
            }
            // The topic's last partition on the busiest broker: later partitions are newer.
            let Some(p) = topics[t].iter().rposition(|o| o.broker == brokers[from] && !o.pinned) else { break };
            shift(topics, &mut total, &mut per_topic, (t, p), Some(from), to);
        }
    }
    loop {
        let from = (0..n).max_by_key(|&b| (total[b], std::cmp::Reverse(b))).unwrap_or(0);
        let to = (0..n).min_by_key(|&b| (total[b], b)).unwrap_or(0);
        if total[from] <= total[to] + 1 {
            break;
        }
        // A topic with more partitions on `from` than on `to` stays even after the move; one
        // whose partitions there are all pinned cannot give one up (and must not stop the
        // search for a topic that can).
        let pick = (0..topics.len())
            .rev()
            .filter(|&t| per_topic[t][from] > per_topic[t][to])
            .find_map(|t| topics[t].iter().rposition(|o| o.broker == brokers[from] && !o.pinned).map(|p| (t, p)));
        let Some((t, p)) = pick else { break };
        shift(topics, &mut total, &mut per_topic, (t, p), Some(from), to);
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners(brokers: &[u32]) -> Vec<PartitionOwner> {
        brokers.iter().map(|&b| PartitionOwner::new(b)).collect()
    }

    #[test]
    fn placement_is_balanced() {
        let (mut topic, mut total) = (vec![0; 3], vec![0; 3]);
        let p = place(&mut topic, &mut total, 8, 0);
        assert_eq!(p, vec![0, 1, 2, 0, 1, 2, 0, 1]);
        assert_eq!(total, vec![3, 3, 2]);
        // The next topic fills the gap first, then spreads.
        let mut next = vec![0; 3];
        assert_eq!(place(&mut next, &mut total, 2, 0), vec![2, 1]);
        // By broker id, counting what exists; a topic's own partitions spread first.
        assert_eq!(
            place_on(&[1000, 1001, 2000], [1000, 1000, 1001].into_iter(), std::iter::empty(), 2, 0),
            vec![2000, 1001]
        );
        assert_eq!(place_on(&[1, 2, 3], [1, 1, 2, 2].into_iter(), [1, 1, 2, 2].into_iter(), 3, 0), vec![3, 3, 3]);
        assert!(place_on(&[], std::iter::empty(), std::iter::empty(), 2, 0).is_empty());
    }

    #[test]
    fn new_topics_are_placed_as_rebalancing_would_leave_them() {
        // Topics created one after another on a balanced layout: the leader's rebalance then
        // finds nothing to move (it would move the new topic's partitions right after creation,
        // while producers already write to them).
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        for _ in 0..200 {
            let n = 1 + next(7) as usize;
            let brokers: Vec<u32> = (0..n as u32).map(|i| 1000 * (i / 2 + 1) + i % 2).collect();
            let mut topics: Vec<Vec<PartitionOwner>> = Vec::new();
            for _ in 0..1 + next(6) {
                let count = 1 + next(60) as usize;
                let placed = place_on(
                    &brokers,
                    topics.iter().flatten().map(|o| o.broker),
                    std::iter::empty(),
                    count,
                    next(1000) as usize,
                );
                topics.push(owners(&placed));
                let mut after = topics.clone();
                assert_eq!(rebalance(&mut after, &brokers), vec![], "{n} brokers, topics {topics:?}");
            }
        }
    }

    fn loads(topics: &[Vec<PartitionOwner>], brokers: &[u32]) -> Vec<u32> {
        load(brokers, topics.iter().flatten().map(|p| p.broker))
    }

    #[test]
    fn shrink_moves_orphans_and_bumps_epochs() {
        let mut t = vec![owners(&[0, 1, 2, 3, 0, 1, 2, 3])];
        let moved = rebalance(&mut t, &[0, 1]);
        assert_eq!(moved.len(), 4);
        assert!(t[0].iter().all(|p| p.broker < 2));
        assert_eq!(loads(&t, &[0, 1]), vec![4, 4]);
        assert!(moved.iter().all(|&(_, i)| t[0][i].epoch == 1));
    }

    #[test]
    fn pinned_partitions_stay_unless_their_broker_leaves() {
        // Three partitions pinned on broker 0 (an operator's reassignment), one unpinned.
        let mut t = vec![owners(&[0, 0, 0, 0])];
        for p in &mut t[0][..3] {
            p.pinned = true;
        }
        let moved = rebalance(&mut t, &[0, 1]);
        assert_eq!(moved, vec![(0, 3)], "only the unpinned partition evens out the load");
        assert!(t[0][..3].iter().all(|p| p.broker == 0 && p.pinned));
        // Broker 0 leaves: its pinned partitions move after all, unpinned.
        let moved = rebalance(&mut t, &[1, 2]);
        assert_eq!(moved.len(), 3);
        assert!(t[0].iter().all(|p| p.broker != 0 && !p.pinned));
    }

    #[test]
    fn a_pinned_topic_does_not_stop_other_topics_from_evening_the_totals() {
        // Topic 0 (unpinned) has two partitions on broker 0 and one on broker 1; topic 1 (an
        // operator's placement) four, pinned, on broker 0. Broker 0 carries 6, broker 1 one:
        // topic 0 gives one up, topic 1 stays.
        let mut t = vec![owners(&[0, 1, 0]), owners(&[0, 0, 0, 0])];
        for p in &mut t[1] {
            p.pinned = true;
        }
        let moved = rebalance(&mut t, &[0, 1]);
        assert_eq!(moved, vec![(0, 2)]);
        assert!(t[1].iter().all(|p| p.broker == 0 && p.pinned));
        assert!(rebalance(&mut t, &[0, 1]).is_empty(), "nothing more can move");
    }

    #[test]
    fn grow_moves_only_what_balance_needs() {
        let mut t = vec![owners(&[0, 1, 0, 1, 0, 1])];
        let moved = rebalance(&mut t, &[0, 1, 2]);
        assert_eq!(moved.len(), 2);
        assert_eq!(loads(&t, &[0, 1, 2]), vec![2, 2, 2]);
        assert!(rebalance(&mut t, &[0, 1, 2]).is_empty());
    }

    #[test]
    fn a_node_leaving_and_joining_moves_its_share() {
        // Three nodes of two cores, 12 partitions; node 2 dies, then comes back.
        let all = [1000, 1001, 2000, 2001, 3000, 3001];
        let mut t = vec![owners(&[0; 12])];
        rebalance(&mut t, &all);
        assert_eq!(loads(&t, &all), vec![2; 6]);
        let survivors = [1000, 1001, 3000, 3001];
        let moved = rebalance(&mut t, &survivors);
        assert_eq!(moved.len(), 4, "only node 2's partitions move");
        assert_eq!(loads(&t, &survivors), vec![3; 4]);
        let moved = rebalance(&mut t, &all);
        assert_eq!(moved.len(), 4, "a fair share comes back");
        assert_eq!(loads(&t, &all), vec![2; 6]);
    }

    #[test]
    fn every_topic_is_spread_and_small_topics_land_apart() {
        // A big topic already even over brokers 0-2, and a 6-partition topic all on broker 0:
        // it spreads over all three, and the totals end even.
        let b = [0, 1, 2];
        let mut t = vec![owners(&[0, 1, 2, 0, 1, 2, 0, 1, 2]), owners(&[0; 6])];
        rebalance(&mut t, &b);
        assert_eq!(load(&b, t[1].iter().map(|p| p.broker)), vec![2, 2, 2]);
        assert_eq!(loads(&t, &b), vec![5, 5, 5]);
        // Ten one-partition topics, all on broker 0: they spread out over the totals.
        let mut t: Vec<Vec<PartitionOwner>> = (0..9).map(|_| owners(&[0])).collect();
        rebalance(&mut t, &b);
        assert_eq!(loads(&t, &b), vec![3, 3, 3]);
        assert!(rebalance(&mut t, &b).is_empty(), "a balanced layout stays put");
    }
}
