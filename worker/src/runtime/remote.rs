//! Containers in separate processes (as in P worker pods): the coordinator's process accepts
//! connections from the other containers and exchanges [`Command`]s and [`Event`]s with them as
//! JSON lines over TCP.
//!
//! A container that loses its process (killed, OOM, node gone) restarts, restores only its own
//! tasks from the last committed checkpoint and reconnects; the other containers keep running.
//! That is consistent because tasks never exchange records: each task's state and input offset
//! form a consistent pair on their own. A container that loses the coordinator exits (its
//! process restarts and reconnects to the new coordinator).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use super::messages::{Command, Event};

/// The coordinator's handle on one container.
#[derive(Clone)]
pub enum ContainerLink {
    /// A container thread in this process.
    Local(std::sync::mpsc::Sender<Command>),
    /// A container in another process; `None` while it is not connected.
    Remote(Arc<Mutex<Option<UnboundedSender<Command>>>>),
}

impl ContainerLink {
    /// Sends a command; dropped if the container is gone (it reports that separately).
    pub fn send(&self, cmd: Command) {
        match self {
            ContainerLink::Local(tx) => {
                let _ = tx.send(cmd);
            }
            ContainerLink::Remote(slot) => {
                if let Some(tx) = slot.lock().expect("link lock").as_ref() {
                    let _ = tx.send(cmd);
                }
            }
        }
    }

    /// False for a remote container that is not connected.
    pub fn is_connected(&self) -> bool {
        match self {
            ContainerLink::Local(_) => true,
            ContainerLink::Remote(slot) => slot.lock().expect("link lock").is_some(),
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
}

/// The coordinator's answer to a hello.
#[derive(Debug, Serialize, Deserialize)]
enum Welcome {
    Accepted,
    Refused(String),
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
}

/// Accepts containers `1..P` on `listener`, wiring each connection into its link slot and
/// the coordinator's event channel. Runs until the process ends.
pub fn accept_containers(
    listener: TcpListener,
    links: Vec<ContainerLink>,
    events: UnboundedSender<Event>,
    job: String,
    spec_hash: String,
    token: Option<String>,
) {
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let (links, events, job, spec_hash, token) = (
                links.clone(),
                events.clone(),
                job.clone(),
                spec_hash.clone(),
                token.clone(),
            );
            tokio::spawn(async move {
                if let Err(e) =
                    serve_container(stream, links, events, &job, &spec_hash, token.as_deref()).await
                {
                    tracing::warn!(%peer, error = %e, "container connection ended");
                }
            });
        }
    });
}

async fn write_line<T: Serialize>(
    w: &mut (impl AsyncWriteExt + Unpin),
    msg: &T,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await
}

