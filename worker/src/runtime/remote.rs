//! Containers in separate processes (as in P worker pods): the coordinator's process accepts
//! connections from the other containers and exchanges [`Command`]s and [`Event`]s with them as
//! JSON lines over TCP.
//!
//! A container that loses its process (killed, OOM, node gone) restarts, restores only its own
//! tasks from the last committed checkpoint and reconnects; the other containers keep running.
//! That is consistent because tasks never exchange records: each task's state and input offset
//! form a consistent pair on their own. A container that loses the coordinator exits (its
//! process restarts and reconnects to the new coordinator).
//!
//! The coordinator's port faces whatever can reach the pod, so it admits only what it must: a
//! connection has [`HELLO_TIMEOUT`] to introduce itself in one line of at most [`HELLO_MAX`]
//! bytes carrying the job's token (compared in constant time), at most
//! [`MAX_PENDING_HELLOS`] connections may be waiting to do so, every later line is at most
//! [`LINE_MAX`] bytes, and a container may speak only for its own tasks: anything else closes
//! its connection (its tasks restart from the last committed checkpoint).
//!
//! Warm standbys (`standby: true`, docs/recovery.md#warm-standbys): a process for container K
//! that finds K connected is admitted as K's standby, one per container. It hears of every
//! commit (`Follow`) and may say only that it holds a checkpoint (`Following`). When K's
//! connection ends, the standby's connection becomes K's at once, before anything else can
//! claim the slot, and the coordinator is told that K left and joined again: it sends the
//! standby `Restore` as to any container that joins. The old process cannot take part any more
//! (its connection is gone, and only the current connection of K is heard), so it can never
//! acknowledge a checkpoint the coordinator commits; its restarted process finds K taken and
//! stands by in turn.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::sync::Semaphore;

use super::failure::TaskFailure;
use super::messages::{Command, Event};

/// How long a new connection has to send its hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest hello line: a job name, a spec hash and a token fit many times over.
pub const HELLO_MAX: usize = 64 * 1024;
/// Longest line after the hello (an event or a command): an `Ack` or an error message.
pub const LINE_MAX: usize = 1024 * 1024;
/// How long a peer may be unreachable before its connection fails: TCP keepalive probes (the
/// link is idle) and the TCP user timeout (data unacknowledged) both give up after about this.
/// A process that dies closes its connections at once; this is for a node that vanishes or a
/// network that splits, which close nothing: without it the coordinator would wait for the
/// kernel's default of hours before a standby could take over.
pub const PEER_DEAD_AFTER: Duration = Duration::from_secs(6);

/// Sets [`PEER_DEAD_AFTER`] on a connection between the job's processes (best effort: a
/// platform without the options keeps the kernel's defaults).
fn watch_peer(stream: &TcpStream) {
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(2))
        .with_interval(Duration::from_secs(1))
        .with_retries(4);
    let set = socket
        .set_tcp_keepalive(&keepalive)
        .and_then(|()| socket.set_tcp_user_timeout(Some(PEER_DEAD_AFTER)));
    if let Err(e) = set {
        tracing::debug!(error = %e, "cannot shorten the dead-peer timeout of a job connection");
    }
}

/// Longest host name a process may introduce itself with (a DNS name's limit).
pub const HOST_MAX: usize = 253;
/// Connections that may be waiting to send their hello at once; more are refused at once.
/// Connected containers do not count (there are at most P - 1 of them).
pub const MAX_PENDING_HELLOS: usize = 16;

/// The coordinator's handle on one container.
#[derive(Clone)]
pub enum ContainerLink {
    /// A container thread in this process.
    Local(std::sync::mpsc::Sender<Command>),
    /// A container in another process, and its warm standby.
    Remote(Arc<Mutex<RemoteSlot>>),
}

/// The connections of one container of another process.
#[derive(Default)]
pub struct RemoteSlot {
    /// The container's connection; `None` while it is not connected.
    active: Option<UnboundedSender<Command>>,
    /// Its warm standby's, if one is connected.
    standby: Option<StandbyLink>,
}

/// A warm standby's connection.
struct StandbyLink {
    commands: UnboundedSender<Command>,
    /// Set when the standby becomes the container: from then on its connection is the
    /// container's, heard like any other.
    promoted: Arc<AtomicBool>,
}

impl ContainerLink {
    /// Sends a command; dropped if the container is gone (it reports that separately).
    pub fn send(&self, cmd: Command) {
        match self {
            ContainerLink::Local(tx) => {
                let _ = tx.send(cmd);
            }
            ContainerLink::Remote(slot) => {
                if let Some(tx) = slot.lock().expect("link lock").active.as_ref() {
                    let _ = tx.send(cmd);
                }
            }
        }
    }

    /// Sends a command to the container's warm standby, if it has one.
    pub fn send_standby(&self, cmd: Command) {
        if let ContainerLink::Remote(slot) = self {
            if let Some(standby) = slot.lock().expect("link lock").standby.as_ref() {
                let _ = standby.commands.send(cmd);
            }
        }
    }

