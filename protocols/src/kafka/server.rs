//! The TCP listener and the per-connection handler.
//!
//! Each connection reads whole frames (the length is checked against `socket.request.max.bytes`
//! before the body is buffered), reads ahead while earlier requests run (bounded by
//! [`IN_FLIGHT_MAX`]; read-only requests run concurrently, every other request alone, in
//! order), and writes the responses strictly in request order (Kafka requires it). A frame that is invalid, or a request
//! the broker cannot decode, closes that connection only. A timer task runs the group
//! coordinator's timeouts. Dropping the [`KafkaServer`] (or [`KafkaServer::shutdown`]) stops
//! accepting and ends every connection.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;

use super::frame::{check_frame, FrameStatus, PREFIX_BYTES};
use super::{Handled, KafkaBroker, KafkaError};
use crate::node::Node;

/// How often group timeouts are checked.
const TICK: Duration = Duration::from_millis(100);
/// Initial read buffer per connection.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// A running Kafka listener.
#[derive(Debug)]
pub struct KafkaServer {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    accept: Option<JoinHandle<()>>,
    ticker: JoinHandle<()>,
}

impl KafkaServer {
    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every connection, and waits for the accept loop to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.ticker.abort();
        if let Some(accept) = self.accept.take() {
            let _ = accept.await;
        }
    }
}

impl Drop for KafkaServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.ticker.abort();
    }
}

/// Serves Kafka clients on `listener` until the returned server is shut down or dropped.
pub fn serve<N: Node>(
    broker: Arc<KafkaBroker<N>>,
    listener: TcpListener,
) -> Result<KafkaServer, KafkaError> {
    let local_addr = listener.local_addr()?;
    let (stop, stop_rx) = watch::channel(false);
    let ticker = {
        let broker = broker.clone();
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(TICK);
            loop {
                iv.tick().await;
                broker.tick(Instant::now());
                // Groups changed by timeouts (expired members, rebalance deadlines).
                let _ = broker.persist_groups().await;
            }
        })
    };
    let slots = Arc::new(Semaphore::new(broker.config().connections_max));
    let accept = tokio::spawn(async move {
        let mut stop_rx = stop_rx;
        loop {
            tokio::select! {
                _ = stop_rx.changed() => break,
                accepted = listener.accept() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        drop(stream); // over connections_max: refuse
                        continue;
                    };
                    let broker = broker.clone();
                    let mut conn_stop = stop_rx.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = conn_stop.changed() => {}
                            _ = connection(broker, stream, peer) => {}
                        }
                        drop(permit);
                    });
                }
            }
        }
    });
    Ok(KafkaServer {
        local_addr,
        stop,
        accept: Some(accept),
        ticker,
    })
}

/// Most requests of one connection read ahead and in progress at once (librdkafka keeps up to
/// five in flight per connection; Kafka's own `max.in.flight.requests.per.connection` is 5).
pub const IN_FLIGHT_MAX: usize = 8;

/// Requests that only read (or, like ApiVersions, change nothing): they may run alongside
/// each other. Every other request is a barrier: it starts only once everything before it on
/// the connection has finished, and nothing after it starts before it finishes — so produce
/// order per partition, group operations and "read your own write" on one connection are as
/// if served one at a time. A Produce counts as finished here once its batches are applied;
/// its response still waits for their fsync, and responses go out in request order.
fn read_only(api_key: i16) -> bool {
    // Fetch 1, ListOffsets 2, Metadata 3, OffsetFetch 9, FindCoordinator 10,
    // DescribeGroups 15, ListGroups 16, ApiVersions 18, DescribeConfigs 32,
    // DescribeCluster 60.
    matches!(api_key, 1 | 2 | 3 | 9 | 10 | 15 | 16 | 18 | 32 | 60)
}

type Reply = Result<Option<BytesMut>, KafkaError>;

/// One request of a connection in progress.
struct Request {
    /// Not read-only (see [`read_only`]).
    barrier: bool,
    /// Still holds back what follows: set until the request is applied (a Produce whose
    /// batches are in place but whose fsync is still running no longer holds anything back)
    /// or, for every other request, until it finished.
    active: Arc<AtomicBool>,
    task: JoinHandle<Reply>,
}

/// The requests of one connection in progress, oldest first; aborted when the connection ends.
struct InFlight(VecDeque<Request>);

