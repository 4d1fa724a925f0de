//! The socket side of the agent: connects, lets the client's [`Link`] say hello, heartbeat
//! and pace reconnects, feeds leases to the [`Pool`] and sends its results back.
//!
//! One thread owns the socket. Its read has a short timeout, so heartbeats and finished
//! results go out on time however long the workers compute. A socket call cut short by a
//! signal (as when the agent is stopped and continued) is made again, never taken for a lost
//! connection: see [`crate::retry`].

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use client::link::{Identity, Link, LinkEvent, LinkState};
use shared_protocol::{
    encode, ErrorCode, HttpError, ToClient, ToCoordinator, ToDevice, Work, WorkResult,
};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::client::Request;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Connector, HandshakeError, Message, WebSocket};

use crate::retry::{ws_verdict, Restarting, Verdict};
use crate::state;
use crate::work::{Cancelled, Done, Pool};
use crate::workloads::{Pass, Workloads};

/// How long a read waits before the loop looks at heartbeats and results again.
const POLL: Duration = Duration::from_millis(50);
/// Limits for opening a connection (TCP connect, then the upgrade).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the running totals are printed.
const TOTALS_EVERY: Duration = Duration::from_secs(10);

/// Everything a session needs.
pub struct Config {
    pub ws_url: String,
    pub swarm_id: String,
    pub state_path: PathBuf,
    pub workers: usize,
    pub identity: Identity,
    /// Extra trusted root certificates (PEM) for `wss://`, beside the Mozilla roots.
    pub ca_file: Option<PathBuf>,
}

/// Why the agent stopped: the coordinator refused its identity for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

/// Milliseconds since the agent first read this clock: the clock the [`Link`] runs on (its
/// heartbeat timer). It is monotonic, so a wall clock set back (by NTP after a resume, say)
/// cannot hold heartbeats back. After a long stop the next heartbeat is due at once, and one
/// goes out, not one per interval missed: [`Link::poll_heartbeat`] schedules from `now`.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// A number in [0, 1) for the backoff's jitter, from the clock's nanoseconds mixed with the
/// process id (so agents started together still spread out).
pub fn jitter() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut x = (nanos as u64) ^ (u64::from(std::process::id()) << 32) ^ 0x9E37_79B9_7F4A_7C15;
    // splitmix64's finaliser: neighbouring inputs give unrelated outputs.
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// What the agent has done since it started.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Totals {
    pub chunks: u64,
    /// Work units (numbers, pixels, nonces) computed.
    pub units: u64,
    pub compute_ms: u64,
}

impl Totals {
    pub fn add(&mut self, work: &Work, compute_ms: u64) {
        self.chunks += 1;
        self.units += client::work::units(work);
        self.compute_ms += compute_ms;
    }

    /// The progress line for the totals.
    pub fn line(&self, elapsed: Duration) -> String {
        let rate = if self.compute_ms == 0 {
            0.0
        } else {
            self.units as f64 / self.compute_ms as f64 * 1000.0
        };
        format!(
            "totals: {} chunks, {} units, {:.1} s of compute in {:.0} s ({:.3e} units/s per worker)",
            self.chunks,
            self.units,
            self.compute_ms as f64 / 1000.0,
            elapsed.as_secs_f64(),
            rate
        )
    }
}

/// The progress line for one answered lease.
pub fn chunk_line(lease_id: u64, work: &Work, result: &WorkResult, compute_ms: u64) -> String {
    let answer = match result {
        WorkResult::PrimeCount { count } => format!(" = {count}"),
        WorkResult::Mandelbrot { .. } => String::new(),
        WorkResult::Sha256Search { nonces } => format!(" found {nonces:?}"),
        WorkResult::Workload {
            outputs, failed, ..
        } => {
            format!(
                " → outputs {}… ({failed} failed)",
                outputs.get(..12).unwrap_or(outputs)
            )
        }
    };
    format!(
        "chunk done: lease {lease_id}, {}{answer}, {compute_ms} ms",
        client::work::describe(work)
    )
}

/// The agent's socket: TLS (or not) over a TCP stream whose calls signals cannot cut short.
type Socket = WebSocket<MaybeTlsStream<Restarting<TcpStream>>>;

