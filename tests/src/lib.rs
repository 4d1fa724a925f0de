//! Harness for tests against the real runtime: starts the coordinator in workerd through
//! `wrangler dev` on a free loopback port, and speaks the protocol over real WebSockets.
//!
//! [`Wrangler`] is also what `cargo xtask` uses to run the system, so the tests start it exactly
//! the way a person does.

pub mod agents;
pub mod cheat;
pub mod results;

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use shared_protocol::{encode, CreateSwarmResponse, SwarmSnapshot, ToClient, ToCoordinator};
use tungstenite::client::IntoClientRequest;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Timeouts short enough for tests to observe OFFLINE detection and rate-limit windows in
/// seconds (the broadcast interval stays the product's 2 s).
pub fn short_timeouts() -> Vec<(String, String)> {
    [
        ("HEARTBEAT_INTERVAL_MS", "1000"),
        ("OFFLINE_AFTER_MS", "4000"),
        ("HELLO_TIMEOUT_MS", "4000"),
        ("COMMIT_INTERVAL_MS", "2000"),
        ("RATE_WINDOW_MS", "6000"),
        ("DEFAULT_INVITE_TTL_MS", "5000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Runs one test case of a `harness = false` test binary, printing `test <name> ... ok` or
/// `... FAILED: <why>` (a panic counts as a failure). Returns whether it passed. While
/// `OSTRICH_CASE` is set (for working on one case), a case whose name does not contain it is
/// skipped, said so, and counts as not failed.
pub fn run_case(name: &str, case: impl FnOnce() -> Result<()>) -> bool {
    if std::env::var("OSTRICH_CASE").is_ok_and(|only| !name.contains(&only)) {
        println!("test {name} ... skipped (OSTRICH_CASE)");
        return true;
    }
    let started = Instant::now();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(case)) {
        Ok(Ok(())) => {
            println!("test {name} ... ok ({:.1?})", started.elapsed());
            true
        }
        Ok(Err(err)) => {
            println!("test {name} ... FAILED: {err:#}");
            false
        }
        Err(_) => {
            println!("test {name} ... FAILED (panicked)");
            false
        }
    }
}

/// How to launch `wrangler dev` for this project.
#[derive(Debug, Clone)]
pub struct WranglerCommand {
    pub port: u16,
    pub persist_dir: PathBuf,
    /// `--var NAME:VALUE` overrides (shortened timeouts in tests).
    pub vars: Vec<(String, String)>,
}

impl WranglerCommand {
    /// The command line. Runs wrangler's own entry with node, so that signals reach it, and
    /// keeps every file wrangler writes inside the project's ignored `.state/`.
    pub fn command(&self) -> Result<Command> {
        let root = repo_root();
        let entry = root.join("node_modules/wrangler/bin/wrangler.js");
        if !entry.exists() {
            bail!("wrangler is not installed: run `cargo xtask setup`");
        }
        if !root.join("coordinator/build/index.js").exists() {
            bail!("the coordinator is not built: run `cargo xtask build`");
        }
        let state = root.join(".state");
        std::fs::create_dir_all(state.join("xdg"))?;
        let mut inspector = free_port()?;
        while inspector == self.port {
            inspector = free_port()?;
        }
        let mut cmd = Command::new("node");
        cmd.current_dir(&root)
            .arg(entry)
            .args(["dev", "--local", "--ip", "127.0.0.1"])
            .args(["--port", &self.port.to_string()])
            .args(["--inspector-port", &inspector.to_string()])
            .arg("--persist-to")
            .arg(&self.persist_dir)
            .arg("--show-interactive-dev-session=false")
            .env("XDG_CONFIG_HOME", state.join("xdg"))
            .env("WRANGLER_LOG_PATH", state.join("logs"))
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env("NO_COLOR", "1");
        for (name, value) in &self.vars {
            cmd.arg("--var").arg(format!("{name}:{value}"));
        }
        Ok(cmd)
    }
}

/// A running `wrangler dev`, stopped (with its workerd children) when dropped.
pub struct Wrangler {
    child: Child,
    pub base: String,
    pub port: u16,
    output: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Wrangler {
    /// Starts wrangler on a free loopback port. A port found free can be taken by another
    /// process before workerd binds it: then it tries again on another, up to three times.
    pub fn start_anywhere(persist_dir: &Path, vars: Vec<(String, String)>) -> Result<Self> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let spec = WranglerCommand {
                port: free_port()?,
                persist_dir: persist_dir.to_owned(),
                vars: vars.clone(),
            };
            match Self::start(&spec) {
                Err(err)
                    if attempt < 3 && format!("{err:#}").contains("Address already in use") =>
                {
                    eprintln!(
                        "port {} was taken before workerd bound it; trying another",
                        spec.port
                    );
                }
                started => return started,
            }
        }
    }

    /// Starts wrangler and waits until the health endpoint answers.
    pub fn start(spec: &WranglerCommand) -> Result<Self> {
        let mut cmd = spec.command()?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        let mut child = cmd
            .spawn()
            .context("starting wrangler (is node on PATH?)")?;
        let (tx, output) = mpsc::channel();
        pipe_lines(child.stdout.take(), tx.clone());
        pipe_lines(child.stderr.take(), tx);
        let mut wrangler = Self {
            child,
            base: format!("http://127.0.0.1:{}", spec.port),
            port: spec.port,
            output,
            log: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            wrangler.collect_output();
            if let Some(status) = wrangler.child.try_wait()? {
                bail!(
                    "wrangler exited with {status}:\n{}",
                    wrangler.log.join("\n")
                );
            }
            if let Ok(resp) = http_agent()
                .get(&format!("{}/api/health", wrangler.base))
                .call()
            {
                if resp.status() == 200 {
                    return Ok(wrangler);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "wrangler did not become ready in 60 s:\n{}",
                    wrangler.log.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The wrangler process's id, which is also its process group's (workerd runs in it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything wrangler printed so far.
    pub fn log(&mut self) -> String {
        self.collect_output();
        self.log.join("\n")
    }

    fn collect_output(&mut self) {
        while let Ok(line) = self.output.try_recv() {
            self.log.push(line);
        }
    }

    /// Stops wrangler and workerd (the whole process group) and waits for them. SIGTERM
    /// first; whatever is left of the group after 10 s gets SIGKILL.
    pub fn stop(&mut self) {
        #[cfg(unix)]
        {
            // `--` keeps procps' kill from reading the negative group id as an option.
            let group = format!("-{}", self.child.id());
            let signal_group = |signal: &str| {
                Command::new("kill")
                    .args(["-s", signal, "--", &group])
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false)
            };
            signal_group("TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            // The group is gone once signalling it fails.
            while Instant::now() < deadline && signal_group("0") {
                let _ = self.child.try_wait();
                std::thread::sleep(Duration::from_millis(100));
            }
            signal_group("KILL");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills wrangler and workerd at once with SIGKILL (as a crash would), without letting
    /// them shut down.
    pub fn kill9(&mut self) {
        #[cfg(unix)]
        {
            let group = format!("-{}", self.child.id());
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &group])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The WebSocket URL of a swarm.
    pub fn ws_url(&self, swarm_id: &str) -> String {
        format!("ws://127.0.0.1:{}/api/swarms/{swarm_id}/ws", self.port)
    }

    /// Creates a swarm through the HTTP API.
    pub fn create_swarm(&self, name: &str) -> Result<CreateSwarmResponse> {
        let resp = http_agent()
            .post(&format!("{}/api/swarms", self.base))
            .send_json(serde_json::json!({ "name": name }))?;
        Ok(resp.into_json()?)
    }
}

impl Drop for Wrangler {
    fn drop(&mut self) {
        self.stop();
    }
}

fn pipe_lines(stream: Option<impl Read + Send + 'static>, tx: mpsc::Sender<String>) {
    if let Some(stream) = stream {
        std::thread::spawn(move || {
            for line in BufReader::new(stream)
                .lines()
                .map_while(std::result::Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
}

/// An HTTP agent that reports non-2xx answers as responses, not errors.
pub fn http_agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build()
}

/// A raw protocol client over a real WebSocket.
pub struct WsClient {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    /// A dashboard's snapshot: the first one with every delta since applied. Reads show a
    /// delta as the snapshot it makes (the raw deltas are counted in `deltas`).
    held: Option<SwarmSnapshot>,
    /// Deltas received, and their bytes.
    pub deltas: u64,
    pub delta_bytes: u64,
    /// Frames of several leases received (protocol 5), and the leases they held. Reads show
    /// such a frame as its leases one by one; those not read yet wait in `unread`.
    pub lease_frames: u64,
    pub framed_leases: u64,
    unread: std::collections::VecDeque<ToClient>,
}

/// What a read produced. Short-lived, one at a time: the size of a message inline does not
/// matter.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Received {
    Message(ToClient),
    Closed(Option<u16>),
}

impl WsClient {
    pub fn connect(url: &str) -> Result<Self> {
        Self::connect_with_origin(url, None)
    }

    /// Connects, optionally sending an `Origin` header as a browser would.
    pub fn connect_with_origin(url: &str, origin: Option<&str>) -> Result<Self> {
        Self::connect_with_headers(
            url,
            &origin
                .map(|o| ("origin", o))
                .into_iter()
                .collect::<Vec<_>>(),
        )
    }

    /// Connects as if from this client address (`CF-Connecting-IP`, which the platform sets
    /// in production and local `wrangler dev` passes through).
    pub fn connect_from(url: &str, address: &str) -> Result<Self> {
        Self::connect_with_headers(url, &[("cf-connecting-ip", address)])
    }

    /// Connects with extra request headers.
    pub fn connect_with_headers(url: &str, headers: &[(&'static str, &str)]) -> Result<Self> {
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            request.headers_mut().insert(*name, value.parse()?);
        }
        let (ws, _) = tungstenite::connect(request)?;
        if let MaybeTlsStream::Plain(stream) = ws.get_ref() {
            stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        }
        Ok(Self {
            ws,
            held: None,
            deltas: 0,
            delta_bytes: 0,
            lease_frames: 0,
            framed_leases: 0,
            unread: std::collections::VecDeque::new(),
        })
    }

    pub fn send(&mut self, message: &ToCoordinator) -> Result<()> {
        self.send_text(&encode(message))
    }

    pub fn send_text(&mut self, text: &str) -> Result<()> {
        self.ws.send(Message::text(text))?;
        Ok(())
    }

    pub fn send_binary(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.ws.send(Message::binary(bytes))?;
        Ok(())
    }

    /// The next message or close within `timeout`, or an error if none came.
    pub fn recv(&mut self, timeout: Duration) -> Result<Received> {
        if let Some(lease) = self.unread.pop_front() {
            return Ok(Received::Message(lease));
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    let msg: ToClient = serde_json::from_str(&text)
                        .with_context(|| format!("undecodable message from coordinator: {text}"))?;
                    let msg = match msg {
                        ToClient::Snapshot(snapshot) => {
                            self.held = Some(snapshot.clone());
                            ToClient::Snapshot(snapshot)
                        }
                        ToClient::SnapshotDelta(delta) => {
                            self.deltas += 1;
                            self.delta_bytes += text.len() as u64;
                            let held = self
                                .held
                                .as_mut()
                                .context("a snapshot delta before any snapshot")?;
                            held.apply(*delta)
                                .map_err(|gap| anyhow!("a delta out of order: {gap:?}"))?;
                            ToClient::Snapshot(held.clone())
                        }
                        ToClient::Leases { leases } => {
                            self.lease_frames += 1;
                            self.framed_leases += leases.len() as u64;
                            self.unread
                                .extend(leases.into_iter().map(|lease| lease.into_lease()));
                            match self.unread.pop_front() {
                                Some(first) => first,
                                None => continue,
                            }
                        }
                        msg => msg,
                    };
                    return Ok(Received::Message(msg));
                }
                Ok(Message::Close(frame)) => {
                    return Ok(Received::Closed(frame.map(|f| f.code.into())))
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(err))
                    if matches!(
                        err.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() > deadline {
                        bail!("nothing received within {timeout:?}");
                    }
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Ok(Received::Closed(None))
                }
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// The next protocol message, failing on a close or a timeout.
    pub fn recv_message(&mut self, timeout: Duration) -> Result<ToClient> {
        match self.recv(timeout)? {
            Received::Message(msg) => Ok(msg),
            Received::Closed(code) => Err(anyhow!(
                "socket closed ({code:?}) while waiting for a message"
            )),
        }
    }

    /// Reads until `pick` returns `Some`, skipping other messages.
    pub fn recv_until<T>(
        &mut self,
        timeout: Duration,
        mut pick: impl FnMut(&ToClient) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("the awaited message did not arrive within {timeout:?}");
            }
            let msg = self.recv_message(left)?;
            if let Some(found) = pick(&msg) {
                return Ok(found);
            }
        }
    }

    /// Reads until the coordinator closes the socket; returns the close code.
    pub fn recv_close(&mut self, timeout: Duration) -> Result<Option<u16>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("the socket was not closed within {timeout:?}");
            }
            if let Received::Closed(code) = self.recv(left)? {
                return Ok(code);
            }
        }
    }

    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }
}

/// Polls a job's endpoint on the coordinator at `base` until the job is done or `timeout`
/// passes; returns its last view.
pub fn await_job(
    base: &str,
    swarm_id: &str,
    job_id: &str,
    timeout: Duration,
) -> Result<shared_protocol::JobView> {
    let url = format!("{base}/api/swarms/{swarm_id}/jobs/{job_id}");
    let deadline = Instant::now() + timeout;
    loop {
        let job: shared_protocol::JobView = http_agent().get(&url).call()?.into_json()?;
        if job.state == shared_protocol::JobState::Done || Instant::now() > deadline {
            return Ok(job);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The body of a GET, as bytes.
pub fn get_bytes(url: &str) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    http_agent()
        .get(url)
        .call()?
        .into_reader()
        .read_to_end(&mut body)?;
    Ok(body)
}

/// A TLS front on a free loopback port that forwards every connection to `127.0.0.1:target`,
/// with a certificate for `localhost` and `127.0.0.1` from a throwaway certificate authority
/// (its PEM in [`TlsFront::ca_pem`]). It lives as long as the test process.
pub struct TlsFront {
    pub port: u16,
    pub ca_pem: String,
}

impl TlsFront {
    pub fn start(target: u16) -> Result<Self> {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate()?;
        let ca = ca_params.self_signed(&ca_key)?;
        let leaf_key = KeyPair::generate()?;
        let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?
            .signed_by(&leaf_key, &ca, &ca_key)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)?;
        let config = std::sync::Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let config = std::sync::Arc::clone(&config);
                std::thread::spawn(move || {
                    let _ = forward(client, target, config);
                });
            }
        });
        Ok(Self {
            port,
            ca_pem: ca.pem(),
        })
    }
}

/// Decrypts one client connection and relays it both ways to `127.0.0.1:target`, polling both
/// sides with short read timeouts, until either side closes.
fn forward(
    client: TcpStream,
    target: u16,
    config: std::sync::Arc<rustls::ServerConfig>,
) -> Result<()> {
    use std::io::{ErrorKind, Write};
    let upstream = TcpStream::connect(("127.0.0.1", target))?;
    for socket in [&client, &upstream] {
        socket.set_read_timeout(Some(Duration::from_millis(5)))?;
        socket.set_nodelay(true)?;
    }
    let mut tls = rustls::StreamOwned::new(rustls::ServerConnection::new(config)?, client);
    let mut upstream = upstream;
    let mut buf = vec![0u8; 64 * 1024];
    let quiet =
        |err: &std::io::Error| matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
    loop {
        match tls.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => upstream.write_all(&buf[..n])?,
            Err(err) if quiet(&err) => {}
            Err(err) => return Err(err.into()),
        }
        match upstream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                tls.write_all(&buf[..n])?;
                tls.flush()?;
            }
            Err(err) if quiet(&err) => {}
            Err(err) => return Err(err.into()),
        }
    }
}

/// A plain TCP forwarder on a free loopback port to `127.0.0.1:target` that cuts the first
/// `cuts` connections whose answers run past `after` bytes: it forwards that many bytes from
/// the server and then closes both sides, as a connection lost in the middle of an answer.
/// It lives as long as the test process.
pub struct CuttingProxy {
    pub port: u16,
    /// Connections cut so far.
    cut: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl CuttingProxy {
    pub fn start(target: u16, after: usize, cuts: u32) -> Result<Self> {
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let cut = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&cut);
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(std::result::Result::ok) {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || {
                    let (Ok(mut from_client), Ok(mut to_server)) =
                        (client.try_clone(), server.try_clone())
                    else {
                        return;
                    };
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from_client, &mut to_server);
                        let _ = to_server.shutdown(std::net::Shutdown::Write);
                    });
                    let (mut from_server, mut to_client) = (server, client);
                    let mut sent = 0usize;
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match from_server.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let cut_here = sent + n > after
                            && counter
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |done| {
                                    (done < cuts).then_some(done + 1)
                                })
                                .is_ok();
                        if cut_here {
                            let _ = std::io::Write::write_all(
                                &mut to_client,
                                &buf[..after.saturating_sub(sent)],
                            );
                            break;
                        }
                        if std::io::Write::write_all(&mut to_client, &buf[..n]).is_err() {
                            break;
                        }
                        sent += n;
                    }
                    let _ = to_client.shutdown(std::net::Shutdown::Both);
                    let _ = from_server.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Ok(Self { port, cut })
    }

    /// Connections cut so far.
    pub fn cut(&self) -> u32 {
        self.cut.load(std::sync::atomic::Ordering::SeqCst)
    }
}