    /// False for a remote container that is not connected.
    pub fn is_connected(&self) -> bool {
        match self {
            ContainerLink::Local(_) => true,
            ContainerLink::Remote(slot) => slot.lock().expect("link lock").active.is_some(),
        }
    }
}

/// First line a container sends.
#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    container: u32,
    job: String,
    spec_hash: String,
    token: Option<String>,
    /// It stands by for the container if that one is connected (`standby: true`); without,
    /// it is refused then.
    #[serde(default)]
    standby: bool,
    /// Its host name, for the status (its pod's name on Kubernetes).
    #[serde(default)]
    host: String,
}

/// The coordinator's answer to a hello.
#[derive(Debug, Serialize, Deserialize)]
enum Welcome {
    Accepted,
    /// Admitted as the container's warm standby.
    Standby,
    Refused(String),
}

/// How a connection was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// As the container: it restores and runs its tasks.
    Container,
    /// As the container's warm standby: it follows commits until it takes over.
    Standby,
}

/// Why joining a coordinator failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// Network failure.
    #[error("coordinator connection {addr}: {source}")]
    Io {
        /// The address.
        addr: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The coordinator refused us.
    #[error("the coordinator refused container {container}: {reason}")]
    Refused {
        /// Our container index.
        container: u32,
        /// Its reason.
        reason: String,
    },
    /// The token file shared by the job's processes cannot be used.
    #[error("coordinator token file {path}: {problem}; the job's processes authenticate to each other with it (on Kubernetes, the control token Secret the operator mounts; locally, write one random token of at least 16 characters to a file and give it to every process with --coordinator-token-file)")]
    Token {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// Reads the token the job's processes share (trailing newline ignored), with the control
/// API's rules: 16 to 4096 characters. The token itself is never logged.
pub fn read_token(path: &Path) -> Result<String, RemoteError> {
    crate::control::read_token(path).map_err(|e| match e {
        crate::control::ControlError::Token { path, problem } => {
            RemoteError::Token { path, problem }
        }
        other => RemoteError::Token {
            path: path.to_path_buf(),
            problem: other.to_string(),
        },
    })
}

/// What the coordinator admits: one job, one spec, one token, and each container speaking
/// for its own tasks only.
#[derive(Debug, Clone)]
pub struct Admission {
    /// The job's name.
    pub job: String,
    /// Hash of the spec the coordinator runs.
    pub spec_hash: String,
    /// The token every container must present.
    pub token: String,
    /// Task -> container.
    pub assignment: BTreeMap<u32, u32>,
    /// Whether a second process for a connected container is admitted as its standby.
    pub standby: bool,
}

/// Reads `\n`-terminated lines of at most `max` bytes: a peer cannot make us buffer more by
/// leaving out the newline.
struct LineReader<R> {
    inner: R,
    line: Vec<u8>,
    /// `line` holds a whole line already returned (else the start of one being read).
    returned: bool,
    max: usize,
}

impl<R: AsyncBufRead + Unpin> LineReader<R> {
    fn new(inner: R, max: usize) -> Self {
        LineReader {
            inner,
            line: Vec::new(),
            returned: false,
            max,
        }
    }

    /// The next line without its newline; `None` at a clean end of stream. A line longer than
    /// the limit, or a stream ending inside a line, is an error. Cancel-safe: a call dropped
    /// part-way keeps what it read for the next call (a standby waits for a command while it
    /// fetches files).
    async fn next(&mut self) -> std::io::Result<Option<&[u8]>> {
        if self.returned {
            self.line.clear();
            self.returned = false;
        }
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                if self.line.is_empty() {
                    return Ok(None);
                }
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
                Some(end) => (&available[..end], true),
                None => (available, false),
            };
            if self.line.len().saturating_add(chunk.len()) > self.max {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("a line longer than {} bytes", self.max),
                ));
            }
            self.line.extend_from_slice(chunk);
            let used = chunk.len() + usize::from(done);
            self.inner.consume(used);
            if done {
                self.returned = true;
                return Ok(Some(&self.line));
            }
        }
    }

    /// The next line parsed as JSON; `None` at a clean end of stream.
    async fn next_json<T: serde::de::DeserializeOwned>(&mut self) -> std::io::Result<Option<T>> {
        match self.next().await? {
            Some(line) => serde_json::from_slice(line)
                .map(Some)
                .map_err(std::io::Error::other),
            None => Ok(None),
        }
    }
}

