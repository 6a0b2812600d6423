//! Zero-copy blob bodies: the kernel sends a blob file to the client socket with `sendfile(2)`,
//! so the bytes never pass through Berth's memory (Distribution's Go server does the same).
//!
//! hyper owns the connection and writes every response byte itself, so the file cannot simply
//! be handed to the socket. Instead:
//!
//! - [`Listener`] wraps each accepted socket in a [`Stream`] that owns a FIFO of *pending file
//!   regions*, shared with the request handlers through [`Conn`] (in axum's connect info,
//!   `conn::Peer`);
//! - [`file_body`] returns a body that, when hyper first polls it, appends its file region to
//!   that FIFO and then yields *placeholder* frames: slices of one static buffer, [`PLACEHOLDER`],
//!   exactly as many bytes as the region holds;
//! - hyper queues body frames without copying them and hands them to [`Stream`] in
//!   `poll_write_vectored` (its "queue" write strategy, chosen because [`Stream`] says it writes
//!   vectored). [`Stream`] recognises a placeholder slice by its address, and instead of writing
//!   it sends that many bytes of the front region of the FIFO with `sendfile(2)`.
//!
//! Bytes reach the socket in the order hyper writes them, and regions enter the FIFO in the
//! order hyper polls bodies, which is the order of responses; so each placeholder byte is
//! replaced by the right file byte even when a client pipelines requests.
//!
//! What this module must never do: write placeholder bytes themselves. hyper only copies
//! body frames in its "flatten" strategy, which calls `poll_write`; [`Stream`] refuses
//! `poll_write` while a region is pending (the connection closes: a short answer, never a
//! wrong one). A file that shrinks under the send also closes the connection.
//!
//! The `sendfile` calls run on the async worker thread while their pages are in the page cache
//! (a `RWF_NOWAIT` read of the chunk's last byte tells). A chunk that would wait for the disk
//! runs in `block_in_place`, so the runtime moves the thread's other tasks elsewhere meanwhile;
//! `POSIX_FADV_SEQUENTIAL` widens the kernel's read-ahead so that is rare.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use axum::body::Body;
use bytes::Bytes;
use http_body::Frame;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The buffer placeholder frames point into. Never read or written by anyone: it only gives
/// placeholder slices an address no other buffer has. In `.bss`, so it costs no memory.
static PLACEHOLDER: [u8; PLACEHOLDER_LEN] = [0; PLACEHOLDER_LEN];
/// The largest placeholder frame, and so the most one `sendfile` call sends (Go's server
/// sends 4 MiB per call too).
const PLACEHOLDER_LEN: usize = 4 << 20;

fn is_placeholder(buf: &[u8]) -> bool {
    let start = PLACEHOLDER.as_ptr() as usize;
    let p = buf.as_ptr() as usize;
    !buf.is_empty() && p >= start && p < start + PLACEHOLDER_LEN
}

/// A file region waiting to be sent.
#[derive(Debug)]
struct Region {
    file: File,
    offset: i64,
    left: u64,
}

type Regions = Arc<Mutex<VecDeque<Region>>>;

/// Accepts TCP connections for zero-copy bodies (with `TCP_NODELAY`: a blob answer writes its
/// headers and its body apart, and Nagle's algorithm against a client's delayed ACK would stall
/// every small answer by ~40 ms).
#[derive(Debug)]
pub struct Listener(pub TcpListener);

