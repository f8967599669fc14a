//! atod's control service, beside burn's global orchestrator (`atod orchestrator --port P` serves it on P + 1):
//! JSON lines over TCP.
//!
//! A node sends `{"type":"join","node":I,"nodes":N,"config_hash":H}`. The service refuses it (`refused`, with
//! the reason, then closes) when N differs from the run's, H from the run's (the first node's), I is out of
//! range or already taken, or the run has started; otherwise it answers `joined`, and `ready` to every node once
//! N have joined. A node that finishes sends `done`; a node whose connection closes before that is gone, and the
//! service tells every other node at once (`{"type":"lost","node":J,...}`), which stops them with an error that
//! names it. When every node has left, the service waits for the next run.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// A message of the control protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Node → service: join the run.
    Join {
        /// The node's index.
        node: usize,
        /// Nodes the node expects.
        nodes: usize,
        /// Its config's hash.
        config_hash: String,
    },
    /// Service → node: admitted; `waiting` more nodes to come.
    Joined {
        /// Nodes still to join.
        waiting: usize,
    },
    /// Service → node: every node has joined; start.
    Ready,
    /// Service → node: not admitted.
    Refused {
        /// Why.
        reason: String,
    },
    /// Node → service: finished cleanly.
    Done,
    /// Service → node: another node is gone.
    Lost {
        /// Its index.
        node: usize,
        /// Its address as the service saw it.
        address: String,
    },
}

fn send(stream: &mut TcpStream, message: &Message) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    stream.flush()
}

/// A member of the run being formed or trained.
struct Member {
    stream: TcpStream,
    address: SocketAddr,
    done: bool,
}

#[derive(Default)]
struct Run {
    nodes: usize,
    config_hash: String,
    /// The node whose join set `nodes` and `config_hash`.
    first: usize,
    members: BTreeMap<usize, Member>,
    started: bool,
}

impl Run {
    /// Why `join` is refused, if it is.
    fn refusal(&self, node: usize, nodes: usize, hash: &str) -> Option<String> {
        if nodes == 0 || node >= nodes {
            return Some(format!("node index {node} is out of range for {nodes} nodes"));
        }
        if self.started {
            return Some(format!(
                "the run of {} nodes has started; stop every node and start them again (with --resume)",
                self.nodes
            ));
        }
        if self.members.is_empty() {
            return None;
        }
        if nodes != self.nodes {
            return Some(format!(
                "node {node} expects {nodes} nodes, but the run being formed has {} (set by node {})",
                self.nodes, self.first
            ));
        }
        if hash != self.config_hash {
            return Some(format!(
                "node {node}'s config hash {hash} differs from the run's {} (node {}'s): every node must train the \
                 same config",
                self.config_hash, self.first
            ));
        }
        if let Some(member) = self.members.get(&node) {
            return Some(format!("node {node} has already joined, from {}", member.address));
        }
        None
    }
}

/// Serves the control protocol on `listener` until the process ends, or, with `once`, until the first run's
/// nodes have all left. `log` receives one line per event.
pub fn serve(listener: TcpListener, once: bool, log: Arc<dyn Fn(&str) + Send + Sync>) -> anyhow::Result<()> {
    let run = Arc::new(Mutex::new(Run::default()));
    let (finished_tx, finished_rx) = std::sync::mpsc::channel::<()>();
    listener.set_nonblocking(true)?;
    loop {
        if once && finished_rx.try_recv().is_ok() {
            return Ok(());
        }
        let (stream, address) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(err) => return Err(err).context("accepting a node's connection"),
        };
        stream.set_nonblocking(false)?;
        let (run, log, finished) = (run.clone(), log.clone(), finished_tx.clone());
        std::thread::spawn(move || {
            if let Some(ended) = member_session(stream, address, &run, &*log) {
                if ended {
                    let _ = finished.send(());
                }
            }
        });
    }
}