impl InFlight {
    /// Whether a barrier request is still active (a read-only request must wait).
    fn has_barrier(&self) -> bool {
        self.0
            .iter()
            .any(|r| r.barrier && r.active.load(Ordering::Acquire))
    }

    /// Whether any request is still active (a barrier request must wait).
    fn any_active(&self) -> bool {
        self.0.iter().any(|r| r.active.load(Ordering::Acquire))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        for r in &self.0 {
            r.task.abort();
        }
    }
}

/// Clears a request's barrier flag and wakes the connection loop (also when the request task
/// ends early or is aborted).
struct ReleaseBarrier(Arc<AtomicBool>, Arc<Notify>);

impl ReleaseBarrier {
    fn release(&self) {
        if self.0.swap(false, Ordering::AcqRel) {
            self.1.notify_one();
        }
    }
}

impl Drop for ReleaseBarrier {
    fn drop(&mut self) {
        self.release();
    }
}

/// Serves one connection until the peer closes it or sends something invalid. Frames are read
/// ahead while earlier requests run (at most [`IN_FLIGHT_MAX`]); read-only requests run
/// concurrently, others one at a time in order (see [`read_only`]); responses go out strictly
/// in request order, as Kafka requires.
async fn connection<N: Node>(broker: Arc<KafkaBroker<N>>, mut stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let host: Arc<str> = Arc::from(format!("/{}", peer.ip()));
    let max = broker.config().request_bytes_max;
    let mut buf = BytesMut::with_capacity(READ_BUFFER_BYTES);
    let mut inflight = InFlight(VecDeque::new());
    // Woken when a barrier request is applied, so the next one can start.
    let applied = Arc::new(Notify::new());
    let mut eof = false;
    loop {
        // Start the next whole frame if the ordering rules allow it now.
        let mut need_read = false;
        match check_frame(&buf, max) {
            Ok(FrameStatus::Complete { body_len }) => {
                let body = &buf[PREFIX_BYTES..PREFIX_BYTES + body_len];
                let barrier = body.len() < 2 || !read_only(i16::from_be_bytes([body[0], body[1]]));
                let can_start = inflight.0.len() < IN_FLIGHT_MAX
                    && if barrier {
                        !inflight.any_active()
                    } else {
                        !inflight.has_barrier()
                    };
                if can_start {
                    let mut frame = buf.split_to(PREFIX_BYTES + body_len);
                    let body = frame.split_off(PREFIX_BYTES).freeze();
                    let (broker, host) = (broker.clone(), host.clone());
                    let flag = Arc::new(AtomicBool::new(true));
                    let release = ReleaseBarrier(flag.clone(), applied.clone());
                    let task = tokio::spawn(async move {
                        let staged = broker.handle_staged(body, &host).await;
                        release.release();
                        match staged? {
                            Handled::Done(r) => Ok(r),
                            Handled::Applied(rest) => rest.await,
                        }
                    });
                    inflight.0.push_back(Request {
                        barrier,
                        active: flag,
                        task,
                    });
                    continue;
                }
            }
            Ok(FrameStatus::Incomplete { needed }) => {
                // `needed` ≤ max + 4: the limit was checked before reserving.
                if buf.capacity() < needed {
                    buf.reserve(needed - buf.len());
                }
                need_read = !eof;
            }
            Err(_) => {
                // Answer what came before the bad frame, then close.
                while let Some(r) = inflight.0.pop_front() {
                    match r.task.await {
                        Ok(Ok(Some(resp))) => {
                            if stream.write_all(&resp).await.is_err() {
                                return;
                            }
                        }
                        Ok(Ok(None)) => {}
                        _ => return,
                    }
                }
                return;
            }
        }
        if inflight.0.is_empty() {
            if !need_read {
                return; // peer closed and nothing left to answer
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
        // Wait for the oldest request (its response goes out next), reading ahead meanwhile.
        let read_ahead = need_read && inflight.0.len() < IN_FLIGHT_MAX;
        let front = async {
            match inflight.0.front_mut() {
                Some(r) => (&mut r.task).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            done = front => {
                inflight.0.pop_front();
                match done {
                    Ok(Ok(Some(resp))) => {
                        if stream.write_all(&resp).await.is_err() {
                            return;
                        }
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(_)) | Err(_) => return,
                }
            }
            r = stream.read_buf(&mut buf), if read_ahead => {
                match r {
                    Ok(0) | Err(_) => eof = true,
                    Ok(_) => {}
                }
            }
            _ = applied.notified() => {}
        }
    }
}