/// The TLS client settings for `wss://`: the Mozilla root certificates (webpki-roots) and
/// those of `ca_file`, with rustls on ring.
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path)
            .with_context(|| format!("reading {}", path.display()))?
        {
            let cert = cert.with_context(|| format!("a certificate in {}", path.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("a certificate in {}", path.display()))?;
            added += 1;
        }
        if added == 0 {
            bail!("{} holds no PEM certificate", path.display());
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Why a connection attempt failed.
#[derive(Debug)]
enum ConnectError {
    /// The coordinator answered the upgrade with an error (e.g. `404 swarm_not_found`).
    Refused(HttpError),
    Other(anyhow::Error),
}

fn connect(
    url: &str,
    tls: &Arc<rustls::ClientConfig>,
) -> std::result::Result<Socket, ConnectError> {
    let other = |err: anyhow::Error| ConnectError::Other(err);
    let request = url
        .into_client_request()
        .map_err(|e| other(anyhow!(e).context("bad WebSocket URL")))?;
    let uri = request.uri();
    let default_port = match uri.scheme_str() {
        Some("ws") => 80,
        Some("wss") => 443,
        _ => return Err(other(anyhow!("not a ws:// or wss:// URL: {url}"))),
    };
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    let port = uri.port_u16().unwrap_or(default_port);
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| other(anyhow!(e).context(format!("resolving {host}"))))?;
    let mut last = anyhow!("{host} has no address");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(err) => last = anyhow!(err).context(format!("connecting to {addr}")),
        }
    }
    let stream = stream.ok_or_else(|| other(last))?;
    let setup = |s: &TcpStream| -> std::io::Result<()> {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(CONNECT_TIMEOUT))?;
        s.set_write_timeout(Some(CONNECT_TIMEOUT))
    };
    setup(&stream).map_err(|e| other(e.into()))?;
    let ws = upgrade(request, stream, tls)?;
    let tcp = match ws.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp.get_ref(),
        MaybeTlsStream::Rustls(tls) => tls.get_ref().get_ref(),
        _ => return Err(other(anyhow!("unexpected stream type"))),
    };
    tcp.set_read_timeout(Some(POLL))
        .map_err(|e| other(e.into()))?;
    Ok(ws)
}

/// The WebSocket upgrade over a connected `stream`, with TLS for `wss://` (tungstenite picks by
/// the scheme). The stream is made [`Restarting`] first, so that a stop and continue during
/// the upgrade does not fail it.
fn upgrade<S: Read + Write>(
    request: Request,
    stream: S,
    tls: &Arc<rustls::ClientConfig>,
) -> std::result::Result<WebSocket<MaybeTlsStream<Restarting<S>>>, ConnectError> {
    let other = |err: anyhow::Error| ConnectError::Other(err);
    let connector = Connector::Rustls(Arc::clone(tls));
    let stream = Restarting::new(stream);
    match tungstenite::client_tls_with_config(request, stream, None, Some(connector)) {
        Ok((ws, _)) => Ok(ws),
        Err(HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            let status = response.status();
            let body = response.body().as_deref().unwrap_or_default();
            match serde_json::from_slice::<HttpError>(body) {
                Ok(error) => Err(ConnectError::Refused(error)),
                Err(_) => Err(other(anyhow!("the upgrade was answered with {status}"))),
            }
        }
        Err(HandshakeError::Failure(err)) => Err(other(anyhow!(err).context("WebSocket upgrade"))),
        // tungstenite's name for `WouldBlock`: here the read timeout of `CONNECT_TIMEOUT`.
        Err(HandshakeError::Interrupted(_)) => Err(other(anyhow!("the upgrade timed out"))),
    }
}

fn send<S: Read + Write>(ws: &mut WebSocket<S>, message: &ToCoordinator) -> Result<()> {
    let mut sent = ws.send(Message::text(encode(message)));
    // After an IO error the frame waits in tungstenite's buffer; when a signal cut the write
    // short, flushing sends the rest. (A [`Restarting`] stream never reports one; this keeps the
    // loop right over any stream.) A write timeout is a lost connection: the coordinator took
    // nothing for `CONNECT_TIMEOUT`.
    while matches!(&sent, Err(err) if ws_verdict(err) == Verdict::Again) {
        sent = ws.flush();
    }
    sent.context("sending to the coordinator")
}

