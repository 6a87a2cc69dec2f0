//! etcd's `--grpc-keepalive-min-time`, enforced under HTTP/2: a client that pings more
//! often than the minimum gets a GOAWAY with `ENHANCE_YOUR_CALM` and `too_many_pings`,
//! and its connection is closed, as etcd's gRPC server does. The HTTP/2 server (h2) has no
//! such policy, so the connection's bytes are watched here, frame headers only: the client's
//! PINGs are timed, and the server's own HEADERS and DATA reset the count (clients ping to
//! measure bandwidth after data arrives; those pings are not abuse).
//!
//! Like etcd: the first ping is free, a ping sooner than `min_time` after the previous one
//! is a strike, and the third strike closes the connection. Unlike etcd, pings on a
//! connection with no open stream are held to the same `min_time` (etcd holds them to two
//! hours unless its clients are told to permit them).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Strikes a connection may have; one more closes it (gRPC's `maxPingStrikes`).
const PING_STRIKES_MAX: u32 = 2;
/// The client's connection preface, before its first frame.
const PREFACE_BYTES: usize = 24;
const FRAME_HEADER_BYTES: usize = 9;
const KIND_DATA: u8 = 0;
const KIND_HEADERS: u8 = 1;
const KIND_PING: u8 = 6;
const KIND_GOAWAY: u8 = 7;
const FLAG_ACK: u8 = 0x1;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Frame boundaries in one direction of an HTTP/2 connection.
#[derive(Debug)]
struct Frames {
    /// Bytes still to pass before the next frame header (a payload, or the preface).
    skip: usize,
    header: [u8; FRAME_HEADER_BYTES],
    filled: usize,
}

impl Frames {
    fn new(skip: usize) -> Self {
        Self { skip, header: [0; FRAME_HEADER_BYTES], filled: 0 }
    }

    fn between_frames(&self) -> bool {
        self.skip == 0 && self.filled == 0
    }

    /// Passes `bytes`, calling `frame(kind, flags, stream)` at each frame header.
    fn pass(&mut self, mut bytes: &[u8], mut frame: impl FnMut(u8, u8, u32)) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let skipped = self.skip.min(bytes.len());
                self.skip -= skipped;
                bytes = &bytes[skipped..];
                continue;
            }
            let taken = (FRAME_HEADER_BYTES - self.filled).min(bytes.len());
            self.header[self.filled..self.filled + taken].copy_from_slice(&bytes[..taken]);
            self.filled += taken;
            bytes = &bytes[taken..];
            if self.filled == FRAME_HEADER_BYTES {
                let header = self.header;
                let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
                frame(header[3], header[4], stream);
                self.skip = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
                self.filled = 0;
            }
        }
    }
}

/// The ping count of one connection.
#[derive(Debug)]
struct Policy {
    min_time: Duration,
    last_ping: Option<Instant>,
    strikes: u32,
    /// The server sent HEADERS or DATA since the last ping: the next one is not counted.
    reset: bool,
    /// The newest stream the client opened (the GOAWAY names it).
    last_stream: u32,
    /// Too many pings: the GOAWAY follows the server's answer to the last one (etcd answers
    /// it too).
    violated: bool,
}

impl Policy {
    /// True once the client has pinged too often.
    fn ping(&mut self, now: Instant) -> bool {
        let previous = self.last_ping.replace(now);
        if std::mem::take(&mut self.reset) {
            self.strikes = 0;
            return false;
        }
        if previous.is_some_and(|previous| now.duration_since(previous) < self.min_time) {
            self.strikes += 1;
        }
        self.strikes > PING_STRIKES_MAX
    }
}

/// A connection whose client is held to `min_time` between pings.
#[derive(Debug)]
pub struct PingPoliced<S> {
    inner: S,
    policy: Policy,
    reads: Frames,
    writes: Frames,
    /// A GOAWAY waiting for the server's writes to reach a frame boundary, and how much of
    /// it is written.
    goaway: Option<(Vec<u8>, usize)>,
    /// The GOAWAY is out: reads end, writes fail.
    closed: bool,
}

