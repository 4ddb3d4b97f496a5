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

/// Picks owners (indices into the broker list) for `count` new partitions given the current
/// load, updating the load. Ties go to the lowest index after `start`, so topics spread their
/// first partitions around.
pub fn place(load: &mut [u32], count: usize, start: usize) -> Vec<usize> {
    let n = load.len();
    if n == 0 {
        return Vec::new();
    }
    (0..count)
        .map(|i| {
            let mut best = (start + i) % n;
            for k in 0..n {
                let c = (start + i + k) % n;
                if load[c] < load[best] {
                    best = c;
                }
            }
            load[best] += 1;
            best
        })
        .collect()
}

/// Owners for `count` new partitions on `brokers` (sorted), given every existing owner.
pub fn place_on(brokers: &[u32], existing: impl Iterator<Item = u32>, count: usize, start: usize) -> Vec<u32> {
    let mut l = load(brokers, existing);
    place(&mut l, count, start % brokers.len().max(1)).into_iter().map(|i| brokers[i]).collect()
}

/// Rebalances `owners` (one entry per partition, over all topics) onto `brokers` (sorted,
/// not empty). Returns the indices that moved.
pub fn rebalance(owners: &mut [PartitionOwner], brokers: &[u32]) -> Vec<usize> {
    debug_assert!(!brokers.is_empty() && brokers.windows(2).all(|w| w[0] < w[1]));
    if brokers.is_empty() {
        return Vec::new();
    }
    let mut moved = Vec::new();
    let mut l = load(brokers, owners.iter().map(|o| o.broker));
    for (i, o) in owners.iter_mut().enumerate() {
        if brokers.binary_search(&o.broker).is_err() {
            o.broker = brokers[place(&mut l, 1, i % brokers.len())[0]];
            o.epoch += 1;
            moved.push(i);
        }
    }
    loop {
        let (max_c, max_l) = l
            .iter()
            .enumerate()
            .max_by_key(|(c, l)| (**l, std::cmp::Reverse(*c)))
            .map(|(c, l)| (c, *l))
            .unwrap_or((0, 0));
        let (min_c, min_l) =
            l.iter().enumerate().min_by_key(|(c, l)| (**l, *c)).map(|(c, l)| (c, *l)).unwrap_or((0, 0));
        if max_l <= min_l + 1 {
            break;
        }
        // Move the last partition of the busiest broker: later partitions are the newer ones.
        let Some(i) = owners.iter().rposition(|o| o.broker == brokers[max_c]) else {
            break;
        };
        owners[i].broker = brokers[min_c];
        owners[i].epoch += 1;
        l[max_c] -= 1;
        l[min_c] += 1;
        moved.push(i);
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners(brokers: &[u32]) -> Vec<PartitionOwner> {
        brokers.iter().map(|&broker| PartitionOwner { broker, epoch: 0 }).collect()
    }

    #[test]
    fn placement_is_balanced() {
        let mut l = vec![0; 3];
        let p = place(&mut l, 8, 0);
        assert_eq!(p, vec![0, 1, 2, 0, 1, 2, 0, 1]);
        assert_eq!(l, vec![3, 3, 2]);
        // The next topic fills the gap first.
        assert_eq!(place(&mut l, 1, 0), vec![2]);
        // By broker id, counting what exists.
        assert_eq!(place_on(&[1000, 1001, 2000], [1000, 1000, 1001].into_iter(), 2, 0), vec![2000, 1001]);
        assert!(place_on(&[], std::iter::empty(), 2, 0).is_empty());
    }

    #[test]
    fn shrink_moves_orphans_and_bumps_epochs() {
        let mut o = owners(&[0, 1, 2, 3, 0, 1, 2, 3]);
        let moved = rebalance(&mut o, &[0, 1]);
        assert_eq!(moved.len(), 4);
        assert!(o.iter().all(|p| p.broker < 2));
        assert_eq!(load(&[0, 1], o.iter().map(|p| p.broker)), vec![4, 4]);
        assert!(moved.iter().all(|&i| o[i].epoch == 1));
    }

    #[test]
    fn grow_moves_only_what_balance_needs() {
        let mut o = owners(&[0, 1, 0, 1, 0, 1]);
        let moved = rebalance(&mut o, &[0, 1, 2]);
        assert_eq!(moved.len(), 2);
        assert_eq!(load(&[0, 1, 2], o.iter().map(|p| p.broker)), vec![2, 2, 2]);
        assert!(rebalance(&mut o, &[0, 1, 2]).is_empty());
    }

    #[test]
    fn a_node_leaving_and_joining_moves_its_share() {
        // Three nodes of two cores, 12 partitions; node 2 dies, then comes back.
        let all = [1000, 1001, 2000, 2001, 3000, 3001];
        let mut o = owners(&[0; 12]);
        rebalance(&mut o, &all);
        assert_eq!(load(&all, o.iter().map(|p| p.broker)), vec![2; 6]);
        let survivors = [1000, 1001, 3000, 3001];
        let moved = rebalance(&mut o, &survivors);
        assert_eq!(moved.len(), 4, "only node 2's partitions move");
        assert_eq!(load(&survivors, o.iter().map(|p| p.broker)), vec![3; 4]);
        let moved = rebalance(&mut o, &all);
        assert_eq!(moved.len(), 4, "a fair share comes back");
        assert_eq!(load(&all, o.iter().map(|p| p.broker)), vec![2; 6]);
    }
}
