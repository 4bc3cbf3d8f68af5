//! Allocation semantics over the real socket: uniqueness, exhaustion,
//! idempotency, groups, requested levels, reservations, bad input. Every
//! scenario runs against both stores (sled and a real etcd).

mod common;

use std::collections::HashSet;

use common::code;
use common::etcd::Backend;
use mcs_client::{proto, Allocate, Client};
use tokio_stream::StreamExt;
use tonic::Code;

async fn stats(c: &mut Client) -> proto::StatsResponse {
    c.stats().await.unwrap()
}

async fn list_all(c: &mut Client, request: proto::ListRequest) -> Vec<proto::Allocation> {
    let mut stream = c.list(request).await.unwrap();
    let mut all = Vec::new();
    while let Some(chunk) = stream.next().await {
        all.extend(chunk.unwrap().allocations);
    }
    all
}

async fn hands_out_all_45_pairs_of_c0_c9_then_reports_exhaustion(backend: Backend) {
    let d = backend.start("c0.c9");
    let mut c = d.client().await;
    let mut levels = HashSet::new();
    for i in 0..45 {
        let a = c
            .allocate(Allocate::new(format!("ctr-{i}")).owner("podman"))
            .await
            .unwrap();
        assert!(levels.insert(a.level.clone()), "duplicate {}", a.level);
        let level: mcsd::level::Level = a.level.parse().expect("canonical level");
        assert!(level.high().number() <= 9);
        assert_eq!(
            a.process_label,
            format!("system_u:system_r:container_t:{}", a.level)
        );
        assert_eq!(
            a.file_label,
            format!("system_u:object_r:container_file_t:{}", a.level)
        );
        assert_eq!(a.mount_option, format!("context=\"{}\"", a.file_label));
    }
    let err = c.allocate(Allocate::new("one-too-many")).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::ResourceExhausted));
    assert!(err.to_string().contains("all 45 pairs of c0.c9"), "{err}");
    let s = stats(&mut c).await;
    assert_eq!((s.total, s.held, s.free, s.containers), (45, 45, 0, 45));

    // Releasing one makes exactly that pair available again.
    let released = c.release("ctr-7").await.unwrap();
    assert!(released.released && released.level_freed);
    let again = c.allocate(Allocate::new("new")).await.unwrap();
    assert_eq!(again.level, released.allocation.unwrap().level);
}

async fn allocate_is_idempotent_on_the_container_id(backend: Backend) {
    let d = backend.start("c0.c1023");
    let mut c = d.client().await;
    let first = c
        .allocate_full(Allocate::new("abc").owner("crio"))
        .await
        .unwrap();
    assert!(first.created);
    let second = c
        .allocate_full(Allocate::new("abc").owner("crio"))
        .await
        .unwrap();
    assert!(!second.created);
    assert_eq!(first.allocation, second.allocation);
    // The same id asked with the level it holds: still the same allocation.
    let level = first.allocation.unwrap().level;
    let third = c
        .allocate_full(Allocate::new("abc").owner("crio").level(level.clone()))
        .await
        .unwrap();
    assert_eq!(third.allocation.unwrap().level, level);
    // Another owner, group or level for the same id is refused, naming the holder.
    let err = c
        .allocate(Allocate::new("abc").owner("podman"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::AlreadyExists));
    assert!(err.to_string().contains("for owner crio"), "{err}");
    assert_eq!(
        code(
            c.allocate(Allocate::new("abc").owner("crio").group("pod"))
                .await
        ),
        Code::AlreadyExists
    );
    let other = if level == "s0:c0,c1" {
        "s0:c0,c2"
    } else {
        "s0:c0,c1"
    };
    assert_eq!(
        code(
            c.allocate(Allocate::new("abc").owner("crio").level(other))
                .await
        ),
        Code::AlreadyExists
    );
    assert_eq!(stats(&mut c).await.containers, 1);
}

async fn an_empty_owner_defaults_to_the_callers_uid(backend: Backend) {
    let d = backend.start("c0.c9");
    let mut c = d.client().await;
    let a = c.allocate(Allocate::new("x")).await.unwrap();
    assert_eq!(
        a.owner,
        format!("uid:{}", rustix::process::getuid().as_raw())
    );
}

