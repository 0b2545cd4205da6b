//! Client connections before gRPC sees them. At most a set number are open at once (one
//! more is closed as soon as it is accepted); a connection must send its first byte
//! within a deadline or be closed, so that silent sockets cannot hold the server's file
//! descriptors; accept errors (out of descriptors, say) back off instead of spinning a
//! core; Nagle's algorithm is off. HTTP/2 keepalive, set on the server, then drops
//! peers that stop answering.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// What a connection may hold and how soon it must speak.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_open: usize,
    pub first_byte: Duration,
}

/// Shortest and longest pause after a failed accept.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));
/// Connections that have spoken and wait for the server to take them.
const HANDOFF_QUEUE: usize = 64;

/// An accepted connection; its place under the limit is given back when it closes.
pub struct Connection {
    stream: TcpStream,
    _place: OwnedSemaphorePermit,
}

/// The connections of `listener` that keep within `limits`, in the order they speak.
/// Accepting stops, and the listener closes, once `stop` resolves or the stream is
/// dropped.
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> ReceiverStream<io::Result<Connection>> {
    let (handoff, taken) = mpsc::channel(HANDOFF_QUEUE);
    let places = Arc::new(Semaphore::new(limits.max_open));
    tokio::spawn(async move {
        let mut backoff = ACCEPT_BACKOFF.0;
        tokio::pin!(stop);
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = handoff.closed() => break,
                _ = &mut stop => break,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => {
                    backoff = ACCEPT_BACKOFF.0;
                    accepted
                }
                Err(error) => {
                    tracing::warn!(%error, ?backoff, "accepting a connection failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                    continue;
                }
            };
            let Ok(place) = places.clone().try_acquire_owned() else {
                tracing::warn!(%peer, max_open = limits.max_open, "connection limit reached; closing a new connection");
                continue;
            };
            let handoff = handoff.clone();
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                match tokio::time::timeout(limits.first_byte, stream.peek(&mut first)).await {
                    Ok(Ok(read)) if read > 0 => {
                        if let Err(error) = stream.set_nodelay(true) {
                            tracing::debug!(%error, "TCP_NODELAY not set; responses may wait for ACKs");
                        }
                        let connection = Connection {
                            stream,
                            _place: place,
                        };
                        handoff.send(Ok(connection)).await.ok();
                    }
                    Ok(_) => {}
                    Err(_) => tracing::debug!(
                        %peer,
                        deadline = ?limits.first_byte,
                        "closed a connection that sent nothing"
                    ),
                }
            });
        }
    });
    ReceiverStream::new(taken)
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