async fn serve_container(
    stream: TcpStream,
    links: Vec<ContainerLink>,
    events: UnboundedSender<Event>,
    job: &str,
    spec_hash: &str,
    token: Option<&str>,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let Some(first) = lines.next_line().await? else {
        return Ok(());
    };
    let hello: Hello = serde_json::from_str(&first).map_err(std::io::Error::other)?;
    let refusal = match links.get(hello.container as usize) {
        _ if token.is_some() && hello.token.as_deref() != token => {
            Some("wrong or missing token".to_owned())
        }
        _ if hello.job != job || hello.spec_hash != spec_hash => Some(format!(
            "it runs job {} with spec {}, the coordinator runs {job} with spec {spec_hash}",
            hello.job, hello.spec_hash
        )),
        Some(ContainerLink::Remote(slot)) if slot.lock().expect("link lock").is_none() => None,
        Some(ContainerLink::Remote(_)) => Some("that container is already connected".to_owned()),
        _ => Some(format!(
            "no remote container {} in this job",
            hello.container
        )),
    };
    if let Some(reason) = refusal {
        write_line(&mut write, &Welcome::Refused(reason)).await?;
        return Ok(());
    }
    write_line(&mut write, &Welcome::Accepted).await?;
    let container = hello.container;
    let ContainerLink::Remote(slot) = &links[container as usize] else {
        unreachable!()
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Command>();
    *slot.lock().expect("link lock") = Some(tx);
    let _ = events.send(Event::Connected(container));
    let writer = tokio::spawn(async move {
        while let Some(cmd) = rx.recv().await {
            if write_line(&mut write, &cmd).await.is_err() {
                break;
            }
        }
    });
    let result = async {
        while let Some(line) = lines.next_line().await? {
            let event: Event = serde_json::from_str(&line).map_err(std::io::Error::other)?;
            let _ = events.send(event);
        }
        Ok::<_, std::io::Error>(())
    }
    .await;
    *slot.lock().expect("link lock") = None;
    writer.abort();
    let _ = events.send(Event::Disconnected(container));
    result
}

/// A container's connection to its coordinator.
pub struct CoordinatorConnection {
    addr: String,
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

/// Connects to the coordinator (retrying for up to 30 s while it starts) and introduces
/// container `container`.
pub async fn connect(
    addr: &str,
    container: u32,
    job: String,
    spec_hash: String,
    token: Option<String>,
) -> Result<CoordinatorConnection, RemoteError> {
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
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    write_line(
        &mut write,
        &Hello {
            container,
            job,
            spec_hash,
            token,
        },
    )
    .await
    .map_err(io)?;
    let welcome = lines.next_line().await.map_err(io)?.unwrap_or_default();
    match serde_json::from_str::<Welcome>(&welcome) {
        Ok(Welcome::Accepted) => tracing::info!(addr, container, "joined the coordinator"),
        Ok(Welcome::Refused(reason)) => return Err(RemoteError::Refused { container, reason }),
        Err(e) => return Err(io(std::io::Error::other(e))),
    }
    Ok(CoordinatorConnection {
        addr: addr.to_owned(),
        lines,
        write,
    })
}

impl CoordinatorConnection {
    fn io(&self, source: std::io::Error) -> RemoteError {
        RemoteError::Io {
            addr: self.addr.clone(),
            source,
        }
    }

    /// Waits for the coordinator's `Restore`: `(checkpoint, savepoint)` to restore from.
    pub async fn await_restore(&mut self) -> Result<(Option<u64>, Option<String>), RemoteError> {
        loop {
            let line = match self.lines.next_line().await {
                Ok(Some(line)) => line,
                Ok(None) => return Err(self.io(std::io::ErrorKind::UnexpectedEof.into())),
                Err(e) => return Err(self.io(e)),
            };
            match serde_json::from_str::<Command>(&line) {
                Ok(Command::Restore {
                    checkpoint,
                    savepoint,
                }) => return Ok((checkpoint, savepoint)),
                Ok(Command::Stop | Command::Shutdown) => {
                    return Err(self.io(std::io::Error::other("the job is stopping")))
                }
                Ok(_) => {} // commands for running tasks; this container has none yet
                Err(e) => return Err(self.io(std::io::Error::other(e))),
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
        let forward_events = async move {
            while let Some(event) = events.recv().await {
                write_line(&mut write, &event).await?;
            }
            // The run loop ended on its own (a task failed and was reported).
            Ok::<_, std::io::Error>(RelayEnd::CoordinatorLost)
        };
        let forward_commands = async {
            while let Some(line) = lines.next_line().await? {
                let cmd: Command = serde_json::from_str(&line).map_err(std::io::Error::other)?;
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
        tokio::select! {
            r = forward_events => r.map_err(io),
            r = forward_commands => r.map_err(io),
        }
    }
}

/// How a container's relay with its coordinator ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    /// `Stop`: the job stopped; the container may hold (`--hold-after-stop`).
    JobStopped,
    /// `Shutdown`: the coordinator's process is terminating after its final checkpoint; the
    /// container exits (and, under a supervisor, rejoins the coordinator's successor).
    CoordinatorShutDown,
    /// The connection ended without either (the coordinator died), or the local run loop
    /// stopped; the container's tasks restart from the last committed checkpoint.
    CoordinatorLost,
}

/// Parses `host:port` for the listener.
pub fn listen_addr(addr: &str) -> Result<SocketAddr, String> {
    addr.parse()
        .map_err(|e| format!("{addr:?} is not a listen address like 0.0.0.0:9251: {e}"))
}
