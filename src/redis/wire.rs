//! The outbound writer's own connection to Redis.
//!
//! The writer sends pipelines of `PUBLISH` or `XADD` that it packs itself,
//! and only needs to know, for each reply, whether it is an error and (for
//! `PUBLISH`) the integer. The `redis` crate's generic reply parser built a
//! `Value` for each of them and cost 18 % of the writer's CPU
//! (`perf-reports/redis.md`); this reader splits replies off a buffer with a
//! byte scan and allocates nothing unless the server reports an error.
//!
//! The handshake is the one the `redis` crate does for the same
//! [`ConnectionInfo`]: `AUTH` (with the username when there is one), then
//! `SELECT` when the database is not 0. Both are checked: a refused password
//! fails the connection. Replies are read in RESP2, which the server speaks
//! until a client asks for RESP3 with `HELLO`; this connection never does.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use ::redis::{ConnectionAddr, ConnectionInfo};

/// Why the writer's connection failed; the writer drops the connection,
/// counts a reconnect and sends the batch again on a new one.
#[derive(Debug, thiserror::Error)]
pub(super) enum WireError {
    /// The socket failed or timed out.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The server replied with an error (`LOADING`, `WRONGTYPE`, a refused
    /// `AUTH`, …); its text as the server wrote it.
    #[error("server error: {0}")]
    Server(String),
    /// The bytes read are not a reply this connection expects.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The address needs something this connection does not do.
    #[error("{0}")]
    Unsupported(&'static str),
}

/// One reply, as far as the writer cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reply {
    /// `:n` (`PUBLISH`: how many subscribers got the message).
    Int(i64),
    /// A bulk string (`XADD`: the entry id), a simple string (`+OK`) or a
    /// null: a success with nothing the writer reads.
    Done,
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn set_timeouts(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
            Stream::Unix(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(bytes),
            Stream::Unix(s) => s.write_all(bytes),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

/// The reply buffer's size; `PUBLISH` replies are four or five bytes each,
/// so one read takes a whole pipeline's.
const READ_CHUNK: usize = 16 * 1024;

/// A connection that writes packed commands and reads their replies.
pub(super) struct WireConnection {
    stream: Stream,
    buf: ReplyBuffer,
}

impl WireConnection {
    /// Connects to the server `info` names and runs the handshake; `timeout`
    /// bounds the connect and every later read and write.
    ///
    /// # Errors
    ///
    /// [`WireError`]: the socket failed, the server refused the password or
    /// the database, or the address needs TLS.
    pub(super) fn connect(info: &ConnectionInfo, timeout: Duration) -> Result<Self, WireError> {
        let stream = match info.addr() {
            ConnectionAddr::Tcp(host, port) => Stream::Tcp(tcp(host, *port, timeout)?),
            ConnectionAddr::Unix(path) => Stream::Unix(UnixStream::connect(path)?),
            _ => return Err(WireError::Unsupported("TLS connections are not supported")),
        };
        stream.set_timeouts(Some(timeout))?;
        let mut con = Self {
            stream,
            buf: ReplyBuffer::default(),
        };
        let settings = info.redis_settings();
        let mut setup = Vec::new();
        let mut replies = 0;
        if let Some(password) = settings.password() {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = settings.username() {
                args.push(user.as_bytes());
            }
            args.push(password.as_bytes());
            pack(&mut setup, &args);
            replies += 1;
        }
        if settings.db() != 0 {
            let db = itoa::Buffer::new().format(settings.db()).to_owned();
            pack(&mut setup, &[b"SELECT", db.as_bytes()]);
            replies += 1;
        }
        if replies > 0 {
            con.send(&setup)?;
            for _ in 0..replies {
                con.reply()?;
            }
        }
        Ok(con)
    }

    /// Writes `bytes` (packed commands) whole.
    ///
    /// # Errors
    ///
    /// [`WireError::Io`] when the write fails or times out.
    pub(super) fn send(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        Ok(self.stream.write_all(bytes)?)
    }

    /// Reads the next reply.
    ///
    /// # Errors
    ///
    /// [`WireError::Server`] for an error reply, [`WireError::Protocol`] for
    /// bytes that are no reply, [`WireError::Io`] when the read fails, times
    /// out or the server closed the connection.
    pub(super) fn reply(&mut self) -> Result<Reply, WireError> {
        loop {
            if let Some(reply) = self.buf.next()? {
                return Ok(reply);
            }
            let room = self.buf.room();
            let n = match self.stream.read(room) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
            self.buf.filled(n);
        }
    }
}

/// Connects to the first address of `host` that answers within `timeout`.
fn tcp(host: &str, port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrNotAvailable)))
}