/// Accepts containers `1..P` on `listener`, wiring each connection into its link slot and
/// the coordinator's event channel. Runs until the process ends.
pub fn accept_containers(
    listener: TcpListener,
    links: Vec<ContainerLink>,
    events: UnboundedSender<Event>,
    admission: Admission,
) {
    let admission = Arc::new(admission);
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HELLOS));
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most likely: wait instead of spinning.
                    tracing::warn!(error = %e, "accepting a container connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = pending.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "refusing a connection: {MAX_PENDING_HELLOS} connections are already waiting to introduce themselves");
                refuse_now(&stream, &format!("the coordinator already has {MAX_PENDING_HELLOS} connections waiting to introduce themselves; try again"));
                continue;
            };
            let (links, events, admission) = (links.clone(), events.clone(), admission.clone());
            tokio::spawn(async move {
                if let Err(e) = serve_container(stream, links, events, &admission, permit).await {
                    tracing::warn!(%peer, error = %e, "container connection ended");
                }
            });
        }
    });
}

/// Tells a connection it is refused without waiting on it (best effort), then closes it.
fn refuse_now(stream: &TcpStream, reason: &str) {
    if let Ok(mut line) = serde_json::to_vec(&Welcome::Refused(reason.to_owned())) {
        line.push(b'\n');
        let _ = stream.try_write(&line);
    }
}

async fn write_line<T: Serialize>(
    w: &mut (impl AsyncWriteExt + Unpin),
    msg: &T,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await
}

/// Why the coordinator closes a container's connection.
#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("no hello within {HELLO_TIMEOUT:?}")]
    HelloTimeout,
    #[error("refused: {0}")]
    Refused(String),
    #[error("container {container} sent a message it may not send ({why}); closed its connection, its tasks restart from the last committed checkpoint")]
    Forged { container: u32, why: String },
}

/// Decides whether `hello` may join and, if so, takes its place in the container's slot
/// (in one step, so two processes for one container cannot both get in); `Err` is the reason
/// given back. The token is checked first, so nothing about the job is revealed without it.
fn claim(
    hello: &Hello,
    links: &[ContainerLink],
    admission: &Admission,
    commands: UnboundedSender<Command>,
    promoted: &Arc<AtomicBool>,
) -> Result<Joined, String> {
    let joined = admit(hello, links, admission)?;
    let ContainerLink::Remote(slot) = &links[hello.container as usize] else {
        unreachable!("admit accepts remote containers only")
    };
    let mut slot = slot.lock().expect("link lock");
    // Checked again under the lock that claims the place.
    match joined {
        Joined::Container if slot.active.is_none() => slot.active = Some(commands),
        Joined::Standby if slot.active.is_some() && slot.standby.is_none() => {
            slot.standby = Some(StandbyLink {
                commands,
                promoted: promoted.clone(),
            })
        }
        _ => return Err("another process for that container joined at the same time".to_owned()),
    }
    Ok(joined)
}

/// Decides whether `hello` may join, and as what; `Err` is the reason given back.
fn admit(hello: &Hello, links: &[ContainerLink], admission: &Admission) -> Result<Joined, String> {
    let token_ok = hello
        .token
        .as_deref()
        .is_some_and(|t| crate::control::same(t.as_bytes(), admission.token.as_bytes()));
    if !token_ok {
        return Err("wrong or missing token".to_owned());
    }
    // It is shown in the status (and the StreamJob's): a host name, not a payload.
    if hello.host.len() > HOST_MAX {
        return Err(format!(
            "its host name is {} bytes, more than the {HOST_MAX} a host name may have",
            hello.host.len()
        ));
    }
    if hello.job != admission.job || hello.spec_hash != admission.spec_hash {
        return Err(format!(
            "it runs job {} with spec {}, the coordinator runs {} with spec {}",
            hello.job, hello.spec_hash, admission.job, admission.spec_hash
        ));
    }
    let Some(ContainerLink::Remote(slot)) = links.get(hello.container as usize) else {
        return Err(format!(
            "no remote container {} in this job",
            hello.container
        ));
    };
    let slot = slot.lock().expect("link lock");
    if slot.active.is_none() {
        Ok(Joined::Container)
    } else if !(admission.standby && hello.standby) {
        Err("that container is already connected".to_owned())
    } else if slot.standby.is_some() {
        Err("that container is already connected and has a standby".to_owned())
    } else {
        Ok(Joined::Standby)
    }
}

/// `Ok` if container `container` may send `event`: events about tasks only for its own tasks,
/// `Ready` only for itself, and never `Connected`/`Disconnected` (the coordinator's own).
fn check_event(
    container: u32,
    event: &Event,
    assignment: &BTreeMap<u32, u32>,
) -> Result<(), String> {
    let (kind, task) = match event {
        Event::Ack { task, .. } => ("Ack", *task),
        Event::Busy { task, .. } => ("Busy", *task),
        Event::Finished(task) => ("Finished", *task),
        Event::Failed { task, .. } => ("Failed", *task),
        Event::Ready(k) if *k == container => return Ok(()),
        Event::Ready(k) => return Err(format!("Ready for container {k}")),
        // A standby's report that crossed its promotion; the coordinator ignores it then.
        Event::Following { container: k, .. } if *k == container => return Ok(()),
        Event::Following { container: k, .. } => {
            return Err(format!("Following for container {k}"))
        }
        Event::Connected(_)
        | Event::Disconnected(_)
        | Event::StandbyJoined { .. }
        | Event::StandbyLeft(_) => return Err("an event only the coordinator raises".to_owned()),
    };
    match assignment.get(&task) {
        Some(owner) if *owner == container => Ok(()),
        Some(owner) => Err(format!(
            "{kind} for task {task}, which runs in container {owner}"
        )),
        None => Err(format!(
            "{kind} for task {task}, which this job does not have"
        )),
    }
}

