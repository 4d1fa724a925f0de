//! The socket side of the agent: connects, lets the client's [`Link`] say hello, heartbeat
//! and pace reconnects, feeds leases to the [`Pool`] and sends its results back.
//!
//! One thread owns the socket. Its read has a short timeout, so heartbeats and finished
//! results go out on time however long the workers compute.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use client::link::{Identity, Link, LinkEvent, LinkState};
use shared_protocol::{encode, ErrorCode, HttpError, ToClient, ToCoordinator, Work, WorkResult};
use tungstenite::client::IntoClientRequest;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Connector, HandshakeError, Message, WebSocket};

use crate::state;
use crate::work::{Cancelled, Done, Pool};

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

/// Milliseconds since the Unix epoch, the clock the [`Link`] runs on.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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
    };
    format!(
        "chunk done: lease {lease_id}, {}{answer}, {compute_ms} ms",
        client::work::describe(work)
    )
}

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

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
    // Plain for ws://, TLS for wss:// (tungstenite picks by the scheme).
    let connector = Connector::Rustls(Arc::clone(tls));
    match tungstenite::client_tls_with_config(request, stream, None, Some(connector)) {
        Ok((ws, _)) => {
            let tcp = match ws.get_ref() {
                MaybeTlsStream::Plain(tcp) => tcp,
                MaybeTlsStream::Rustls(tls) => tls.get_ref(),
                _ => return Err(other(anyhow!("unexpected stream type"))),
            };
            tcp.set_read_timeout(Some(POLL))
                .map_err(|e| other(e.into()))?;
            Ok(ws)
        }
        Err(HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            let status = response.status();
            let body = response.body().as_deref().unwrap_or_default();
            match serde_json::from_slice::<HttpError>(body) {
                Ok(error) => Err(ConnectError::Refused(error)),
                Err(_) => Err(other(anyhow!("the upgrade was answered with {status}"))),
            }
        }
        Err(HandshakeError::Failure(err)) => Err(other(anyhow!(err).context("WebSocket upgrade"))),
        Err(HandshakeError::Interrupted(_)) => Err(other(anyhow!("the upgrade timed out"))),
    }
}

fn send(ws: &mut Socket, message: &ToCoordinator) -> Result<()> {
    ws.send(Message::text(encode(message)))
        .context("sending to the coordinator")
}

/// The agent's life: connect, compute, reconnect with the link's backoff; returns only when
/// the coordinator refused the identity for good.
pub fn run(config: Config) -> Result<Refusal> {
    let (done_tx, done_rx) = mpsc::channel();
    let pool = Pool::start(config.workers, done_tx);
    let mut link = Link::new(config.identity.clone());
    let mut agent = Agent {
        config,
        pool,
        done: done_rx,
        totals: Totals::default(),
        started: Instant::now(),
        totals_at: Instant::now() + TOTALS_EVERY,
        bench_lease: None,
    };
    let tls = tls_config(agent.config.ca_file.as_deref())?;
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
                    ToClient::Error {
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
}

impl Agent {
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
    fn session(&mut self, ws: &mut Socket, link: &mut Link) -> Result<String> {
        send(ws, &link.on_open())?;
        loop {
            match ws.read() {
                Ok(Message::Text(text)) => match serde_json::from_str::<ToClient>(&text) {
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
                Err(tungstenite::Error::Io(err))
                    if matches!(
                        err.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Ok("connection closed".into())
                }
                Err(err) => return Err(anyhow!(err).context("reading from the coordinator")),
            }
            while let Ok(done) = self.done.try_recv() {
                self.on_done(ws, link, done)?;
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

    fn on_message(&mut self, link: &mut Link, message: ToClient) -> Result<()> {
        if let ToClient::Error { code, message, .. } = &message {
            println!("coordinator error {code:?}: {message}");
        }
        match link.on_message(now_ms(), message) {
            LinkEvent::Welcomed {
                swarm_name,
                device_id,
                new_credential,
                ..
            } => {
                let id = device_id.unwrap_or_default();
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
                self.pool.push(lease_id, work);
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
            LinkEvent::Refused => println!("the coordinator refused this device"),
            LinkEvent::Snapshot(_)
            | LinkEvent::Ack { .. }
            | LinkEvent::Error { .. }
            | LinkEvent::Computed { .. }
            | LinkEvent::Nothing => {}
        }
        Ok(())
    }

    fn on_done(&mut self, ws: &mut Socket, link: &Link, done: Done) -> Result<()> {
        if !self.pool.finish(done.epoch, done.lease_id) {
            return Ok(());
        }
        let Some(result) = done.result else {
            println!(
                "lease {} could not be computed ({:?}); leaving it to expire",
                done.lease_id, done.work
            );
            return Ok(());
        };
        send(
            ws,
            &link.chunk_result(done.lease_id, result.clone(), done.compute_ms),
        )?;
        if self.bench_lease == Some(done.lease_id) {
            self.bench_lease = None;
            let score =
                kernels::bench::speed_factor(client::work::units(&done.work), done.compute_ms);
            println!(
                "benchmark done: {score:.2}× a reference core per worker ({} ms)",
                done.compute_ms
            );
            return Ok(());
        }
        self.totals.add(&done.work, done.compute_ms);
        println!(
            "{}",
            chunk_line(done.lease_id, &done.work, &result, done.compute_ms)
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_clock_is_in_epoch_milliseconds() {
        assert!(now_ms() > 1_700_000_000_000);
    }
}
