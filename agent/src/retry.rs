//! What a failed socket call means for the connection ([`verdict`]), and a stream that makes
//! again the calls a signal cut short ([`Restarting`]).
//!
//! Stopping and continuing the agent (Ctrl-Z then `fg`, SIGSTOP then SIGCONT, a cgroup freeze
//! and thaw) makes a socket call that was blocked with a timeout fail with `EINTR`
//! (`ErrorKind::Interrupted`), on Linux even without any signal handler. Nothing is wrong with
//! the connection then, and its leases must not be dropped: the call is simply made again.
//!
//! **Invariant:** the agent's socket is a [`Restarting`] stream under TLS and tungstenite, so
//! neither ever sees `Interrupted` — not even in the upgrade handshake, which tungstenite
//! cannot resume after any error but `WouldBlock`.

use std::io::{self, ErrorKind, Read, Write};

/// What a failed socket call means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A signal cut the call short before it did anything (`EINTR`). Make the same call again.
    Again,
    /// The socket's timeout passed first. For the socket loop's short read timeout this only
    /// means that nothing arrived yet; for a write, that the peer took nothing for that long.
    TimedOut,
    /// The connection is gone (reset, closed, broken pipe, ...).
    Lost,
}

/// The verdict on an IO error of this kind.
pub fn verdict(kind: ErrorKind) -> Verdict {
    match kind {
        ErrorKind::Interrupted => Verdict::Again,
        // A socket timeout: EAGAIN (`WouldBlock`) on Unix, WSAETIMEDOUT (`TimedOut`) on Windows.
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Verdict::TimedOut,
        _ => Verdict::Lost,
    }
}

/// The verdict on a WebSocket error: only an IO error can leave the connection usable.
pub fn ws_verdict(err: &tungstenite::Error) -> Verdict {
    match err {
        tungstenite::Error::Io(err) => verdict(err.kind()),
        _ => Verdict::Lost,
    }
}

/// Makes `call` until it does anything but fail with [`Verdict::Again`], and returns that.
pub fn restart<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(err) if verdict(err.kind()) == Verdict::Again => {}
            other => return other,
        }
    }
}

/// A stream whose `read`, `write` and `flush` a signal cannot cut short: each is made again
/// until it does something else (as `std`'s `read_exact` and `write_all` do). Timeouts and
/// every other error pass through.
#[derive(Debug)]
pub struct Restarting<S>(S);

impl<S> Restarting<S> {
    pub fn new(stream: S) -> Self {
        Self(stream)
    }

    pub fn get_ref(&self) -> &S {
        &self.0
    }
}

impl<S: Read> Read for Restarting<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        restart(|| self.0.read(buf))
    }
}

impl<S: Write> Write for Restarting<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        restart(|| self.0.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        restart(|| self.0.flush())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    #[test]
    fn only_a_signal_means_again_and_only_a_timeout_means_timed_out() {
        let cases = [
            (ErrorKind::Interrupted, Verdict::Again),
            (ErrorKind::WouldBlock, Verdict::TimedOut),
            (ErrorKind::TimedOut, Verdict::TimedOut),
            (ErrorKind::ConnectionReset, Verdict::Lost),
            (ErrorKind::ConnectionAborted, Verdict::Lost),
            (ErrorKind::BrokenPipe, Verdict::Lost),
            (ErrorKind::UnexpectedEof, Verdict::Lost),
            (ErrorKind::NotConnected, Verdict::Lost),
            (ErrorKind::Other, Verdict::Lost),
        ];
        for (kind, expected) in cases {
            assert_eq!(verdict(kind), expected, "{kind:?}");
        }
        // EINTR itself, as the OS reports it.
        #[cfg(unix)]
        assert_eq!(
            verdict(io::Error::from_raw_os_error(4).kind()),
            Verdict::Again
        );
    }

    #[test]
    fn a_websocket_error_is_judged_by_its_io_error() {
        let io = |kind| tungstenite::Error::Io(io::Error::from(kind));
        assert_eq!(ws_verdict(&io(ErrorKind::Interrupted)), Verdict::Again);
        assert_eq!(ws_verdict(&io(ErrorKind::WouldBlock)), Verdict::TimedOut);
        assert_eq!(ws_verdict(&io(ErrorKind::ConnectionReset)), Verdict::Lost);
        assert_eq!(
            ws_verdict(&tungstenite::Error::ConnectionClosed),
            Verdict::Lost
        );
        assert_eq!(
            ws_verdict(&tungstenite::Error::AttackAttempt),
            Verdict::Lost
        );
    }

    /// Answers each call with the next scripted result.
    struct Script(VecDeque<io::Result<usize>>);

    impl Script {
        fn next(&mut self) -> io::Result<usize> {
            self.0.pop_front().unwrap_or(Ok(0))
        }
    }

    impl Read for Script {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            self.next()
        }
    }

    impl Write for Script {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            self.next()
        }

        fn flush(&mut self) -> io::Result<()> {
            self.next().map(drop)
        }
    }

    fn script(results: impl IntoIterator<Item = io::Result<usize>>) -> Restarting<Script> {
        Restarting::new(Script(results.into_iter().collect()))
    }

    fn err(kind: ErrorKind) -> io::Result<usize> {
        Err(kind.into())
    }

    #[test]
    fn interrupted_calls_are_made_again_and_other_errors_pass_through() {
        let mut buf = [0; 8];
        let mut s = script([
            err(ErrorKind::Interrupted),
            err(ErrorKind::Interrupted),
            Ok(3),
        ]);
        assert_eq!(s.read(&mut buf).unwrap(), 3);
        let mut s = script([err(ErrorKind::Interrupted), Ok(5)]);
        assert_eq!(s.write(&buf).unwrap(), 5);
        let mut s = script([err(ErrorKind::Interrupted), Ok(0)]);
        s.flush().unwrap();

        // A read timeout is the socket loop's to see, not a reason to block on.
        let mut s = script([err(ErrorKind::WouldBlock), Ok(3)]);
        assert_eq!(s.read(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
        assert_eq!(s.read(&mut buf).unwrap(), 3);
        let mut s = script([err(ErrorKind::ConnectionReset)]);
        assert_eq!(
            s.write(&buf).unwrap_err().kind(),
            ErrorKind::ConnectionReset
        );
    }
}
