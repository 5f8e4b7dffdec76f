//! Server-side assignors of the KIP-848 consumer protocol: `uniform` (the default) and `range`.
//!
//! Both take every member's subscribed topics (resolved to topic ids that exist) and the topics'
//! partition counts, and return each member's target assignment. `uniform` is sticky: a partition
//! stays with its previous owner while that keeps the counts balanced, so a membership change
//! moves as few partitions as possible; members end up with partition counts that differ by at
//! most one among members that could take each other's partitions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use uuid::Uuid;

/// Partitions by topic id.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

pub const UNIFORM: &str = "uniform";
pub const RANGE: &str = "range";
/// Assignors this broker runs, the default first.
pub const ASSIGNORS: &[&str] = &[UNIFORM, RANGE];

pub fn is_supported(name: &str) -> bool {
    ASSIGNORS.contains(&name)
}

/// One member's view for the assignor.
#[derive(Debug, Clone)]
pub struct MemberSpec {
    pub member_id: String,
    /// Subscribed topics that exist.
    pub topics: BTreeSet<Uuid>,
}

/// Runs assignor `name` (unknown names fall back to `uniform`).
pub fn assign(
    name: &str,
    members: &[MemberSpec],
    partitions: &BTreeMap<Uuid, i32>,
    previous: &HashMap<String, Assignment>,
) -> HashMap<String, Assignment> {
    match name {
        RANGE => range(members, partitions),
        _ => uniform(members, partitions, previous),
    }
}

pub fn count(assignment: &Assignment) -> usize {
    assignment.values().map(BTreeSet::len).sum()
}

/// Contiguous ranges per topic over the members subscribed to it, in member id order.
pub fn range(
    members: &[MemberSpec],
    partitions: &BTreeMap<Uuid, i32>,
) -> HashMap<String, Assignment> {
    let mut result: HashMap<String, Assignment> = members
        .iter()
        .map(|m| (m.member_id.clone(), Assignment::new()))
        .collect();
    for (&topic, &count) in partitions {
        let mut subscribers: Vec<&str> = members
            .iter()
            .filter(|m| m.topics.contains(&topic))
            .map(|m| m.member_id.as_str())
            .collect();
        if subscribers.is_empty() || count <= 0 {
            continue;
        }
        subscribers.sort_unstable();
        let per_member = count as usize / subscribers.len();
        let extra = count as usize % subscribers.len();
        let mut next = 0i32;
        for (index, member) in subscribers.iter().enumerate() {
            let size = per_member + usize::from(index < extra);
            if size == 0 {
                continue;
            }
            let set: BTreeSet<i32> = (next..next + size as i32).collect();
            next += size as i32;
            result
                .get_mut(*member)
                .expect("every member has an entry")
                .insert(topic, set);
        }
    }
    result
}