/// `Ok` if the warm standby of container `container` may send `event`: only that it follows a
/// checkpoint, for its own container.
fn check_standby_event(container: u32, event: &Event) -> Result<(), String> {
    match event {
        Event::Following { container: k, .. } if *k == container => Ok(()),
        Event::Following { container: k, .. } => Err(format!("Following for container {k}")),
        other => Err(format!(
            "{} from a standby, which runs no tasks",
            event_name(other)
        )),
    }
}

/// An event's name, for messages about it.
fn event_name(event: &Event) -> &'static str {
    match event {
        Event::Ack { .. } => "Ack",
        Event::Busy { .. } => "Busy",
        Event::Finished(_) => "Finished",
        Event::Failed { .. } => "Failed",
        Event::Connected(_) => "Connected",
        Event::Ready(_) => "Ready",
        Event::Disconnected(_) => "Disconnected",
        Event::StandbyJoined { .. } => "StandbyJoined",
        Event::StandbyLeft(_) => "StandbyLeft",
        Event::Following { .. } => "Following",
    }
}

/// What the coordinator hears when a connection of container `container` ends: if it was
/// the container's, the container left, and its warm standby (if any) takes its place at once
/// and joins in turn; if it was a standby's, the standby left.
fn leave(
    slot: &Mutex<RemoteSlot>,
    container: u32,
    promoted: &AtomicBool,
    joined: Joined,
) -> Vec<Event> {
    let mut slot = slot.lock().expect("link lock");
    if joined == Joined::Standby && !promoted.load(Ordering::Acquire) {
        slot.standby = None;
        return vec![Event::StandbyLeft(container)];
    }
    slot.active = None;
    let mut events = vec![Event::Disconnected(container)];
    if let Some(standby) = slot.standby.take() {
        standby.promoted.store(true, Ordering::Release);
        slot.active = Some(standby.commands);
        tracing::info!(container, "container left; its warm standby takes over");
        events.extend([Event::StandbyLeft(container), Event::Connected(container)]);
    }
    events
}

async fn serve_container(
    stream: TcpStream,
    links: Vec<ContainerLink>,
    events: UnboundedSender<Event>,
    admission: &Admission,
    pending: tokio::sync::OwnedSemaphorePermit,
) -> Result<(), ServeError> {
    let _ = stream.set_nodelay(true);
    watch_peer(&stream);
    let (read, mut write) = stream.into_split();
    let mut lines = LineReader::new(BufReader::new(read), HELLO_MAX);
    let hello: Hello = match tokio::time::timeout(HELLO_TIMEOUT, lines.next_json()).await {
        Ok(Ok(Some(hello))) => hello,
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(e)) => {
            let reason = format!("bad hello: {e}");
            let _ = write_line(&mut write, &Welcome::Refused(reason.clone())).await;
            return Err(ServeError::Refused(reason));
        }
        Err(_) => {
            let reason = format!("no hello within {HELLO_TIMEOUT:?}");
            let _ = write_line(&mut write, &Welcome::Refused(reason)).await;
            return Err(ServeError::HelloTimeout);
        }
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Command>();
    let promoted = Arc::new(AtomicBool::new(false));
    let joined = match claim(&hello, &links, admission, tx, &promoted) {
        Ok(joined) => joined,
        Err(reason) => {
            write_line(&mut write, &Welcome::Refused(reason.clone())).await?;
            return Err(ServeError::Refused(format!(
                "container {}: {reason}",
                hello.container
            )));
        }
    };
    // From here on the connection holds its container's slot, not a pending place.
    drop(pending);
    let container = hello.container;
    let ContainerLink::Remote(slot) = &links[container as usize] else {
        unreachable!("claim accepts remote containers only")
    };
    let welcome = match joined {
        Joined::Container => Welcome::Accepted,
        Joined::Standby => Welcome::Standby,
    };
    if let Err(e) = write_line(&mut write, &welcome).await {
        for event in leave(slot, container, &promoted, joined) {
            let _ = events.send(event);
        }
        return Err(e.into());
    }
    let _ = events.send(match joined {
        Joined::Container => Event::Connected(container),
        Joined::Standby => {
            tracing::info!(container, host = %hello.host, "warm standby joined");
            Event::StandbyJoined {
                container,
                host: hello.host.clone(),
            }
        }
    });
    let writer = tokio::spawn(async move {
        while let Some(cmd) = rx.recv().await {
            if write_line(&mut write, &cmd).await.is_err() {
                break;
            }
        }
    });
    lines.max = LINE_MAX;
    let result = async {
        while let Some(event) = lines.next_json::<Event>().await? {
            let standing_by = joined == Joined::Standby && !promoted.load(Ordering::Acquire);
            let checked = if standing_by {
                check_standby_event(container, &event)
            } else {
                check_event(container, &event, &admission.assignment)
            };
            if let Err(why) = checked {
                return Err(ServeError::Forged { container, why });
            }
            let _ = events.send(event);
        }
        Ok::<_, ServeError>(())
    }
    .await;
    writer.abort();
    for event in leave(slot, container, &promoted, joined) {
        let _ = events.send(event);
    }
    result
}