async fn release_is_idempotent_and_says_whether_anything_was_held(backend: Backend) {
    let d = backend.start("c0.c9");
    let mut c = d.client().await;
    c.allocate(Allocate::new("x")).await.unwrap();
    let r = c.release("x").await.unwrap();
    assert!(r.released && r.level_freed);
    assert_eq!(r.allocation.unwrap().container_id, "x");
    let r = c.release("x").await.unwrap();
    assert!(!r.released && !r.level_freed && r.allocation.is_none());
    let r = c.release("never-existed").await.unwrap();
    assert!(!r.released);
    assert_eq!(code(c.get("x").await), Code::NotFound);
}

async fn group_members_share_a_level_until_the_last_one_leaves(backend: Backend) {
    let d = backend.start("c0.c9");
    let mut c = d.client().await;
    let a = c.allocate(Allocate::new("a").group("pod1")).await.unwrap();
    let b = c.allocate(Allocate::new("b").group("pod1")).await.unwrap();
    let z = c.allocate(Allocate::new("z").group("pod1")).await.unwrap();
    let other = c.allocate(Allocate::new("o").group("pod2")).await.unwrap();
    assert_eq!(a.level, b.level);
    assert_eq!(a.level, z.level);
    assert_ne!(a.level, other.level);
    assert_eq!(a.group, "pod1");
    let s = stats(&mut c).await;
    assert_eq!((s.held, s.containers, s.groups), (2, 4, 2));

    // A member may ask for its group's level, not another one.
    c.allocate(Allocate::new("d").group("pod1").level(a.level.clone()))
        .await
        .unwrap();
    let err = c
        .allocate(Allocate::new("e").group("pod1").level(other.level.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::AlreadyExists));
    assert!(err.to_string().contains("group pod1 holds"), "{err}");

    for (id, freed) in [("a", false), ("b", false), ("z", false), ("d", true)] {
        let r = c.release(id).await.unwrap();
        assert!(r.released);
        assert_eq!(r.level_freed, freed, "releasing {id}");
    }
    let s = stats(&mut c).await;
    assert_eq!((s.held, s.containers, s.groups), (1, 1, 1));
    // The group is gone: a new member starts a new group with a fresh pick.
    let fresh = c.allocate(Allocate::new("f").group("pod1")).await.unwrap();
    assert_ne!(fresh.level, other.level);
}