/// Balanced and sticky (see the module comment).
pub fn uniform(
    members: &[MemberSpec],
    partitions: &BTreeMap<Uuid, i32>,
    previous: &HashMap<String, Assignment>,
) -> HashMap<String, Assignment> {
    // Every partition has at most one owner; keep previous owners that still subscribe.
    let mut owner: BTreeMap<(Uuid, i32), usize> = BTreeMap::new();
    let mut owned: Vec<BTreeSet<(Uuid, i32)>> = vec![BTreeSet::new(); members.len()];
    for (index, member) in members.iter().enumerate() {
        let Some(assignment) = previous.get(&member.member_id) else {
            continue;
        };
        for (topic, set) in assignment {
            let Some(&count) = partitions.get(topic) else {
                continue;
            };
            if !member.topics.contains(topic) {
                continue;
            }
            for &partition in set.iter().filter(|&&p| (0..count).contains(&p)) {
                if let std::collections::btree_map::Entry::Vacant(slot) =
                    owner.entry((*topic, partition))
                {
                    slot.insert(index);
                    owned[index].insert((*topic, partition));
                }
            }
        }
    }
    // Hand out the rest, each to the eligible member with the fewest partitions.
    for (&topic, &count) in partitions {
        let eligible: Vec<usize> = (0..members.len())
            .filter(|&i| members[i].topics.contains(&topic))
            .collect();
        if eligible.is_empty() {
            continue;
        }
        for partition in 0..count.max(0) {
            if owner.contains_key(&(topic, partition)) {
                continue;
            }
            let target = *eligible
                .iter()
                .min_by_key(|&&i| (owned[i].len(), &members[i].member_id))
                .expect("eligible is not empty");
            owner.insert((topic, partition), target);
            owned[target].insert((topic, partition));
        }
    }
    // Balance: move partitions from the most to the least loaded member that can take them,
    // while that narrows the gap. Each move lowers the sum of squared counts, so this ends;
    // the bound is a guard.
    let total: usize = owned.iter().map(BTreeSet::len).sum();
    let mut budget = total.saturating_mul(members.len()).max(1);
    while budget > 0 {
        budget -= 1;
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_by_key(|&i| {
            (
                std::cmp::Reverse(owned[i].len()),
                members[i].member_id.clone(),
            )
        });
        let mut moved = false;
        'donors: for &donor in &order {
            // Move the donor's highest partitions first so low partitions stay put.
            let candidates: Vec<(Uuid, i32)> = owned[donor].iter().rev().copied().collect();
            for (topic, partition) in candidates {
                let receiver = (0..members.len())
                    .filter(|&i| i != donor && members[i].topics.contains(&topic))
                    .min_by_key(|&i| (owned[i].len(), &members[i].member_id));
                if let Some(receiver) = receiver {
                    if owned[receiver].len() + 1 < owned[donor].len() {
                        owned[donor].remove(&(topic, partition));
                        owned[receiver].insert((topic, partition));
                        moved = true;
                        break 'donors;
                    }
                }
            }
        }
        if !moved {
            break;
        }
    }
    members
        .iter()
        .zip(owned)
        .map(|(member, set)| {
            let mut assignment = Assignment::new();
            for (topic, partition) in set {
                assignment.entry(topic).or_default().insert(partition);
            }
            (member.member_id.clone(), assignment)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    fn member(id: &str, topics: &[Uuid]) -> MemberSpec {
        MemberSpec {
            member_id: id.to_string(),
            topics: topics.iter().copied().collect(),
        }
    }

    fn all_once(result: &HashMap<String, Assignment>, partitions: &BTreeMap<Uuid, i32>) {
        let mut seen = BTreeSet::new();
        for assignment in result.values() {
            for (topic, set) in assignment {
                for &p in set {
                    assert!(seen.insert((*topic, p)), "{topic}/{p} assigned twice");
                }
            }
        }
        let expected: usize = partitions.values().map(|&c| c as usize).sum();
        assert_eq!(seen.len(), expected, "every partition assigned");
    }

    #[test]
    fn range_gives_contiguous_ranges() {
        let t = topic(1);
        let partitions = BTreeMap::from([(t, 7)]);
        let members = [member("b", &[t]), member("a", &[t]), member("c", &[t])];
        let result = range(&members, &partitions);
        all_once(&result, &partitions);
        assert_eq!(result["a"][&t], BTreeSet::from([0, 1, 2]));
        assert_eq!(result["b"][&t], BTreeSet::from([3, 4]));
        assert_eq!(result["c"][&t], BTreeSet::from([5, 6]));
    }

    #[test]
    fn uniform_balances_homogeneous_members() {
        let (t1, t2) = (topic(1), topic(2));
        let partitions = BTreeMap::from([(t1, 6), (t2, 5)]);
        let members: Vec<MemberSpec> = ["a", "b", "c"]
            .iter()
            .map(|id| member(id, &[t1, t2]))
            .collect();
        let result = uniform(&members, &partitions, &HashMap::new());
        all_once(&result, &partitions);
        let mut counts: Vec<usize> = result.values().map(count).collect();
        counts.sort();
        assert_eq!(counts, vec![3, 4, 4]);
    }

    #[test]
    fn uniform_is_sticky_when_a_member_joins_or_leaves() {
        let t = topic(1);
        let partitions = BTreeMap::from([(t, 6)]);
        let two = [member("a", &[t]), member("b", &[t])];
        let first = uniform(&two, &partitions, &HashMap::new());
        let three = [member("a", &[t]), member("b", &[t]), member("c", &[t])];
        let second = uniform(&three, &partitions, &first);
        all_once(&second, &partitions);
        assert_eq!(count(&second["c"]), 2);
        for id in ["a", "b"] {
            // Existing members only lose partitions; they gain none.
            assert!(second[id][&t].is_subset(&first[id][&t]));
            assert_eq!(count(&second[id]), 2);
        }
        // c leaves: its partitions go back, a and b keep theirs.
        let third = uniform(&two, &partitions, &second);
        all_once(&third, &partitions);
        for id in ["a", "b"] {
            assert!(second[id][&t].is_subset(&third[id][&t]));
            assert_eq!(count(&third[id]), 3);
        }
    }

    #[test]
    fn uniform_respects_heterogeneous_subscriptions() {
        let (t1, t2) = (topic(1), topic(2));
        let partitions = BTreeMap::from([(t1, 4), (t2, 4)]);
        let members = [
            member("a", &[t1]),
            member("b", &[t1, t2]),
            member("c", &[t2]),
        ];
        let result = uniform(&members, &partitions, &HashMap::new());
        all_once(&result, &partitions);
        assert!(result["a"].keys().all(|t| *t == t1));
        assert!(result["c"].keys().all(|t| *t == t2));
        let counts: Vec<usize> = ["a", "b", "c"]
            .iter()
            .map(|id| count(&result[*id]))
            .collect();
        assert!(
            counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1,
            "{counts:?}"
        );
    }

    #[test]
    fn unknown_topics_and_shrunk_previous_assignments_are_ignored() {
        let t = topic(1);
        let partitions = BTreeMap::from([(t, 2)]);
        let previous = HashMap::from([(
            "a".to_string(),
            Assignment::from([(t, BTreeSet::from([0, 5])), (topic(9), BTreeSet::from([0]))]),
        )]);
        let result = uniform(&[member("a", &[t, topic(9)])], &partitions, &previous);
        assert_eq!(result["a"], Assignment::from([(t, BTreeSet::from([0, 1]))]));
        assert!(assign("no-such", &[], &partitions, &previous).is_empty());
    }
}
