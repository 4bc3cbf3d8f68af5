//! Many clients at once: no pair is ever handed to two live ids, on either
//! store.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use common::etcd::Backend;
use mcs_client::{Allocate, Client};
use tokio_stream::StreamExt;

async fn two_hundred_clients_allocating_and_releasing_never_share_a_pair(backend: Backend) {
    // 2,016 pairs, up to ~2,000 live ids: the pool runs nearly full, so picks
    // and frees race constantly.
    let d = backend.start("c0.c63");
    let live: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let mut tasks = Vec::new();
    for t in 0..200 {
        let socket = d.socket.clone();
        let live = live.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(&socket).await.unwrap();
            let mut mine: Vec<(String, String)> = Vec::new();
            let mut exhausted = 0;
            for i in 0..40 {
                let id = format!("t{t}-{i}");
                match c
                    .allocate(Allocate::new(id.clone()).owner(format!("o{}", t % 4)))
                    .await
                {
                    Ok(a) => {
                        let previous = live.lock().unwrap().insert(a.level.clone(), id.clone());
                        assert!(
                            previous.is_none(),
                            "{} given to {id} while {previous:?} holds it",
                            a.level
                        );
                        mine.push((id, a.level));
                    }
                    Err(e) if e.code() == Some(tonic::Code::ResourceExhausted) => exhausted += 1,
                    Err(e) => panic!("allocate {id}: {e}"),
                }
                // Release about half, in an order unrelated to allocation.
                if (t + i) % 2 == 0 && !mine.is_empty() {
                    let (id, level) = mine.swap_remove((i * 7 + t) % mine.len());
                    assert_eq!(
                        live.lock().unwrap().remove(&level).as_deref(),
                        Some(id.as_str())
                    );
                    let r = c.release(id.clone()).await.unwrap();
                    assert!(r.released && r.level_freed, "{id}");
                }
            }
            (mine, exhausted)
        }));
    }
    let mut held = Vec::new();
    for t in tasks {
        held.extend(t.await.unwrap().0);
    }

    // The daemon's own view agrees: every live id, each on its own pair.
    let mut c = d.client().await;
    let mut stream = c.list(Default::default()).await.unwrap();
    let mut seen_levels = HashSet::new();
    let mut count = 0;
    while let Some(chunk) = stream.next().await {
        for a in chunk.unwrap().allocations {
            assert!(
                seen_levels.insert(a.level.clone()),
                "{} listed twice",
                a.level
            );
            count += 1;
        }
    }
    assert_eq!(count, held.len());
    let s = c.stats().await.unwrap();
    assert_eq!(s.held, held.len() as u64);
    assert_eq!(s.held + s.free + s.reserved, s.total);
}

async fn concurrent_group_joins_share_one_level_and_free_it_once(backend: Backend) {
    let d = backend.start("c0.c1023");
    let socket = d.socket.clone();
    let joins = (0..50).map(|i| {
        let socket = socket.clone();
        tokio::spawn(async move {
            let mut c = Client::connect(&socket).await.unwrap();
            c.allocate(Allocate::new(format!("m{i}")).group("pod"))
                .await
                .unwrap()
                .level
        })
    });
    let mut levels = HashSet::new();
    for j in joins {
        levels.insert(j.await.unwrap());
    }
    assert_eq!(levels.len(), 1, "members got different levels: {levels:?}");

    let releases = (0..50).map(|i| {
        let socket = socket.clone();
        tokio::spawn(async move {
            let mut c = Client::connect(&socket).await.unwrap();
            c.release(format!("m{i}")).await.unwrap().level_freed
        })
    });
    let mut freed = 0;
    for r in releases {
        freed += usize::from(r.await.unwrap());
    }
    assert_eq!(freed, 1, "the shared level must be freed exactly once");
    let s = Client::connect(&socket)
        .await
        .unwrap()
        .stats()
        .await
        .unwrap();
    assert_eq!((s.held, s.groups, s.containers), (0, 0, 0));
}

both_backends!(
    two_hundred_clients_allocating_and_releasing_never_share_a_pair,
    concurrent_group_joins_share_one_level_and_free_it_once,
);