/// A container's connection to its coordinator.
pub struct CoordinatorConnection {
    addr: String,
    lines: LineReader<BufReader<OwnedReadHalf>>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

/// Who a process is when it joins its coordinator.
pub struct Introduction {
    /// Its container index.
    pub container: u32,
    /// The job's name.
    pub job: String,
    /// Its spec's hash.
    pub spec_hash: String,
    /// The job's token.
    pub token: String,
    /// It stands by if the container is connected already (`standby: true`).
    pub standby: bool,
}

/// Connects to the coordinator (retrying for up to 30 s while it starts) and introduces
/// a process for a container: admitted as the container, or as its warm standby.
pub async fn connect(
    addr: &str,
    intro: Introduction,
) -> Result<(CoordinatorConnection, Joined), RemoteError> {
    let Introduction {
        container,
        job,
        spec_hash,
        token,
        standby,
    } = intro;
    let io = |source| RemoteError::Io {
        addr: addr.to_owned(),
        source,
    };
    let mut attempt = 0;
    let stream = loop {
        match TcpStream::connect(addr).await {
            Ok(s) => break s,
            Err(e) if attempt < 120 => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "coordinator not reachable yet");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(io(e)),
        }
    };
    let _ = stream.set_nodelay(true);
    watch_peer(&stream);
    let (read, mut write) = stream.into_split();
    let mut lines = LineReader::new(BufReader::new(read), LINE_MAX);
    write_line(
        &mut write,
        &Hello {
            container,
            job,
            spec_hash,
            token: Some(token),
            standby,
            host: crate::runtime::job::hostname(),
        },
    )
    .await
    .map_err(io)?;
    let joined = match lines.next_json::<Welcome>().await.map_err(io)? {
        Some(Welcome::Accepted) => {
            tracing::info!(addr, container, "joined the coordinator");
            Joined::Container
        }
        Some(Welcome::Standby) => {
            tracing::info!(addr, container, "standing by for container {container}: following its committed checkpoints until it fails");
            Joined::Standby
        }
        Some(Welcome::Refused(reason)) => return Err(RemoteError::Refused { container, reason }),
        None => return Err(io(std::io::ErrorKind::UnexpectedEof.into())),
    };
    let conn = CoordinatorConnection {
        addr: addr.to_owned(),
        lines,
        write,
    };
    Ok((conn, joined))
}

/// What the coordinator tells a joining container (see [`Command::Restore`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    /// The generation to write under.
    pub generation: u64,
    /// The committed checkpoint to restore from.
    pub checkpoint: Option<u64>,
    /// Before the run's first commit, the savepoint the run started from.
    pub savepoint: Option<String>,
}

impl CoordinatorConnection {
    fn io(&self, source: std::io::Error) -> RemoteError {
        RemoteError::Io {
            addr: self.addr.clone(),
            source,
        }
    }

    /// The coordinator's next command; an error when the connection ends. Cancel-safe.
    pub async fn next_command(&mut self) -> Result<Command, RemoteError> {
        match self.lines.next_json::<Command>().await {
            Ok(Some(cmd)) => Ok(cmd),
            Ok(None) => Err(self.io(std::io::ErrorKind::UnexpectedEof.into())),
            Err(e) => Err(self.io(e)),
        }
    }

