//! Partition -> core assignment.
//!
//! Every partition has one owner core. New partitions go to the least-loaded core; when the
//! core count changes, partitions of vanished cores move first, then the most-loaded cores give
//! partitions to the least-loaded until no two cores differ by more than one. Each move bumps
//! the partition's leader epoch so clients notice the new leader.

/// Owner of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOwner {
    pub core: u32,
    /// Kafka leader epoch: bumped whenever the owner changes.
    pub epoch: i32,
}

/// Partition counts per core over a set of owners.
pub fn load(cores: u32, owners: impl Iterator<Item = u32>) -> Vec<u32> {
    let mut load = vec![0u32; cores as usize];
    for c in owners {
        if let Some(l) = load.get_mut(c as usize) {
            *l += 1;
        }
    }
    load
}

/// Picks owners for `count` new partitions given the current load, updating the load.
/// Ties go to the lowest core after `start`, so topics spread their first partitions around.
pub fn place(load: &mut [u32], count: usize, start: usize) -> Vec<u32> {
    let n = load.len();
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
            best as u32
        })
        .collect()
}

/// Rebalances `owners` (one entry per partition, over all topics) onto `cores` cores.
/// Returns the indices that moved.
pub fn rebalance(owners: &mut [PartitionOwner], cores: u32) -> Vec<usize> {
    debug_assert!(cores > 0);
    let mut moved = Vec::new();
    let mut l = load(cores, owners.iter().map(|o| o.core));
    for (i, o) in owners.iter_mut().enumerate() {
        if o.core >= cores {
            o.core = place(&mut l, 1, i)[0];
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
        // Move the last partition of the busiest core: later partitions are the newer ones.
        let Some(i) = owners.iter().rposition(|o| o.core as usize == max_c) else {
            break;
        };
        owners[i].core = min_c as u32;
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

    fn owners(cores: &[u32]) -> Vec<PartitionOwner> {
        cores.iter().map(|&core| PartitionOwner { core, epoch: 0 }).collect()
    }

    #[test]
    fn placement_is_balanced() {
        let mut l = vec![0; 3];
        let p = place(&mut l, 8, 0);
        assert_eq!(p, vec![0, 1, 2, 0, 1, 2, 0, 1]);
        assert_eq!(l, vec![3, 3, 2]);
        // The next topic fills the gap first.
        assert_eq!(place(&mut l, 1, 0), vec![2]);
    }

    #[test]
    fn shrink_moves_orphans_and_bumps_epochs() {
        let mut o = owners(&[0, 1, 2, 3, 0, 1, 2, 3]);
        let moved = rebalance(&mut o, 2);
        assert_eq!(moved.len(), 4);
        assert!(o.iter().all(|p| p.core < 2));
        assert_eq!(load(2, o.iter().map(|p| p.core)), vec![4, 4]);
        assert!(moved.iter().all(|&i| o[i].epoch == 1));
    }

    #[test]
    fn grow_moves_only_what_balance_needs() {
        let mut o = owners(&[0, 1, 0, 1, 0, 1]);
        let moved = rebalance(&mut o, 3);
        assert_eq!(moved.len(), 2);
        assert_eq!(load(3, o.iter().map(|p| p.core)), vec![2, 2, 2]);
        assert!(rebalance(&mut o, 3).is_empty());
    }
}
