//! Moving bytes between async HTTP bodies and the blocking registry core, in bounded steps.
//!
//! Inbound, a body is read on the async side and handed over a small channel to a blocking task
//! that writes and hashes it; outbound, a blocking task reads a blob and feeds the response.
//! The channels are bounded, so a slow disk slows the client instead of filling memory.

use std::io::Read;

use axum::body::Body;
use berth_registry::{Chunk, RegistryError};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::error::ApiError;

/// Inbound chunks are gathered to about this size before they cross to the writer thread:
/// fewer, larger writes and channel hops per gigabyte.
const GATHER: usize = 256 << 10;
/// Outbound read size.
const READ_CHUNK: usize = 1 << 20;
/// When the writer stops early (a full disk, a blob over the size limit), up to this much more
/// of the body is read and dropped before answering, so a client still sending gets the error
/// instead of a broken connection; a longer body is cut off (HTTP lets the server close).
const DRAIN: usize = 32 << 20;

/// Runs `f` on a blocking thread with an iterator over `body`'s chunks; returns its result and
/// the number of body bytes handed over.
pub async fn with_body<T: Send + 'static>(
    body: Body,
    f: impl FnOnce(&mut dyn Iterator<Item = Chunk>) -> T + Send + 'static,
) -> Result<(T, u64), ApiError> {
    let (tx, mut rx) = mpsc::channel::<Chunk>(4);
    let task = tokio::task::spawn_blocking(move || {
        let mut it = std::iter::from_fn(move || rx.blocking_recv());
        f(&mut it)
    });
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    let mut total = 0u64;
    let mut stopped = false;
    loop {
        match stream.next().await {
            Some(Ok(data)) => {
                total += data.len() as u64;
                if buf.is_empty() && data.len() >= GATHER {
                    if tx.send(Ok(data)).await.is_err() {
                        stopped = true;
                        break;
                    }
                    continue;
                }
                if buf.capacity() == 0 {
                    buf.reserve(GATHER.max(data.len()));
                }
                buf.extend_from_slice(&data);
                if buf.len() >= GATHER && tx.send(Ok(buf.split().freeze())).await.is_err() {
                    stopped = true;
                    break;
                }
            }
            Some(Err(e)) => {
                let _ = tx.send(Err(std::io::Error::other(e))).await;
                break;
            }
            None => {
                if !buf.is_empty() {
                    let _ = tx.send(Ok(buf.split().freeze())).await;
                }
                break;
            }
        }
    }
    drop(tx);
    if stopped {
        let mut left = DRAIN;
        while let Some(Ok(data)) = stream.next().await {
            match left.checked_sub(data.len()) {
                Some(l) => left = l,
                None => break,
            }
        }
    }
    Ok((task.await.map_err(join_error)?, total))
}

/// Reads at most `limit` bytes of a body into memory; `None` when it is longer.
pub async fn read_limited(body: Body, limit: usize) -> Result<Option<Bytes>, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::Registry(RegistryError::Body(std::io::Error::other(e))))?;
        if buf.len() + chunk.len() > limit {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Some(buf.freeze()))
}

/// A response body that streams `len` bytes from a blocking reader.
pub fn from_reader(reader: Box<dyn Read + Send>, len: u64) -> Body {
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut reader = reader.take(len);
        let mut left = len;
        while left > 0 {
            let want = left.min(READ_CHUNK as u64) as usize;
            // read_to_end fills spare capacity without zeroing it first.
            let mut buf = Vec::with_capacity(want);
            match (&mut reader).take(want as u64).read_to_end(&mut buf) {
                Ok(0) => {
                    // The file is shorter than it was when stat'ed: end the body early so the
                    // client sees a short read instead of a hang.
                    let _ = tx.blocking_send(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "blob shrank while read",
                    )));
                    return;
                }
                Ok(n) => left -= n as u64,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
            if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                return; // client went away
            }
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) }))
}

/// Runs a registry call on a blocking thread.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(join_error)
}

fn join_error(e: tokio::task::JoinError) -> ApiError {
    // A panic in the core is a bug; answer 500 instead of dropping the connection.
    tracing::error!(error = %e, "registry task failed");
    ApiError::Internal("registry task failed")
}
