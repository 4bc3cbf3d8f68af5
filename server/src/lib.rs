//! mcsd: the host's single authority for SELinux MCS labels.
//!
//! Container runtimes ask mcsd for a label when they create a container;
//! mcsd hands out a category pair no other live container holds, records it
//! durably, and frees it when the container goes away.
//!
//! How the crate is laid out:
//! - [`level`], [`id`], [`reservation`]: the vocabulary, validated at the edge;
//! - [`allocator`]: the pair pool, an O(1) random pick among free pairs;
//! - [`store`]: the durable records and the backend trait: [`store::sled`]
//!   for one host, [`store::etcd`] for one pool shared by several hosts;
//! - [`engine`]: the single writer, batching changes into group commits;
//! - [`context`]: label templates and the host's SELinux state;
//! - [`relabel`]: walking a tree safely; [`volumes`]: a container's trees,
//!   restored before its pair is freed (the one way a pair is freed);
//! - [`service`]: the gRPC adapter: requests become domain calls, domain
//!   errors become statuses;
//! - [`socket`], [`connection`], [`config`], [`daemon`]: running it as a
//!   service.
//!
//! The domain modules never name tonic. Besides [`service`], only the
//! modules that carry connections do ([`connection`] and [`socket`]: the
//! peer's credentials tonic hands each request; [`daemon`]: building the
//! server), and [`store::etcd`], whose client speaks gRPC to etcd and fails
//! with tonic's errors. `.ci/modgraph --confine` fails the tests if any
//! other module names it.

pub mod allocator;
pub mod auth;
pub mod config;
pub mod connection;
pub mod context;
pub mod daemon;
pub mod engine;
pub mod error;
pub mod id;
pub mod inuse;
pub mod level;
pub mod malloc;
pub mod metrics;
pub mod reconcile;
pub mod relabel;
pub mod reservation;
pub mod service;
pub mod socket;
pub mod store;
pub mod stored;
pub mod systemd;
pub mod volumes;