async fn requested_levels_are_granted_only_when_free_and_in_range(backend: Backend) {
    let d = backend.start("c0.c9");
    let mut c = d.client().await;
    let a = c
        .allocate(Allocate::new("a").level("s0:c2,c7"))
        .await
        .unwrap();
    assert_eq!(a.level, "s0:c2,c7");
    // Held by another id: ALREADY_EXISTS naming the holder.
    let err = c
        .allocate(Allocate::new("b").level("s0:c2,c7"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::AlreadyExists));
    assert!(err.to_string().contains("held by container a"), "{err}");
    // Held by a group: named too.
    c.allocate(Allocate::new("g1").group("pod").level("s0:c1,c3"))
        .await
        .unwrap();
    let err = c
        .allocate(Allocate::new("b").level("s0:c1,c3"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("held by group pod"), "{err}");
    // Outside the range or malformed: INVALID_ARGUMENT.
    for bad in [
        "s0:c2,c10",
        "s0:c5,c5",
        "s0:c9,c1",
        "s1:c1,c2",
        "s0:c1024,c1",
        "s0:c1.c2",
        "garbage",
    ] {
        let err = c.allocate(Allocate::new("b").level(bad)).await.unwrap_err();
        assert_eq!(err.code(), Some(Code::InvalidArgument), "{bad}: {err}");
    }
    assert_eq!(stats(&mut c).await.containers, 2);
}

async fn reservations_are_never_handed_out(backend: Backend) {
    let d = backend.start("c0.c9");
    let mut c = d.client().await;
    let r = c.reserve("c0").await.unwrap();
    assert!(r.created);
    assert_eq!((r.pairs_covered, r.pairs_held), (9, 0));
    let r = c.reserve("s0:c1,c2").await.unwrap();
    assert_eq!(r.pairs_covered, 1);
    assert!(!c.reserve("c0").await.unwrap().created);
    let s = stats(&mut c).await;
    assert_eq!((s.total, s.free, s.reserved), (45, 35, 10));

    let mut got = HashSet::new();
    for i in 0..35 {
        let a = c.allocate(Allocate::new(format!("c{i}"))).await.unwrap();
        assert!(
            !a.level.contains(":c0,") && a.level != "s0:c1,c2",
            "{}",
            a.level
        );
        got.insert(a.level);
    }
    assert_eq!(got.len(), 35);
    assert_eq!(
        code(c.allocate(Allocate::new("full")).await),
        Code::ResourceExhausted
    );

    // Asking for a reserved level names the reservation.
    let err = c
        .allocate(Allocate::new("x").level("s0:c0,c5"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::FailedPrecondition));
    assert!(err.to_string().contains("reservation c0"), "{err}");

    // Out of range and malformed reservations are refused.
    assert_eq!(code(c.reserve("c10").await), Code::InvalidArgument);
    assert_eq!(code(c.reserve("s0:c3,c1").await), Code::InvalidArgument);
    assert_eq!(code(c.reserve("").await), Code::InvalidArgument);

    let u = c.unreserve("c0").await.unwrap();
    assert_eq!((u.removed, u.pairs_freed), (true, 9));
    assert!(!c.unreserve("c0").await.unwrap().removed);
    let targets: Vec<String> = c
        .reservations()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.target)
        .collect();
    assert_eq!(targets, ["s0:c1,c2"]);
}

async fn reserving_a_held_pair_keeps_it_with_its_holder_until_release(backend: Backend) {
    let d = backend.start("c0.c9");
    let mut c = d.client().await;
    c.allocate(Allocate::new("a").level("s0:c4,c5"))
        .await
        .unwrap();
    let r = c.reserve("s0:c4,c5").await.unwrap();
    assert_eq!((r.pairs_covered, r.pairs_held), (1, 1));
    assert_eq!(c.get("a").await.unwrap().level, "s0:c4,c5");
    let released = c.release("a").await.unwrap();
    assert!(released.released && !released.level_freed);
    let s = stats(&mut c).await;
    assert_eq!((s.held, s.reserved, s.free), (0, 1, 44));
    assert_eq!(c.unreserve("s0:c4,c5").await.unwrap().pairs_freed, 1);
}

async fn bad_input_is_refused_and_nothing_is_stored(backend: Backend) {
    let d = backend.start("c0.c9");
    let mut c = d.client().await;
    let long = "x".repeat(129);
    let bad_ids = [
        "",
        long.as_str(),
        "a/b",
        "a b",
        "tab\t",
        "nul\0",
        "café",
        "new\nline",
        "../x",
    ];
    for id in bad_ids {
        let err = c.allocate(Allocate::new(id)).await.unwrap_err();
        assert_eq!(err.code(), Some(Code::InvalidArgument), "{id:?}");
        assert!(err.to_string().contains("container_id"), "{id:?}: {err}");
        assert_eq!(code(c.release(id).await), Code::InvalidArgument);
        assert_eq!(code(c.get(id).await), Code::InvalidArgument);
    }
    for owner in [long.as_str(), "a b", "é"] {
        let err = c
            .allocate(Allocate::new("ok").owner(owner))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(Code::InvalidArgument));
        assert!(err.to_string().contains("owner"), "{err}");
    }
    for group in [long.as_str(), "a;b"] {
        let err = c
            .allocate(Allocate::new("ok").group(group))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("group"), "{err}");
    }
    // A request far over the size limit is refused by the transport.
    let huge = "x".repeat(1 << 20);
    let err = c.allocate(Allocate::new(huge)).await.unwrap_err();
    assert_ne!(err.code(), Some(Code::Ok));
    let s = stats(&mut c).await;
    assert_eq!((s.held, s.containers), (0, 0));
    assert!(list_all(&mut c, Default::default()).await.is_empty());
}

