//! The members record: its bytes, its changes and the invariants that guard them.

use super::*;
use crate::object::MemObjectStore;

fn member(name: &str) -> Member {
    Member::new(name, Role::Voter, format!("http://{name}:3380"), format!("http://{name}:3379"))
}

fn three() -> Members {
    let one = Members::bootstrap(0xC1, member("a"));
    let two = one.with_member(member("b")).unwrap().promoted("b").unwrap();
    two.with_member(member("c")).unwrap().promoted("c").unwrap()
}

#[test]
fn records_round_trip_and_damage_is_caught() {
    let members = three().with_member(member("d")).unwrap();
    let bytes = members.encode();
    assert_eq!(Members::decode(&bytes).unwrap(), members);
    for bit in 0..bytes.len() * 8 {
        let mut damaged = bytes.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        assert!(Members::decode(&damaged).is_err(), "bit {bit}");
    }
}

#[test]
fn records_that_lie_are_refused_with_their_reason() {
    let reencode = |members: &Members| Members::decode(&members.encode()).unwrap_err().to_string();
    let mut twice = three();
    twice.members.push(twice.members[0].clone());
    assert!(reencode(&twice).contains("appears twice"), "{}", reencode(&twice));
    let mut no_voter = three();
    no_voter.members.iter_mut().for_each(|member| member.role = Role::Learner);
    assert!(reencode(&no_voter).contains("no voting member"));
    let mut empty = three();
    empty.members.clear();
    assert!(reencode(&empty).contains("0 members"));
    let mut long = three();
    long.members[0].peer_url = "x".repeat(MEMBER_STRING_BYTES_MAX + 1);
    assert!(reencode(&long).contains("longer than"));
}

#[test]
fn member_ids_follow_the_name_and_are_never_zero() {
    assert_eq!(member_id("a"), member_id("a"));
    assert_ne!(member_id("a"), member_id("b"));
    assert_ne!(member_id(""), 0);
    assert_eq!(member("n1").id, member_id("n1"));
}

#[test]
fn a_quorum_is_a_majority_of_the_voters_only() {
    let one = Members::bootstrap(1, member("a"));
    assert_eq!((one.voter_count(), one.quorum()), (1, 1));
    let with_learner = one.with_member(member("b")).unwrap();
    assert_eq!((with_learner.voter_count(), with_learner.quorum()), (1, 1), "a learner counts for nothing");
    assert!(!with_learner.is_voter("b"));
    let members = three();
    assert_eq!((members.voter_count(), members.quorum()), (3, 2));
    let five = members.with_member(member("d")).unwrap().promoted("d").unwrap().with_member(member("e")).unwrap().promoted("e").unwrap();
    assert_eq!((five.voter_count(), five.quorum()), (5, 3));
    let four = five.without(member_id("e")).unwrap();
    assert_eq!((four.voter_count(), four.quorum()), (4, 3));
}

#[test]
fn changes_are_one_version_and_one_voter_at_a_time() {
    let members = three();
    assert_eq!(members.version, 5);
    // A rejoining member on a new address keeps its role; its URLs change.
    let moved = members.with_member(Member::new("b", Role::Learner, "http://b2:3380", "http://b2:3379")).unwrap();
    assert!(moved.is_voter("b"));
    assert_eq!(moved.get("b").unwrap().peer_url, "http://b2:3380");
    assert_eq!(check_change(Some(&members), &moved), Ok(()));

    let errors = [
        members.promoted("a").unwrap_err().to_string(),
        members.promoted("z").unwrap_err().to_string(),
        members.without(42).unwrap_err().to_string(),
        Members::bootstrap(1, member("a")).without(member_id("a")).unwrap_err().to_string(),
    ];
    assert!(errors[0].contains("can only promote a learner"));
    assert!(errors[1].contains("member not found") && errors[2].contains("member not found"));
    assert!(errors[3].contains("not enough started members"));
}

#[test]
fn each_members_invariant_refuses_the_change_that_breaks_it() {
    let members = three();
    let learner = members.with_member(member("d")).unwrap();
    assert_eq!(check_change(Some(&members), &learner), Ok(()));
    assert_eq!(check_change(Some(&learner), &learner.promoted("d").unwrap()), Ok(()));
    assert_eq!(check_change(Some(&members), &members.without(member_id("c")).unwrap()), Ok(()));
    assert_eq!(check_change(None, &Members::bootstrap(1, member("a"))), Ok(()));

    let broken = |read: Option<&Members>, next: &Members| check_change(read, next).unwrap_err();
    let mut skipped = learner.clone();
    skipped.version += 1;
    assert!(broken(Some(&members), &skipped).starts_with("invariant members-next-version"));
    let mut other_cluster = learner.clone();
    other_cluster.cluster_id = 7;
    assert!(broken(Some(&members), &other_cluster).starts_with("invariant members-next-version"));
    // Two voters swapped in one change: {a,b,c} -> {a,b,d}.
    let mut swapped = learner.without(member_id("c")).unwrap();
    swapped.version = members.version + 1;
    swapped.members.iter_mut().filter(|member| member.name == "d").for_each(|member| member.role = Role::Voter);
    assert!(broken(Some(&members), &swapped).starts_with("invariant one-voter-at-a-time"));
    // A voter straight from outside.
    let mut straight = members.with_member(member("d")).unwrap();
    straight.members.last_mut().unwrap().role = Role::Voter;
    assert!(broken(Some(&members), &straight).starts_with("invariant learner-first"));
    let mut big_start = three();
    big_start.version = 1;
    assert!(broken(None, &big_start).starts_with("invariant learner-first"));
}

#[tokio::test]
async fn writes_are_conditional_on_the_version_read() {
    let store = MemObjectStore::new();
    assert_eq!(read_members(&store).await.unwrap(), None);
    let first = Members::bootstrap(9, member("a"));
    let etag = write_members(&store, None, &first).await.unwrap().expect("a new cluster");
    assert_eq!(write_members(&store, None, &first).await.unwrap(), None, "someone formed it first");
    let (read, read_etag) = read_members(&store).await.unwrap().unwrap();
    assert_eq!((&read, &read_etag), (&first, &etag));
    let next = read.with_member(member("b")).unwrap();
    let second = write_members(&store, Some((&read, &read_etag)), &next).await.unwrap().expect("written");
    assert_eq!(write_members(&store, Some((&read, &read_etag)), &next).await.unwrap(), None, "a stale read loses");
    let refused = write_members(&store, Some((&next, &second)), &next).await.unwrap_err();
    assert!(refused.to_string().contains("invariant members-next-version"), "{refused}");
    store.put(layout::MEMBERS, bytes::Bytes::from_static(b"garbage"), Condition::Always).await.unwrap();
    assert!(matches!(read_members(&store).await.unwrap_err(), Error::Corrupt(_)));
}