impl axum::serve::Listener for Listener {
    type Io = Stream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Stream, SocketAddr) {
        loop {
            match self.0.accept().await {
                Ok((tcp, addr)) => {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::warn!(error = %e, "could not set TCP_NODELAY");
                    }
                    return (Stream { tcp, regions: Default::default() }, addr);
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait, as axum's own listener does.
                    tracing::error!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// A connection's socket, sending placeholder bytes from pending file regions.
#[derive(Debug)]
pub struct Stream {
    tcp: TcpStream,
    regions: Regions,
}

/// Where a handler queues file regions for its connection (see `conn::Peer`). Absent when the
/// server was not started through [`Listener`] (then bodies are copied as usual).
#[derive(Clone, Debug)]
pub struct Conn(Regions);

impl Stream {
    /// The handle handlers queue file regions through.
    pub fn conn(&self) -> Conn {
        Conn(self.regions.clone())
    }

    /// Sends up to `want` bytes of the front region.
    fn poll_sendfile(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        let mut regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        let Some(region) = regions.front_mut() else {
            return Poll::Ready(Err(io::Error::other("placeholder bytes without a file region to send")));
        };
        let want = want.min(usize::try_from(region.left).unwrap_or(usize::MAX));
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            // A region whose pages are not in the page cache makes sendfile wait for the disk:
            // let the runtime move its other tasks to another thread meanwhile.
            let cold = !cached(&region.file, region.offset + want as i64 - 1);
            let tcp = &self.tcp;
            let mut send = || {
                tcp.try_io(Interest::WRITABLE, || {
                    // SAFETY: both descriptors are open for the duration of the call (the socket
                    // by `tcp`, the file by `region`), and `offset` is a valid `off_t` we own.
                    let n =
                        unsafe { libc::sendfile(tcp.as_raw_fd(), region.file.as_raw_fd(), &mut region.offset, want) };
                    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
                })
            };
            let sent = if cold && multi_threaded() { tokio::task::block_in_place(send) } else { send() };
            match sent {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, "blob shrank while sent")));
                }
                Ok(n) => {
                    region.left -= n as u64;
                    if region.left == 0 {
                        regions.pop_front();
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn pending(&self) -> bool {
        !self.regions.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }
}

/// Whether the byte at `offset` of `file` is in the page cache: a one-byte read that may not
/// wait for the disk (`RWF_NOWAIT`). Kernels without it answer as if it were cached.
fn cached(file: &File, offset: i64) -> bool {
    let mut byte = [0u8; 1];
    let iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    // SAFETY: `iov` points at one byte we own, for the duration of the call.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
    n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock
}

/// Whether `block_in_place` may be used here (only on the multi-threaded runtime).
fn multi_threaded() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// `Ok(n)` once something was written, else `r`: a write call that made progress must report
/// it, even when a later part of it would block or fail.
fn progress(total: usize, r: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
    match r {
        _ if total > 0 => Poll::Ready(Ok(total)),
        other => other,
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if is_placeholder(buf) {
            return this.poll_sendfile(cx, buf.len());
        }
        if this.pending() {
            // Only hyper's flatten strategy writes this way, and it copies placeholders into
            // its own buffer, where they can no longer be told apart: never send them.
            return Poll::Ready(Err(io::Error::other("a zero-copy body on a connection that copies bodies")));
        }
        Pin::new(&mut this.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut total = 0;
        let mut i = 0;
        while i < bufs.len() {
            if is_placeholder(&bufs[i]) {
                let want = bufs[i].len();
                match this.poll_sendfile(cx, want) {
                    Poll::Ready(Ok(n)) => {
                        total += n;
                        if n < want {
                            return Poll::Ready(Ok(total));
                        }
                        i += 1;
                    }
                    other => return progress(total, other),
                }
                continue;
            }
            // The run of ordinary buffers up to the next placeholder, in one writev.
            let end = (i..bufs.len()).find(|&j| is_placeholder(&bufs[j])).unwrap_or(bufs.len());
            let want: usize = bufs[i..end].iter().map(|b| b.len()).sum();
            match Pin::new(&mut this.tcp).poll_write_vectored(cx, &bufs[i..end]) {
                Poll::Ready(Ok(n)) => {
                    total += n;
                    if n < want {
                        return Poll::Ready(Ok(total));
                    }
                    i = end;
                }
                other => return progress(total, other),
            }
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

/// A body of placeholder frames standing for `len` bytes of `file` from `offset`.
struct FileBody {
    regions: Regions,
    region: Option<Region>,
    left: u64,
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if let Some(region) = this.region.take() {
            // First poll: hyper is now writing this response, after every earlier one.
            this.regions.lock().unwrap_or_else(|e| e.into_inner()).push_back(region);
        }
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let n = this.left.min(PLACEHOLDER_LEN as u64) as usize;
        this.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&PLACEHOLDER[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.left)
    }
}

/// A response body sending `len` bytes of `file` from `offset` with `sendfile(2)`.
pub fn file_body(conn: &Conn, file: File, offset: u64, len: u64) -> Body {
    if len == 0 {
        return Body::empty();
    }
    // SAFETY: a hint on a descriptor we own; failure only means default read-ahead.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), offset as i64, len as i64, libc::POSIX_FADV_SEQUENTIAL);
    }
    let region = Region { file, offset: offset as i64, left: len };
    Body::new(FileBody { regions: conn.0.clone(), region: Some(region), left: len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_told_apart_by_address_only() {
        assert!(is_placeholder(&PLACEHOLDER[..1]));
        assert!(is_placeholder(&PLACEHOLDER[PLACEHOLDER_LEN - 1..]));
        assert!(!is_placeholder(&PLACEHOLDER[..0]), "empty slices are nothing to send");
        let copy = PLACEHOLDER[..16].to_vec();
        assert!(!is_placeholder(&copy), "a copy is ordinary bytes");
    }
}
