//! Berth's integration tests: the real `berth` binary, real clients (skopeo, oras, podman) and
//! the real CNCF Distribution, on temp roots and free ports.
//!
//! One test binary, so the workspace links once. Modules by area:

/// skopeo, oras, podman and a raw HTTP client.
mod clients;
/// Servers under test and tool lookup.
mod harness;
/// OCI layouts with real layers, built without network.
mod image;

/// The admin API's listings: pages, sorting, filters, and the CLI reading them.
mod admin;
/// Access control: the denial matrix, rights per repository, real clients signing in.
mod auth;
/// Bad input gets the spec's error code, never a 500.
mod bad_input;
/// The CLI offline on a root, and its manners.
mod cli;
/// The same root served by Berth and by Distribution, both ways.
mod compat;
/// kill -9 during pushes and GC, then fsck and pulls.
mod crash;
/// Deletes over /v2 and the CLI, restore, and what skopeo sees.
mod delete;
/// Space accounting.
mod du;
/// A full disk on a small tmpfs, and blob size limits.
mod full_disk;
/// GC against Distribution's garbage-collect on the same root.
mod gc_compat;
/// GC inside the running server: races, re-push, predictions, schedule.
mod gc_online;
/// Notifications: what a listener hears from Berth and from Distribution 2.8, and nothing lost
/// across a listener outage and a restart.
mod notifications;
/// podman pull and push, daemonless.
mod podman;
/// The spec's flows over HTTP, run against Berth and Distribution alike.
mod protocol;
/// skopeo round trips: OCI image and index, Docker schema 2, inspect and list-tags.
mod push_pull;
/// OCI artifacts with a subject, pushed by oras, listed by the referrers API.
mod referrers;
/// Deleting on other registries through the standard API.
mod remote;
/// Berth on an S3 bucket (Garage), and Distribution's s3 driver on the bucket it wrote.
mod s3;
/// Berth on S3 when things fail: a Garage node lost, kill -9 during an upload and a GC; the
/// stress load, podman and oras, and GC against Distribution's on a bucket.
mod s3_faults;
/// Several replicas on one Garage bucket coordinated through one PostgreSQL: `berth db`,
/// requests spread over replicas, deletes seen everywhere at once, the stress load.
mod replicas;
/// Retention policies with real pulls: dry run, the run, restore, GC after.
mod retention;
/// `berth serve` itself: config, flags, metrics, health, shutdown.
mod serve;
/// Concurrent pushes, pulls, deletes and GC, bounded in time.
mod stress;
/// TLS: CA-trusting clients, client certificates, SIGHUP renewal.
mod tls;
/// Bearer tokens: the denial matrix, policy on top, the token flow, Distribution alike.
mod token;
/// Tokens minted outside Berth, and a token server.
mod tokens;
/// Trash expiry and the audit log.
mod trash;
/// The web UI in headless Chromium.
mod ui;
/// A small WebDriver client for Chromium.
mod webdriver;