/// The agent's life: connect, compute, reconnect with the link's backoff; returns only when
/// the coordinator refused the identity for good.
pub fn run(config: Config) -> Result<Refusal> {
    let mut link = Link::new(config.identity.clone());
    let tls = tls_config(config.ca_file.as_deref())?;
    let mut agent = Agent::new(config, Arc::clone(&tls));
    loop {
        match connect(&agent.config.ws_url, &tls) {
            Ok(mut ws) => {
                println!("connected to {}", agent.config.ws_url);
                match agent.session(&mut ws, &mut link) {
                    Ok(why) => println!("disconnected: {why}"),
                    Err(err) => println!("disconnected: {err:#}"),
                }
            }
            Err(ConnectError::Refused(error)) => {
                println!(
                    "the coordinator refused the connection: {:?}: {}",
                    error.code, error.message
                );
                // The link decides whether this refusal is final, as for one in the session.
                link.on_message(
                    now_ms(),
                    ToDevice::Error {
                        code: error.code,
                        message: error.message,
                        request: None,
                        retry_after_ms: error.retry_after_ms,
                    },
                );
            }
            Err(ConnectError::Other(err)) => println!("could not connect: {err:#}"),
        }
        let dropped = agent.pool.reset();
        if dropped > 0 {
            println!(
                "forgot {dropped} leases of the lost connection (the coordinator re-queues them)"
            );
        }
        match link.on_close(now_ms(), jitter()) {
            Some(delay) => {
                println!("reconnecting in {:.1} s", delay as f64 / 1000.0);
                agent.idle(Duration::from_millis(delay));
            }
            None => {
                return match link.state() {
                    LinkState::Refused { code, message } => Ok(Refusal {
                        code: *code,
                        message: message.clone(),
                    }),
                    other => bail!("the link stopped in state {other:?}"),
                };
            }
        }
    }
}

struct Agent {
    config: Config,
    pool: Pool,
    done: mpsc::Receiver<Done>,
    totals: Totals,
    started: Instant,
    totals_at: Instant,
    /// The known-answer benchmark lease of this connection, until it is answered.
    bench_lease: Option<u64>,
    /// This device's id, once welcomed (workload leases present it with their tickets).
    device_id: String,
    workloads: Arc<Workloads>,
}

impl Agent {
    /// Starts the worker threads.
    fn new(config: Config, tls: Arc<rustls::ClientConfig>) -> Self {
        let (done_tx, done_rx) = mpsc::channel();
        let workloads = Arc::new(Workloads::new(crate::target::api_of(&config.ws_url), tls));
        let pool = Pool::start(config.workers, done_tx, Arc::clone(&workloads));
        Self {
            config,
            pool,
            done: done_rx,
            totals: Totals::default(),
            started: Instant::now(),
            totals_at: Instant::now() + TOTALS_EVERY,
            bench_lease: None,
            device_id: String::new(),
            workloads,
        }
    }