/// Appends one command with `args` in RESP.
fn pack(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    out.extend_from_slice(itoa::Buffer::new().format(args.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        bulk(out, &[arg]);
    }
}

/// Appends `parts`, concatenated, as one RESP bulk string.
pub(super) fn bulk(out: &mut Vec<u8>, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.push(b'$');
    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    out.extend_from_slice(b"\r\n");
    for p in parts {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(b"\r\n");
}

/// Bytes read and not yet parsed, with the parser over them.
struct ReplyBuffer {
    /// Zeroed once; grows only for a reply longer than it.
    bytes: Vec<u8>,
    /// The first byte not parsed yet.
    start: usize,
    /// The end of what was read.
    end: usize,
}

impl Default for ReplyBuffer {
    fn default() -> Self {
        Self {
            bytes: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
        }
    }
}

impl ReplyBuffer {
    /// Parses the next whole reply, if the buffer holds one.
    fn next(&mut self) -> Result<Option<Reply>, WireError> {
        let Some((reply, used)) = parse(&self.bytes[self.start..self.end])? else {
            return Ok(None);
        };
        self.start += used;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        Ok(Some(reply))
    }

    /// Free space to read into, after moving what is left of a parsed
    /// prefix to the front (and growing the buffer when a partial reply
    /// fills it).
    fn room(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.bytes.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.bytes.len() {
            self.bytes.resize(2 * self.bytes.len(), 0);
        }
        &mut self.bytes[self.end..]
    }

    /// `n` bytes were read into [`room`](Self::room).
    fn filled(&mut self, n: usize) {
        self.end += n;
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// Splits one reply off the front of `b`: the reply and its length in bytes,
/// or `None` when `b` holds only part of one.
fn parse(b: &[u8]) -> Result<Option<(Reply, usize)>, WireError> {
    let Some((&kind, rest)) = b.split_first() else {
        return Ok(None);
    };
    let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = &rest[..eol];
    // The kind byte, the line and its CRLF.
    let head = 1 + eol + 2;
    match kind {
        b':' => Ok(Some((Reply::Int(integer(line)?), head))),
        b'+' | b'_' => Ok(Some((Reply::Done, head))),
        b'-' => Err(WireError::Server(
            String::from_utf8_lossy(line).into_owned(),
        )),
        b'$' => {
            let len = integer(line)?;
            if len < 0 {
                // `$-1`: the RESP2 null.
                return Ok(Some((Reply::Done, head)));
            }
            let len = usize::try_from(len).map_err(|_| WireError::Protocol("bulk length"))?;
            let end = head + len + 2;
            match b.get(head + len..end) {
                None => Ok(None),
                Some(b"\r\n") => Ok(Some((Reply::Done, end))),
                Some(_) => Err(WireError::Protocol("bulk string without its CRLF")),
            }
        }
        _ => Err(WireError::Protocol(
            "a reply that is neither an integer, a string nor an error",
        )),
    }
}

/// A RESP integer line.
fn integer(line: &[u8]) -> Result<i64, WireError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(WireError::Protocol("an integer that does not parse"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` to `buf` in pieces of `step` bytes, as reads of that
    /// size would, parsing after each; stops at the first error.
    fn feed(buf: &mut ReplyBuffer, bytes: &[u8], step: usize) -> Result<Vec<Reply>, WireError> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            // A read takes what fits, up to `step` bytes.
            let room = buf.room();
            let n = step.min(room.len()).min(rest.len());
            room[..n].copy_from_slice(&rest[..n]);
            buf.filled(n);
            rest = &rest[n..];
            while let Some(r) = buf.next()? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Parses every reply in `bytes`, fed in pieces of `step` bytes; every
    /// byte must belong to a reply.
    fn replies(bytes: &[u8], step: usize) -> Result<Vec<Reply>, WireError> {
        let mut buf = ReplyBuffer::default();
        let out = feed(&mut buf, bytes, step)?;
        assert!(buf.is_empty(), "every byte is parsed");
        Ok(out)
    }

    #[test]
    fn every_reply_the_writer_can_get_parses_whatever_the_read_sizes() {
        let wire = b":0\r\n:12\r\n$15\r\n1700000000000-0\r\n+OK\r\n$-1\r\n_\r\n:-3\r\n$0\r\n\r\n";
        let want = [
            Reply::Int(0),
            Reply::Int(12),
            Reply::Done,
            Reply::Done,
            Reply::Done,
            Reply::Done,
            Reply::Int(-3),
            Reply::Done,
        ];
        for step in 1..=wire.len() {
            assert_eq!(
                replies(wire, step).expect("parses"),
                want,
                "reads of {step}"
            );
        }
    }

    #[test]
    fn a_reply_longer_than_the_buffer_grows_it() {
        let text = "x".repeat(3 * READ_CHUNK);
        let wire = format!(":7\r\n${}\r\n{text}\r\n:8\r\n", text.len());
        assert_eq!(
            replies(wire.as_bytes(), 1000).expect("parses"),
            [Reply::Int(7), Reply::Done, Reply::Int(8)]
        );
    }

    #[test]
    fn a_bulk_string_may_hold_crlf() {
        assert_eq!(
            replies(b"$4\r\n\r\n\r\n\r\n:1\r\n", 3).expect("parses"),
            [Reply::Done, Reply::Int(1)]
        );
    }

    #[test]
    fn an_error_reply_carries_the_server_text() {
        match replies(
            b":1\r\n-LOADING Redis is loading the dataset in memory\r\n",
            64,
        ) {
            Err(WireError::Server(text)) => {
                assert_eq!(text, "LOADING Redis is loading the dataset in memory")
            }
            other => panic!("expected a server error, got {other:?}"),
        }
    }

    #[test]
    fn bytes_that_are_no_reply_are_a_protocol_error() {
        for bad in [
            &b"*2\r\n"[..],
            b"hello\r\n",
            b":twelve\r\n",
            b"$3\r\nabcd\r\n",
            b"$x\r\n",
        ] {
            assert!(
                matches!(replies(bad, 64), Err(WireError::Protocol(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    mod arbitrary {
        use super::*;
        use proptest::prelude::*;

        /// One reply of a kind the writer can get, as the server writes it.
        fn reply() -> impl Strategy<Value = (Vec<u8>, Reply)> {
            prop_oneof![
                any::<i64>().prop_map(|n| (format!(":{n}\r\n").into_bytes(), Reply::Int(n))),
                proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| {
                    let mut v = format!("${}\r\n", b.len()).into_bytes();
                    v.extend_from_slice(&b);
                    v.extend_from_slice(b"\r\n");
                    (v, Reply::Done)
                }),
                Just((b"+OK\r\n".to_vec(), Reply::Done)),
                Just((b"$-1\r\n".to_vec(), Reply::Done)),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Bytes from a broken or hostile peer: replies or a typed
            /// error, never a panic, whatever the read sizes.
            #[test]
            fn any_bytes_parse_or_fail_cleanly(
                bytes in proptest::collection::vec(any::<u8>(), 0..512),
                step in 1usize..64,
            ) {
                // Replies, or a typed error: both are fine; a panic fails.
                let _ = feed(&mut ReplyBuffer::default(), &bytes, step);
            }

            /// Any sequence of well-formed replies comes back as written.
            #[test]
            fn well_formed_replies_round_trip(
                sent in proptest::collection::vec(reply(), 0..40),
                step in 1usize..200,
            ) {
                let wire: Vec<u8> = sent.iter().flat_map(|(b, _)| b.clone()).collect();
                let want: Vec<Reply> = sent.iter().map(|(_, r)| *r).collect();
                prop_assert_eq!(replies(&wire, step).expect("parses"), want);
            }
        }
    }

    #[test]
    fn commands_pack_as_the_client_packs_them() {
        let mut out = Vec::new();
        pack(&mut out, &[b"AUTH", b"user", b"p\r\nss"]);
        let want = ::redis::cmd("AUTH")
            .arg("user")
            .arg("p\r\nss")
            .get_packed_command();
        assert_eq!(out, want);
    }
}