impl<S> PingPoliced<S> {
    /// `min_time` zero: any ping rate is allowed.
    pub fn new(inner: S, min_time: Duration) -> Self {
        let policy = Policy { min_time, last_ping: None, strikes: 0, reset: false, last_stream: 0, violated: false };
        Self { inner, policy, reads: Frames::new(PREFACE_BYTES), writes: Frames::new(0), goaway: None, closed: false }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn read(&mut self, bytes: &[u8]) {
        let policy = &mut self.policy;
        self.reads.pass(bytes, |kind, flags, stream| match kind {
            KIND_HEADERS => policy.last_stream = policy.last_stream.max(stream),
            KIND_PING if flags & FLAG_ACK == 0 && !policy.violated && policy.ping(Instant::now()) => {
                tracing::debug!("a client pinged more often than --grpc-keepalive-min-time: GOAWAY too_many_pings");
                policy.violated = true;
            }
            _ => {}
        });
    }

    fn wrote(&mut self, bytes: &[u8]) {
        let (policy, goaway, closed) = (&mut self.policy, &mut self.goaway, self.closed);
        self.writes.pass(bytes, |kind, flags, _| match kind {
            KIND_DATA | KIND_HEADERS => policy.reset = true,
            KIND_PING if flags & FLAG_ACK != 0 && policy.violated && goaway.is_none() && !closed => {
                *goaway = Some((goaway_frame(policy.last_stream), 0));
            }
            _ => {}
        });
    }
}

fn goaway_frame(last_stream: u32) -> Vec<u8> {
    const DEBUG: &[u8] = b"too_many_pings";
    let mut frame = ((8 + DEBUG.len()) as u32).to_be_bytes()[1..].to_vec();
    frame.extend_from_slice(&[KIND_GOAWAY, 0, 0, 0, 0, 0]);
    frame.extend_from_slice(&last_stream.to_be_bytes());
    frame.extend_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
    frame.extend_from_slice(DEBUG);
    frame
}

impl<S: AsyncWrite + Unpin> PingPoliced<S> {
    /// Writes a waiting GOAWAY once the server's writes are between frames.
    fn poll_goaway(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.writes.between_frames() {
            return Poll::Ready(Ok(()));
        }
        while let Some((frame, written)) = &mut self.goaway {
            if *written == frame.len() {
                ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
                self.goaway = None;
                self.closed = true;
                break;
            }
            *written += ready!(Pin::new(&mut self.inner).poll_write(cx, &frame[*written..]))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for PingPoliced<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_goaway(cx))?;
        if this.closed {
            return Poll::Ready(Ok(())); // the end of the stream
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.read(&buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PingPoliced<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_goaway(cx))?;
        if this.closed {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "closed: too many pings")));
        }
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.wrote(&buf[..written]);
        if this.goaway.is_some() {
            // Get the GOAWAY out now: the connection may have nothing else to write.
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(written))
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_goaway(cx))?;
        if this.closed {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "closed: too many pings")));
        }
        let written = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        let mut left = written;
        for buf in bufs {
            let part = left.min(buf.len());
            this.wrote(&buf[..part]);
            left -= part;
            if left == 0 {
                break;
            }
        }
        if this.goaway.is_some() {
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_goaway(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(min_time: Duration) -> Policy {
        Policy { min_time, last_ping: None, strikes: 0, reset: false, last_stream: 0, violated: false }
    }

    #[test]
    fn the_third_early_ping_after_the_first_closes() {
        let mut policy = policy(Duration::from_secs(5));
        let start = Instant::now();
        let verdicts: Vec<bool> = (0..4).map(|i| policy.ping(start + Duration::from_millis(100 * i))).collect();
        assert_eq!(verdicts, [false, false, false, true]);
    }

    #[test]
    fn pings_at_the_minimum_or_after_server_data_are_no_strikes() {
        let mut policy = policy(Duration::from_secs(5));
        let start = Instant::now();
        for i in 0..10 {
            assert!(!policy.ping(start + Duration::from_secs(5 * i)));
        }
        for i in 0..10 {
            policy.reset = true;
            assert!(!policy.ping(start + Duration::from_secs(50) + Duration::from_millis(i)));
        }
        assert!(!policy.ping(start + Duration::from_secs(60)), "the count started again after data");
    }

    #[test]
    fn frame_headers_are_found_however_the_bytes_are_split() {
        let mut stream = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let frames = [(4u8, 0u8, 0u32, 6usize), (1, 4, 1, 30), (6, 0, 0, 8), (0, 1, 1, 100), (6, 1, 0, 8)];
        for (kind, flags, id, len) in frames {
            stream.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
            stream.extend_from_slice(&[kind, flags]);
            stream.extend_from_slice(&id.to_be_bytes());
            stream.extend(std::iter::repeat_n(0xaa, len));
        }
        for chunk in [1, 5, 9, 10, 64, stream.len()] {
            let mut scanner = Frames::new(PREFACE_BYTES);
            let mut seen = Vec::new();
            for piece in stream.chunks(chunk) {
                scanner.pass(piece, |kind, flags, id| seen.push((kind, flags, id)));
            }
            let expected: Vec<_> = frames.iter().map(|(kind, flags, id, _)| (*kind, *flags, *id)).collect();
            assert_eq!(seen, expected, "chunks of {chunk}");
            assert!(scanner.between_frames());
        }
    }
}