    /// Sends an event to the coordinator.
    pub async fn send_event(&mut self, event: &Event) -> Result<(), RemoteError> {
        match write_line(&mut self.write, event).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.io(e)),
        }
    }

    /// The coordinator's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Waits for the coordinator's `Restore`: the generation to write under, and the
    /// `(checkpoint, savepoint)` to restore from.
    pub async fn await_restore(&mut self) -> Result<Restore, RemoteError> {
        loop {
            match self.next_command().await? {
                Command::Restore {
                    generation,
                    checkpoint,
                    savepoint,
                } => {
                    return Ok(Restore {
                        generation,
                        checkpoint,
                        savepoint,
                    })
                }
                Command::Stop | Command::Shutdown => {
                    return Err(self.io(std::io::Error::other("the job is stopping")))
                }
                _ => {} // commands for running tasks; this container has none yet
            }
        }
    }

    /// Reports `Ready`, then forwards commands to the local run loop and its events to the
    /// coordinator until the coordinator releases this container or the connection ends.
    /// Dropping the future closes the connection (the coordinator sees the container leave).
    pub async fn relay(
        self,
        container: u32,
        commands: std::sync::mpsc::Sender<Command>,
        mut events: UnboundedReceiver<Event>,
    ) -> Result<RelayEnd, RemoteError> {
        let CoordinatorConnection {
            addr,
            mut lines,
            mut write,
        } = self;
        let io = |source| RemoteError::Io {
            addr: addr.clone(),
            source,
        };
        write_line(&mut write, &Event::Ready(container))
            .await
            .map_err(io)?;
        // A task of ours that failed: whatever the coordinator answers (it stops the job), this
        // process must exit with the failure rather than hold or call it the coordinator's loss.
        let failed: Mutex<Option<(u32, TaskFailure)>> = Mutex::new(None);
        let forward_events = async {
            while let Some(event) = events.recv().await {
                if let Event::Failed { task, failure } = &event {
                    *failed.lock().expect("failure lock") = Some((*task, failure.clone()));
                }
                write_line(&mut write, &event).await?;
            }
            // The run loop ended on its own (a task failed and was reported).
            Ok::<_, std::io::Error>(RelayEnd::CoordinatorLost)
        };
        let forward_commands = async {
            while let Some(cmd) = lines.next_json::<Command>().await? {
                let end = match cmd {
                    Command::Stop => Some(RelayEnd::JobStopped),
                    Command::Shutdown => Some(RelayEnd::CoordinatorShutDown),
                    _ => None,
                };
                if commands.send(cmd).is_err() {
                    return Ok(RelayEnd::CoordinatorLost);
                }
                if let Some(end) = end {
                    return Ok(end);
                }
            }
            Ok::<_, std::io::Error>(RelayEnd::CoordinatorLost)
        };
        let end = tokio::select! {
            r = forward_events => r.map_err(io),
            r = forward_commands => r.map_err(io),
        };
        if let Some((task, failure)) = failed.lock().expect("failure lock").take() {
            return Ok(RelayEnd::TaskFailed { task, failure });
        }
        end
    }
}

/// How a container's relay with its coordinator ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEnd {
    /// `Stop`: the job stopped; the container may hold (`--hold-after-stop`).
    JobStopped,
    /// `Shutdown`: the coordinator's process is terminating after its final checkpoint; the
    /// container exits (and, under a supervisor, rejoins the coordinator's successor).
    CoordinatorShutDown,
    /// The connection ended without either (the coordinator died), or the local run loop
    /// stopped; the container's tasks restart from the last committed checkpoint.
    CoordinatorLost,
    /// A task of this container failed (and told the coordinator); the process exits with it.
    TaskFailed {
        /// The task.
        task: u32,
        /// Why.
        failure: TaskFailure,
    },
}