/// One node's connection: its join, then its lines until it closes. Returns `Some(true)` when the run ended with
/// it (every member gone), `None` when it was refused.
fn member_session(stream: TcpStream, address: SocketAddr, run: &Mutex<Run>, log: &dyn Fn(&str)) -> Option<bool> {
    let mut writer = stream.try_clone().ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let join = match reader.read_line(&mut line) {
        Ok(n) if n > 0 => serde_json::from_str::<Message>(&line).ok(),
        _ => None,
    };
    let Some(Message::Join { node, nodes, config_hash }) = join else {
        let _ = send(&mut writer, &Message::Refused { reason: "expected a join message first".into() });
        return None;
    };
    {
        let mut state = run.lock().expect("run");
        if let Some(reason) = state.refusal(node, nodes, &config_hash) {
            log(&format!("refused node {node} from {address}: {reason}"));
            let _ = send(&mut writer, &Message::Refused { reason });
            return None;
        }
        if state.members.is_empty() {
            *state = Run { nodes, config_hash: config_hash.clone(), first: node, ..Run::default() };
        }
        let member = Member { stream: writer.try_clone().ok()?, address, done: false };
        state.members.insert(node, member);
        let waiting = state.nodes - state.members.len();
        log(&format!("node {node} joined from {address} ({waiting} more to come, config {config_hash})"));
        let _ = send(&mut writer, &Message::Joined { waiting });
        if waiting == 0 {
            state.started = true;
            log(&format!("all {} nodes joined: the run starts", state.nodes));
            for member in state.members.values_mut() {
                let _ = send(&mut member.stream, &Message::Ready);
            }
        }
    }
    let _ = reader.get_ref().set_read_timeout(None);
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(n) if n > 0 => {
                if let Ok(Message::Done) = serde_json::from_str::<Message>(&line) {
                    if let Some(member) = run.lock().expect("run").members.get_mut(&node) {
                        member.done = true;
                    }
                }
            }
            _ => break,
        }
    }
    let mut state = run.lock().expect("run");
    let done = state.members.remove(&node).is_some_and(|m| m.done);
    if done {
        log(&format!("node {node} finished"));
    } else {
        log(&format!("node {node} ({address}) is gone: its connection closed before it finished"));
        for member in state.members.values_mut() {
            let _ = send(&mut member.stream, &Message::Lost { node, address: address.to_string() });
        }
    }
    if state.members.is_empty() {
        let started = state.started;
        *state = Run::default();
        log("every node has left; waiting for the next run");
        return Some(started);
    }
    Some(false)
}

/// A node's connection to the control service.
pub struct ControlClient {
    writer: Mutex<TcpStream>,
    failure: Arc<Mutex<Option<String>>>,
    local_ip: IpAddr,
}

impl ControlClient {
    /// Joins the run at `address` (`HOST:PORT` of the control service) as node `node` of `nodes`, retrying a
    /// refused connection (the orchestrator may start after the nodes) and waiting until every node has joined,
    /// both for at most `timeout`.
    pub fn join(
        address: &str,
        node: usize,
        nodes: usize,
        config_hash: &str,
        timeout: Duration,
    ) -> anyhow::Result<ControlClient> {
        let deadline = Instant::now() + timeout;
        let mut stream = loop {
            match TcpStream::connect(address) {
                Ok(stream) => break stream,
                Err(err) if Instant::now() < deadline => {
                    if err.kind() != std::io::ErrorKind::ConnectionRefused {
                        bail!("cannot reach atod's control service at {address}: {err}");
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(err) => bail!(
                    "no orchestrator answered at {address} within {} s ({err}); start one with `atod orchestrator \
                     --port PORT` (its control service listens on PORT + 1)",
                    timeout.as_secs()
                ),
            }
        };
        let local_ip = stream.local_addr()?.ip();
        send(&mut stream, &Message::Join { node, nodes, config_hash: config_hash.to_owned() })?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut line = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("not every node joined within {} s", timeout.as_secs());
            }
            stream.set_read_timeout(Some(left))?;
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) => bail!("the orchestrator at {address} closed the connection while node {node} was joining"),
                Ok(_) => {}
                Err(err) if matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    bail!("not every node joined within {} s", timeout.as_secs())
                }
                Err(err) => return Err(err).context("reading from the orchestrator"),
            }
            match serde_json::from_str::<Message>(&line) {
                Ok(Message::Refused { reason }) => bail!("the orchestrator refused node {node}: {reason}"),
                Ok(Message::Joined { waiting }) if waiting > 0 => {
                    eprintln!("node {node} joined the run; waiting for {waiting} more node(s)");
                }
                Ok(Message::Joined { .. }) => {}
                Ok(Message::Ready) => break,
                Ok(other) => bail!("unexpected message from the orchestrator: {other:?}"),
                Err(err) => bail!("the orchestrator at {address} answered garbage ({err}): `{}`", line.trim()),
            }
        }
        stream.set_read_timeout(None)?;
        let failure = Arc::new(Mutex::new(None));
        let watched = failure.clone();
        let orchestrator = address.to_owned();
        std::thread::Builder::new().name("atod-control".into()).spawn(move || {
            let mut line = String::new();
            let verdict = loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(n) if n > 0 => {
                        if let Ok(Message::Lost { node: lost, address }) = serde_json::from_str::<Message>(&line) {
                            break format!(
                                "node {lost} ({address}) left the run without finishing: its connection to the \
                                 orchestrator closed; node {node} stops"
                            );
                        }
                    }
                    _ => break format!("the orchestrator at {orchestrator} closed its connection; node {node} stops"),
                }
            };
            *watched.lock().expect("failure") = Some(verdict);
        })?;
        Ok(ControlClient { writer: Mutex::new(stream), failure, local_ip })
    }

    /// What stopped the run, once the service has said a node is gone (or went away itself).
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().expect("failure").clone()
    }

    /// The address this node reaches the service from: the one its peers can reach it at, as a rule.
    pub fn local_ip(&self) -> IpAddr {
        self.local_ip
    }

    /// Tells the service this node finished cleanly.
    pub fn done(&self) {
        let mut writer = self.writer.lock().expect("writer");
        let _ = send(&mut writer, &Message::Done);
        // The service's verdict on a node that leaves after finishing is not a failure.
        *self.failure.lock().expect("failure") = None;
    }
}