    /// Waits out a reconnect delay, discarding results of the forgotten connection.
    fn idle(&mut self, delay: Duration) {
        let until = Instant::now() + delay;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            let _ = self.done.recv_timeout(left);
        }
    }

    /// One connection, from hello to close. Returns how it ended.
    fn session<S: Read + Write>(
        &mut self,
        ws: &mut WebSocket<S>,
        link: &mut Link,
    ) -> Result<String> {
        send(ws, &link.on_open())?;
        loop {
            match ws.read() {
                Ok(Message::Text(text)) => match serde_json::from_str::<ToDevice>(&text) {
                    Ok(message) => self.on_message(link, message)?,
                    Err(err) => println!("ignoring an unreadable message ({err}): {text}"),
                },
                Ok(Message::Close(frame)) => {
                    return Ok(match frame {
                        Some(f) => format!("closed by the coordinator ({} {})", f.code, f.reason),
                        None => "closed by the coordinator".into(),
                    })
                }
                Ok(_) => {}
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Ok("connection closed".into())
                }
                // Nothing arrived within `POLL`, or a signal cut the read short: tungstenite
                // keeps a partly read frame, so the next read goes on where this one stopped.
                Err(err) => match ws_verdict(&err) {
                    Verdict::TimedOut | Verdict::Again => {}
                    Verdict::Lost => {
                        return Err(anyhow!(err).context("reading from the coordinator"))
                    }
                },
            }
            // Every result ready now goes at once, in as few frames as hold them.
            let mut ready = Vec::new();
            while let Ok(done) = self.done.try_recv() {
                ready.extend(self.on_done(done));
            }
            for frame in link.chunk_results(now_ms(), ready) {
                send(ws, &frame)?;
            }
            // Results the coordinator has not acknowledged: all of them after a welcome, and
            // any left unacknowledged for a minute (it lost them in a restart).
            let resends = link.poll_resends(now_ms());
            if !resends.is_empty() {
                println!(
                    "sending unacknowledged results again ({} frame(s))",
                    resends.len()
                );
            }
            for message in &resends {
                send(ws, message)?;
            }
            if let Some(heartbeat) = link.poll_heartbeat(now_ms()) {
                send(ws, &heartbeat)?;
            }
            if Instant::now() >= self.totals_at {
                self.totals_at = Instant::now() + TOTALS_EVERY;
                let (waiting, running) = self.pool.load();
                println!(
                    "{}; {running} running, {waiting} waiting",
                    self.totals.line(self.started.elapsed())
                );
            }
        }
    }

    fn on_message(&mut self, link: &mut Link, message: ToDevice) -> Result<()> {
        if let ToClient::Error { code, message, .. } = &message {
            println!("coordinator error {code:?}: {message}");
        }
        for event in link.on_message(now_ms(), message) {
            self.on_event(link, event)?;
        }
        Ok(())
    }

    fn on_event(&mut self, link: &mut Link, event: LinkEvent) -> Result<()> {
        match event {
            LinkEvent::Welcomed {
                swarm_name,
                device_id,
                new_credential,
                ..
            } => {
                let id = device_id.unwrap_or_default();
                self.device_id.clone_from(&id);
                match new_credential {
                    Some(credential) => {
                        state::save(&self.config.state_path, &self.config.swarm_id, &credential)?;
                        println!(
                            "welcomed to swarm '{swarm_name}' as new device {id} with {} workers; credential saved to {}",
                            self.config.workers,
                            self.config.state_path.display()
                        );
                    }
                    None => println!(
                        "welcomed back to swarm '{swarm_name}' as device {id} with {} workers (resumed)",
                        self.config.workers
                    ),
                }
            }
            LinkEvent::Lease {
                lease_id,
                job_id,
                work,
            } => {
                if job_id == client::work::BENCH_JOB_ID {
                    self.bench_lease = Some(lease_id);
                    println!("benchmark lease {lease_id} received");
                } else {
                    let what = client::work::describe(&work);
                    println!("lease {lease_id} received: {what}");
                }
                let bench = job_id == client::work::BENCH_JOB_ID;
                if let (Work::Workload { .. }, Some(ticket)) = (&work, link.ticket(lease_id)) {
                    let pass = Pass {
                        device_id: self.device_id.clone(),
                        ticket: ticket.to_owned(),
                    };
                    self.workloads.admit(lease_id, pass);
                }
                self.pool.push(lease_id, work, bench);
            }
            LinkEvent::CancelLease { lease_id } => match self.pool.cancel(lease_id) {
                Cancelled::Queued => println!("lease {lease_id} cancelled before it started"),
                Cancelled::Running => {
                    println!(
                        "lease {lease_id} cancelled while running; its result will be dropped"
                    );
                }
                Cancelled::Unknown => {}
            },
            LinkEvent::Share(share) => {
                println!("computing with {}", client::format::share(&share));
                self.pool
                    .set_share(usize::from(share.workers), share.duty_percent);
            }
            LinkEvent::Refused => println!("the coordinator refused this device"),
            LinkEvent::Snapshot(_)
            | LinkEvent::SnapshotDelta(_)
            | LinkEvent::Ack { .. }
            | LinkEvent::Error { .. }
            | LinkEvent::Computed { .. }
            | LinkEvent::Failed { .. }
            | LinkEvent::Nothing => {}
        }
        Ok(())
    }

    /// A worker finished a lease: the result to send, if it is still wanted.
    fn on_done(&mut self, done: Done) -> Option<(u64, WorkResult, u64)> {
        if !self.pool.finish(done.epoch, done.lease_id) {
            return None;
        }
        let Some(result) = done.result else {
            println!(
                "lease {} could not be computed ({:?}); leaving it to expire",
                done.lease_id, done.work
            );
            return None;
        };
        if self.bench_lease == Some(done.lease_id) {
            self.bench_lease = None;
            let score =
                kernels::bench::speed_factor(client::work::units(&done.work), done.compute_ms);
            println!(
                "benchmark done: {score:.2}× a reference core per worker ({} ms)",
                done.compute_ms
            );
        } else {
            self.totals.add(&done.work, done.compute_ms);
            println!(
                "{}",
                chunk_line(done.lease_id, &done.work, &result, done.compute_ms)
            );
        }
        Some((done.lease_id, result, done.compute_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::io::{self, Cursor};
    use tungstenite::protocol::Role;

    #[test]
    fn jitter_is_a_fraction() {
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }

    #[test]
    fn totals_add_up_and_read_well() {
        let mut totals = Totals::default();
        let work = Work::PrimeCount { lo: 0, hi: 100 };
        let result = WorkResult::PrimeCount { count: 25 };
        totals.add(&work, 2);
        totals.add(&Work::PrimeCount { lo: 100, hi: 200 }, 3);
        assert_eq!(
            totals,
            Totals {
                chunks: 2,
                units: 200,
                compute_ms: 5
            }
        );
        assert!(totals
            .line(Duration::from_secs(3))
            .starts_with("totals: 2 chunks, 200 units"));
        assert_eq!(
            chunk_line(7, &work, &result, 12),
            "chunk done: lease 7, primes in [0, 100) = 25, 12 ms"
        );
    }

    #[test]
    fn the_link_clock_counts_milliseconds_and_never_goes_back() {
        let before = now_ms();
        std::thread::sleep(Duration::from_millis(5));
        assert!(now_ms() >= before + 5);
    }

    /// What the coordinator's end of a [`FakeCoordinator`] gives the agent's next read.
    enum Step {
        /// A signal cuts the read short (`EINTR`, as after a stop and continue).
        Interrupt,
        /// The read timeout passes.
        Timeout,
        /// The answer to the upgrade request written so far.
        Upgrade,
        /// These bytes.
        Bytes(Vec<u8>),
        /// A close frame, once the agent has sent this many text messages (read timeouts until
        /// then).
        CloseAfter(usize),
    }

    /// A connection with a scripted coordinator at the other end. With `interrupt_writes`,
    /// a signal cuts every write and flush short once before it goes through.
    struct FakeCoordinator {
        steps: VecDeque<Step>,
        interrupt_writes: bool,
        write_interrupted: bool,
        flush_interrupted: bool,
        written: Vec<u8>,
        /// Where the agent's frames start in `written`, after its upgrade request.
        frames_from: usize,
        deadline: Instant,
    }

    impl FakeCoordinator {
        fn new(steps: impl IntoIterator<Item = Step>) -> Self {
            Self {
                steps: steps.into_iter().collect(),
                interrupt_writes: true,
                write_interrupted: false,
                flush_interrupted: false,
                written: Vec::new(),
                frames_from: 0,
                deadline: Instant::now() + Duration::from_secs(60),
            }
        }

        /// The messages the agent sent, in order.
        fn sent(&self) -> Vec<ToCoordinator> {
            let wire = Cursor::new(self.written[self.frames_from..].to_vec());
            let mut ws = WebSocket::from_raw_socket(wire, Role::Server, None);
            let mut sent = Vec::new();
            while let Ok(message) = ws.read() {
                if let Message::Text(text) = message {
                    sent.push(serde_json::from_str(&text).unwrap());
                }
            }
            sent
        }

        fn upgrade_response(&self) -> Vec<u8> {
            let request = String::from_utf8_lossy(&self.written);
            let key = request
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("sec-websocket-key")
                        .then(|| value.trim().to_owned())
                })
                .expect("the upgrade request has a key");
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Accept: {}\r\n\r\n",
                tungstenite::handshake::derive_accept_key(key.as_bytes())
            )
            .into_bytes()
        }
    }

    /// An unmasked frame (as a server sends) with this opcode.
    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        match u8::try_from(payload.len()) {
            Ok(len) if len < 126 => out.push(len),
            _ => {
                out.push(126);
                out.extend(u16::try_from(payload.len()).unwrap().to_be_bytes());
            }
        }
        out.extend(payload);
        out
    }

    fn text_frame(text: &str) -> Vec<u8> {
        frame(0x1, text.as_bytes())
    }

    impl io::Read for FakeCoordinator {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            assert!(Instant::now() < self.deadline, "the agent never got there");
            let bytes = match self.steps.pop_front() {
                None => return Ok(0),
                Some(Step::Interrupt) => return Err(io::ErrorKind::Interrupted.into()),
                Some(Step::Timeout) => return Err(io::ErrorKind::WouldBlock.into()),
                Some(Step::Upgrade) => {
                    self.frames_from = self.written.len();
                    self.upgrade_response()
                }
                Some(Step::Bytes(bytes)) => bytes,
                Some(Step::CloseAfter(n)) => {
                    if self.sent().len() < n {
                        self.steps.push_front(Step::CloseAfter(n));
                        std::thread::sleep(Duration::from_millis(1));
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                    frame(0x8, &1000u16.to_be_bytes())
                }
            };
            let n = bytes.len().min(buf.len());
            buf[..n].copy_from_slice(&bytes[..n]);
            if n < bytes.len() {
                self.steps.push_front(Step::Bytes(bytes[n..].to_vec()));
            }
            Ok(n)
        }
    }

    impl io::Write for FakeCoordinator {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_interrupted = self.interrupt_writes && !self.write_interrupted;
            if self.write_interrupted {
                return Err(io::ErrorKind::Interrupted.into());
            }
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            self.flush_interrupted = self.interrupt_writes && !self.flush_interrupted;
            if self.flush_interrupted {
                return Err(io::ErrorKind::Interrupted.into());
            }
            Ok(())
        }
    }

    fn test_agent() -> (Agent, Link) {
        let identity = Identity::Device {
            name: "test".into(),
            capabilities: shared_protocol::Capabilities {
                cores: 1,
                memory_mb: None,
                gpu: false,
                agent: shared_protocol::AgentClass::Native,
                workloads: false,
            },
            credential: None,
            invite: None,
        };
        let agent = Agent::new(
            Config {
                ws_url: "ws://127.0.0.1:8787/s/test/ws".into(),
                swarm_id: "test".into(),
                state_path: std::env::temp_dir().join("ostrich-agent-never-written.json"),
                workers: 1,
                identity: identity.clone(),
                ca_file: None,
            },
            tls_config(None).unwrap(),
        );
        (agent, Link::new(identity))
    }

    #[test]
    fn signals_during_a_session_keep_the_connection_and_its_leases() {
        let lease: ToClient = ToClient::Lease {
            lease_id: 7,
            job_id: "job".into(),
            work: Work::PrimeCount { lo: 0, hi: 100 },
            deadline_ms: 60_000,
            ticket: None,
        };
        let coordinator = FakeCoordinator::new([
            Step::Interrupt,
            Step::Bytes(text_frame(&encode(&lease))),
            Step::Interrupt,
            Step::Timeout,
            Step::Interrupt,
            // The hello, then the lease's result.
            Step::CloseAfter(2),
        ]);
        // The bare stream, not a `Restarting` one: the loop itself must not take a signal for
        // a lost connection.
        let mut ws = WebSocket::from_raw_socket(coordinator, Role::Client, None);
        let (mut agent, mut link) = test_agent();
        let ended = agent
            .session(&mut ws, &mut link)
            .expect("the session outlives the signals");
        assert!(ended.starts_with("closed by the coordinator"), "{ended}");
        let sent = ws.get_ref().sent();
        assert!(matches!(sent[0], ToCoordinator::Hello(_)), "{sent:?}");
        assert!(
            matches!(
                sent[1],
                ToCoordinator::ChunkResult {
                    lease_id: 7,
                    result: WorkResult::PrimeCount { count: 25 },
                    ..
                }
            ),
            "{sent:?}"
        );
        assert_eq!(agent.totals.chunks, 1);
    }

    #[test]
    fn a_lost_connection_is_still_lost() {
        let coordinator = FakeCoordinator::new([Step::Interrupt, Step::Timeout]);
        let mut ws = WebSocket::from_raw_socket(coordinator, Role::Client, None);
        let (mut agent, mut link) = test_agent();
        // The script runs out: the peer closed the TCP stream without a close frame.
        let err = agent.session(&mut ws, &mut link).unwrap_err();
        assert!(
            format!("{err:#}").contains("reading from the coordinator"),
            "{err:#}"
        );
    }

    #[test]
    fn signals_during_the_upgrade_neither_fail_it_nor_reach_the_socket_loop() {
        let coordinator = FakeCoordinator::new([
            Step::Interrupt,
            Step::Upgrade,
            Step::Interrupt,
            Step::Bytes(text_frame("after a stop")),
        ]);
        let request = "ws://127.0.0.1:8787/s/test/ws"
            .into_client_request()
            .unwrap();
        let tls = tls_config(None).unwrap();
        let mut ws = upgrade(request, coordinator, &tls).expect("the upgrade succeeds");
        // Under the socket, signals are made good before tungstenite sees them.
        assert_eq!(ws.read().unwrap(), Message::text("after a stop"));
        ws.send(Message::text(encode(&ToCoordinator::Heartbeat {
            seen: None,
        })))
        .unwrap();
        let MaybeTlsStream::Plain(stream) = ws.get_ref() else {
            panic!("ws:// is plain")
        };
        assert_eq!(
            stream.get_ref().sent(),
            [ToCoordinator::Heartbeat { seen: None }]
        );
    }
}