async fn list_streams_every_row_in_order_and_filters(backend: Backend) {
    let d = backend.start("c0.c1023");
    let mut c = d.client().await;
    for i in 0..1500 {
        let owner = if i % 3 == 0 { "podman" } else { "crio" };
        let mut req = Allocate::new(format!("ctr-{i:05}")).owner(owner);
        if i % 100 == 0 {
            req = req.group("pod-a");
        }
        c.allocate(req).await.unwrap();
    }
    let all = list_all(&mut c, Default::default()).await;
    assert_eq!(all.len(), 1500);
    assert!(all
        .windows(2)
        .all(|w| w[0].container_id < w[1].container_id));
    let podman = list_all(
        &mut c,
        proto::ListRequest {
            owner: "podman".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(podman.len(), 500);
    assert!(podman.iter().all(|a| a.owner == "podman"));
    let pod = list_all(
        &mut c,
        proto::ListRequest {
            group: "pod-a".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(pod.len(), 15);
    let limited = list_all(
        &mut c,
        proto::ListRequest {
            limit: 7,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(limited.len(), 7);
    let resumed = list_all(
        &mut c,
        proto::ListRequest {
            start_after: "ctr-01495".into(),
            ..Default::default()
        },
    )
    .await;
    let ids: Vec<_> = resumed.iter().map(|a| a.container_id.as_str()).collect();
    assert_eq!(ids, ["ctr-01496", "ctr-01497", "ctr-01498", "ctr-01499"]);
    let s = stats(&mut c).await;
    let owners: Vec<_> = s
        .owners
        .iter()
        .map(|o| (o.owner.as_str(), o.containers))
        .collect();
    assert_eq!(owners, [("crio", 1000), ("podman", 500)]);
}

async fn allocations_record_the_node_and_list_filters_by_it(backend: Backend) {
    let temp = tempfile::tempdir().unwrap();
    let mut d = backend.daemon(
        temp.path(),
        &["--categories", "c0.c9", "--node-name", "host-a"],
    );
    d.launch().unwrap();
    let mut c = d.client().await;
    let a = c.allocate(Allocate::new("x")).await.unwrap();
    assert_eq!(a.node, "host-a");
    assert_eq!(c.get("x").await.unwrap().node, "host-a");
    let mine = list_all(
        &mut c,
        proto::ListRequest {
            node: "host-a".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(mine.len(), 1);
    let other = list_all(
        &mut c,
        proto::ListRequest {
            node: "host-b".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(other.is_empty());
    drop(c);
    d.terminate();
    // A bad name is refused at start with the flag named.
    d.set_args(&["--categories", "c0.c9", "--node-name", "no spaces"]);
    let err = d.launch().unwrap_err();
    assert!(
        err.contains("--node-name") && err.contains("not a node name"),
        "{err}"
    );
    // The default is the host name.
    d.set_args(&["--categories", "c0.c9"]);
    d.launch().unwrap();
    let mut c = d.client().await;
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    assert_eq!(c.allocate(Allocate::new("y")).await.unwrap().node, host);
    assert_eq!(
        c.get("x").await.unwrap().node,
        "host-a",
        "recorded, not recomputed"
    );
}

both_backends!(
    hands_out_all_45_pairs_of_c0_c9_then_reports_exhaustion,
    allocate_is_idempotent_on_the_container_id,
    an_empty_owner_defaults_to_the_callers_uid,
    release_is_idempotent_and_says_whether_anything_was_held,
    group_members_share_a_level_until_the_last_one_leaves,
    requested_levels_are_granted_only_when_free_and_in_range,
    reservations_are_never_handed_out,
    reserving_a_held_pair_keeps_it_with_its_holder_until_release,
    bad_input_is_refused_and_nothing_is_stored,
    list_streams_every_row_in_order_and_filters,
    allocations_record_the_node_and_list_filters_by_it,
);
