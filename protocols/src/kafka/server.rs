//! The TCP listener and the per-connection handler.
//!
//! Each connection reads whole frames (the length is checked against `socket.request.max.bytes`
//! before the body is buffered), serves them one at a time in arrival order (Kafka requires
//! responses in request order), and writes the responses. A frame that is invalid, or a request
//! the broker cannot decode, closes that connection only. A timer task runs the group
//! coordinator's timeouts. Dropping the [`KafkaServer`] (or [`KafkaServer::shutdown`]) stops
//! accepting and ends every connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use super::frame::{check_frame, FrameStatus, PREFIX_BYTES};
use super::{KafkaBroker, KafkaError};
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

/// Serves one connection until the peer closes it or sends something invalid.
async fn connection<N: Node>(broker: Arc<KafkaBroker<N>>, mut stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let host = format!("/{}", peer.ip());
    let max = broker.config().request_bytes_max;
    let mut buf = BytesMut::with_capacity(READ_BUFFER_BYTES);
    loop {
        match check_frame(&buf, max) {
            Ok(FrameStatus::Complete { body_len }) => {
                let mut frame = buf.split_to(PREFIX_BYTES + body_len);
                let body = frame.split_off(PREFIX_BYTES).freeze();
                match broker.handle(body, &host).await {
                    Ok(Some(resp)) => {
                        if stream.write_all(&resp).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(_) => return,
                }
            }
            Ok(FrameStatus::Incomplete { needed }) => {
                // `needed` ≤ max + 4: the limit was checked before reserving.
                if buf.capacity() < needed {
                    buf.reserve(needed - buf.len());
                }
                match stream.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
            Err(_) => return,
        }
    }
}