impl Drop for ControlClient {
    /// Closes the connection for its reader thread too (a dropped clone alone would leave the socket open, and
    /// the service would never see this node leave).
    fn drop(&mut self) {
        if let Ok(writer) = self.writer.lock() {
            let _ = writer.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl std::fmt::Debug for ControlClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlClient").field("local_ip", &self.local_ip).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts a control service on a free loopback port in this process (for tests): its address.
    fn spawn_local(once: bool) -> anyhow::Result<String> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let address = listener.local_addr()?.to_string();
        std::thread::spawn(move || serve(listener, once, Arc::new(|_: &str| {})));
        Ok(address)
    }

    /// The error of a join, for tests.
    fn join_error(address: &str, node: usize, nodes: usize, hash: &str) -> String {
        match ControlClient::join(address, node, nodes, hash, Duration::from_secs(5)) {
            Ok(_) => String::new(),
            Err(err) => format!("{err:#}"),
        }
    }

    fn joined(address: &str, node: usize, nodes: usize, hash: &str) -> std::thread::JoinHandle<ControlClient> {
        let address = address.to_owned();
        let hash = hash.to_owned();
        std::thread::spawn(move || {
            ControlClient::join(&address, node, nodes, &hash, Duration::from_secs(20)).expect("admitted")
        })
    }

    #[test]
    fn nodes_with_another_config_count_or_index_are_refused_and_the_run_starts_when_all_joined() {
        let address = spawn_local(false).unwrap();
        let first = joined(&address, 0, 2, "aaaa");
        std::thread::sleep(Duration::from_millis(200));
        let err = join_error(&address, 1, 2, "bbbb");
        assert!(err.contains("config hash bbbb differs from the run's aaaa (node 0's)"), "{err}");
        let err = join_error(&address, 1, 3, "aaaa");
        assert!(err.contains("expects 3 nodes, but the run being formed has 2"), "{err}");
        let err = join_error(&address, 0, 2, "aaaa");
        assert!(err.contains("node 0 has already joined"), "{err}");
        let err = join_error(&address, 2, 2, "aaaa");
        assert!(err.contains("out of range"), "{err}");
        let second = joined(&address, 1, 2, "aaaa");
        let (a, b) = (first.join().unwrap(), second.join().unwrap());
        assert_eq!((a.failure(), b.failure()), (None, None));
        let err = join_error(&address, 1, 2, "aaaa");
        assert!(err.contains("has started"), "{err}");

        // Node 1 finishes cleanly: no failure for node 0. Then node 0 leaves too, and a new run can form.
        b.done();
        drop(b);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(a.failure(), None);
        a.done();
        drop(a);
        std::thread::sleep(Duration::from_millis(300));
        let c = joined(&address, 0, 1, "cccc").join().unwrap();
        assert_eq!(c.failure(), None);
    }

    #[test]
    fn a_node_that_disappears_is_reported_to_the_others_by_index() {
        let address = spawn_local(true).unwrap();
        let handles: Vec<_> = (0..3).map(|i| joined(&address, i, 3, "h")).collect();
        let mut clients: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let gone = clients.remove(1);
        drop(gone);
        let started = Instant::now();
        while clients.iter().any(|c| c.failure().is_none()) {
            assert!(started.elapsed() < Duration::from_secs(10), "no node was told");
            std::thread::sleep(Duration::from_millis(20));
        }
        for c in &clients {
            let failure = c.failure().unwrap();
            assert!(failure.starts_with("node 1 (127.0.0.1:") && failure.contains("left the run"), "{failure}");
        }
    }

    #[test]
    fn a_missing_orchestrator_and_garbage_are_one_line_errors() {
        let free = TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().to_string();
        let err = ControlClient::join(&free, 0, 2, "h", Duration::from_millis(500)).unwrap_err().to_string();
        assert!(err.contains("no orchestrator answered") && err.contains("atod orchestrator"), "{err}");
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let address = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").unwrap();
            std::thread::sleep(Duration::from_secs(1));
        });
        let err = ControlClient::join(&address, 0, 2, "h", Duration::from_secs(5)).unwrap_err().to_string();
        assert!(err.contains("answered garbage"), "{err}");
    }
}
