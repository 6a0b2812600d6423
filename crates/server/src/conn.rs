//! What a handler knows of its connection: the client's address (for per-client limits and
//! logs) and, on plain TCP, where to queue file regions for zero-copy bodies. Filled in by axum
//! from the listener the server runs on.

use std::net::SocketAddr;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;

use crate::{tls, zero_copy};

/// The connection a request came on.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// Zero-copy bodies (plain TCP only: TLS encrypts in user space).
    pub zero_copy: Option<zero_copy::Conn>,
}

impl Connected<IncomingStream<'_, zero_copy::Listener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, zero_copy::Listener>) -> Self {
        Peer { addr: *stream.remote_addr(), zero_copy: Some(stream.io().conn()) }
    }
}

impl Connected<IncomingStream<'_, tls::Listener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, tls::Listener>) -> Self {
        Peer { addr: *stream.remote_addr(), zero_copy: None }
    }
}