/// Parses `host:port` for the listener.
pub fn listen_addr(addr: &str) -> Result<SocketAddr, String> {
    addr.parse()
        .map_err(|e| format!("{addr:?} is not a listen address like 0.0.0.0:9251: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::failure::FailureKind;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn lines_are_cut_at_their_cap() {
        block_on(async {
            let input: &[u8] = b"short\n0123456789\nxx";
            let mut lines = LineReader::new(BufReader::with_capacity(4, input), 8);
            assert_eq!(lines.next().await.unwrap(), Some(&b"short"[..]));
            let err = lines.next().await.unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
            assert_eq!(err.to_string(), "a line longer than 8 bytes");
        });
        block_on(async {
            // Exactly at the cap is fine; a stream ending inside a line is not.
            let input: &[u8] = b"12345678\n1234";
            let mut lines = LineReader::new(BufReader::with_capacity(3, input), 8);
            assert_eq!(lines.next().await.unwrap(), Some(&b"12345678"[..]));
            let err = lines.next().await.unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        });
        block_on(async {
            let input: &[u8] = b"";
            let mut lines = LineReader::new(BufReader::new(input), 8);
            assert_eq!(lines.next().await.unwrap(), None);
        });
    }

    fn admission() -> Admission {
        Admission {
            job: "job".into(),
            spec_hash: "hash".into(),
            token: "the-token-0123456789".into(),
            // Tasks 0..4 over containers 0..2.
            assignment: (0..4).map(|t| (t, t % 2)).collect(),
            standby: true,
        }
    }

    #[test]
    fn a_container_speaks_only_for_its_own_tasks() {
        let assignment = admission().assignment;
        let ack = |task| Event::Ack {
            task,
            checkpoint: 1,
            result: Err(TaskFailure::new(FailureKind::Sink, "x")),
            sync_seconds: 0.0,
            load: Default::default(),
        };
        assert_eq!(check_event(1, &ack(3), &assignment), Ok(()));
        assert_eq!(check_event(1, &Event::Finished(1), &assignment), Ok(()));
        assert_eq!(check_event(1, &Event::Ready(1), &assignment), Ok(()));
        assert_eq!(
            check_event(1, &ack(2), &assignment),
            Err("Ack for task 2, which runs in container 0".into())
        );
        assert_eq!(
            check_event(1, &ack(99), &assignment),
            Err("Ack for task 99, which this job does not have".into())
        );
        let failed = Event::Failed {
            task: 0,
            failure: TaskFailure::new(FailureKind::Task, "x"),
        };
        assert_eq!(
            check_event(1, &failed, &assignment),
            Err("Failed for task 0, which runs in container 0".into())
        );
        assert_eq!(
            check_event(1, &Event::Ready(0), &assignment),
            Err("Ready for container 0".into())
        );
        for event in [Event::Connected(1), Event::Disconnected(1)] {
            assert_eq!(
                check_event(1, &event, &assignment),
                Err("an event only the coordinator raises".into())
            );
        }
    }

    /// The link to another process is where a failure becomes JSON: it arrives with its kind.
    #[test]
    fn a_failure_crosses_the_link_with_its_kind() {
        let sent = Event::Failed {
            task: 3,
            failure: TaskFailure::new(FailureKind::State, "the state store of task 3 failed"),
        };
        let line = serde_json::to_string(&sent).unwrap();
        let Event::Failed { task, failure } = serde_json::from_str(&line).unwrap() else {
            panic!("{line}");
        };
        assert_eq!(
            (task, failure),
            (
                3,
                TaskFailure::new(FailureKind::State, "the state store of task 3 failed")
            )
        );
        assert!(line.contains(r#""kind":"state""#), "{line}");
    }

    #[test]
    fn a_hello_needs_the_token_first() {
        let links = vec![
            ContainerLink::Local(std::sync::mpsc::channel().0),
            ContainerLink::Remote(Default::default()),
        ];
        let admission = admission();
        let hello = |container, job: &str, token: Option<&str>| Hello {
            container,
            job: job.into(),
            spec_hash: "hash".into(),
            token: token.map(Into::into),
            standby: false,
            host: String::new(),
        };
        let token = Some("the-token-0123456789");
        assert_eq!(
            admit(&hello(1, "job", token), &links, &admission),
            Ok(Joined::Container)
        );
        // Without the right token nothing else is looked at (or revealed).
        for wrong in [
            None,
            Some(""),
            Some("the-token-012345678"),
            Some("the-token-0123456788"),
        ] {
            assert_eq!(
                admit(&hello(1, "other", wrong), &links, &admission),
                Err("wrong or missing token".into())
            );
        }
        assert!(admit(&hello(1, "other", token), &links, &admission)
            .unwrap_err()
            .contains("the coordinator runs job with spec hash"));
        let mut long_host = hello(1, "job", token);
        long_host.host = "h".repeat(HOST_MAX + 1);
        assert_eq!(
            admit(&long_host, &links, &admission),
            Err(format!(
                "its host name is {} bytes, more than the {HOST_MAX} a host name may have",
                HOST_MAX + 1
            ))
        );
        long_host.host.pop();
        assert_eq!(admit(&long_host, &links, &admission), Ok(Joined::Container));
        assert_eq!(
            admit(&hello(0, "job", token), &links, &admission),
            Err("no remote container 0 in this job".into())
        );
        assert_eq!(
            admit(&hello(7, "job", token), &links, &admission),
            Err("no remote container 7 in this job".into())
        );
    }

    fn standby_hello(standby: bool) -> Hello {
        Hello {
            container: 1,
            job: "job".into(),
            spec_hash: "hash".into(),
            token: Some("the-token-0123456789".into()),
            standby,
            host: "pod-b".into(),
        }
    }

    /// Joins a process for container 1 as `claim` would, returning what it was admitted as
    /// and its command channel and promotion flag.
    fn join(
        links: &[ContainerLink],
        admission: &Admission,
        standby: bool,
    ) -> Result<(Joined, UnboundedReceiver<Command>, Arc<AtomicBool>), String> {
        let (tx, rx) = mpsc::unbounded_channel();
        let promoted = Arc::new(AtomicBool::new(false));
        claim(&standby_hello(standby), links, admission, tx, &promoted)
            .map(|joined| (joined, rx, promoted))
    }

    #[test]
    fn a_second_process_for_a_container_stands_by_only_when_both_sides_allow_it() {
        let links = vec![
            ContainerLink::Local(std::sync::mpsc::channel().0),
            ContainerLink::Remote(Default::default()),
        ];
        let mut admission = admission();
        let (joined, _active, _) = join(&links, &admission, true).unwrap();
        assert_eq!(joined, Joined::Container, "the first one is the container");
        // A process that does not offer to stand by, or a job without standbys: refused.
        assert_eq!(
            join(&links, &admission, false).unwrap_err(),
            "that container is already connected"
        );
        admission.standby = false;
        assert_eq!(
            join(&links, &admission, true).unwrap_err(),
            "that container is already connected"
        );
        admission.standby = true;
        let (joined, _standby, _) = join(&links, &admission, true).unwrap();
        assert_eq!(joined, Joined::Standby);
        // One standby per container.
        assert_eq!(
            join(&links, &admission, true).unwrap_err(),
            "that container is already connected and has a standby"
        );
    }

    #[test]
    fn when_a_container_leaves_its_standby_takes_its_place_before_anyone_else() {
        let links = vec![
            ContainerLink::Local(std::sync::mpsc::channel().0),
            ContainerLink::Remote(Default::default()),
        ];
        let admission = admission();
        let ContainerLink::Remote(slot) = &links[1] else {
            unreachable!()
        };
        let (_, mut old, old_promoted) = join(&links, &admission, true).unwrap();
        let (_, mut standby, promoted) = join(&links, &admission, true).unwrap();

        // Commits reach the standby only; task commands the container only.
        links[1].send_standby(Command::Follow(7));
        links[1].send(Command::Committed(7));
        assert_eq!(standby.try_recv().unwrap(), Command::Follow(7));
        assert!(standby.try_recv().is_err());
        assert_eq!(old.try_recv().unwrap(), Command::Committed(7));

        // The container's connection ends: the coordinator hears it leave, the standby leave
        // its standby place, and the container join again, in that order.
        let heard = leave(slot, 1, &old_promoted, Joined::Container);
        assert!(matches!(
            heard.as_slice(),
            [
                Event::Disconnected(1),
                Event::StandbyLeft(1),
                Event::Connected(1)
            ]
        ));
        assert!(promoted.load(Ordering::Acquire));
        // The coordinator's Restore now goes to the promoted standby, not the old process.
        links[1].send(Command::Restore {
            generation: 3,
            checkpoint: Some(7),
            savepoint: None,
        });
        assert!(matches!(
            standby.try_recv().unwrap(),
            Command::Restore { .. }
        ));
        assert!(old.try_recv().is_err());
        // The old process, restarted, finds the container taken and stands by in turn.
        let (joined, _, _) = join(&links, &admission, true).unwrap();
        assert_eq!(joined, Joined::Standby);

        // A standby that leaves without being promoted leaves only its place.
        let lone = vec![
            ContainerLink::Local(std::sync::mpsc::channel().0),
            ContainerLink::Remote(Default::default()),
        ];
        let ContainerLink::Remote(lone_slot) = &lone[1] else {
            unreachable!()
        };
        let _active = join(&lone, &admission, true).unwrap();
        let (_, _, flag) = join(&lone, &admission, true).unwrap();
        let heard = leave(lone_slot, 1, &flag, Joined::Standby);
        assert!(matches!(heard.as_slice(), [Event::StandbyLeft(1)]));
        assert!(lone[1].is_connected());
    }

    #[test]
    fn a_standby_may_only_say_what_it_holds() {
        let following = Event::Following {
            container: 1,
            checkpoint: 4,
        };
        assert_eq!(check_standby_event(1, &following), Ok(()));
        assert_eq!(
            check_standby_event(2, &following),
            Err("Following for container 1".into())
        );
        assert_eq!(
            check_standby_event(1, &Event::Ready(1)),
            Err("Ready from a standby, which runs no tasks".into())
        );
        assert_eq!(
            check_standby_event(1, &Event::Finished(1)),
            Err("Finished from a standby, which runs no tasks".into())
        );
        // Promoted, its late report is still allowed (and ignored by the coordinator).
        assert_eq!(check_event(1, &following, &admission().assignment), Ok(()));
    }

    /// A standby waits for a command while it fetches files: a wait cut short must lose
    /// nothing of a line it had started to read.
    #[test]
    fn a_line_read_cut_short_loses_nothing() {
        block_on(async {
            let (mut writer, reader) = tokio::io::duplex(64);
            let mut lines = LineReader::new(BufReader::new(reader), 64);
            writer.write_all(b"first ha").await.unwrap();
            let cut = tokio::time::timeout(Duration::from_millis(20), lines.next()).await;
            assert!(cut.is_err(), "no whole line yet");
            writer.write_all(b"lf\nsecond\n").await.unwrap();
            assert_eq!(lines.next().await.unwrap(), Some(&b"first half"[..]));
            assert_eq!(lines.next().await.unwrap(), Some(&b"second"[..]));
        });
    }

    /// A node that vanishes closes nothing: the links must give up on a silent peer within
    /// [`PEER_DEAD_AFTER`] for a standby to take over, not after the kernel's hours.
    #[test]
    fn links_give_up_on_a_silent_peer_within_seconds() {
        block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let stream = TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let socket = socket2::SockRef::from(&stream);
            assert!(!socket.keepalive().unwrap());
            watch_peer(&stream);
            assert!(socket.keepalive().unwrap());
            assert_eq!(socket.tcp_keepalive_time().unwrap(), Duration::from_secs(2));
            assert_eq!(socket.tcp_user_timeout().unwrap(), Some(PEER_DEAD_AFTER));
        });
    }
}
