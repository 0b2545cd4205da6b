//! Client connections before gRPC sees them. At most a set number are open at once (one
//! more is closed as soon as it is accepted); a connection must send its first byte
//! within a deadline or be closed, so that silent sockets cannot hold the server's file
//! descriptors; accept errors (out of descriptors, say) back off instead of spinning a
//! core; Nagle's algorithm is off. HTTP/2 keepalive, set on the server, then drops
//! peers that stop answering. Each connection carries a [`Disconnect`] handle in its
//! connect info, for a call to drop a peer that stopped reading its responses.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TlsConnectInfo};

/// What a connection may hold and how soon it must speak.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_open: usize,
    pub first_byte: Duration,
}

impl ConnectionLimits {
    /// The limits the server's settings give.
    pub fn of(config: &crate::config::ServeConfig) -> Self {
        Self {
            max_open: config.max_connections,
            first_byte: Duration::from_secs_f64(config.connection_start_seconds),
        }
    }
}

/// Shortest and longest pause after a failed accept.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));
/// Connections that have spoken and wait for the server to take them.
const HANDOFF_QUEUE: usize = 64;

/// An accepted connection; its place under the limit is given back when it closes.
pub struct Connection {
    stream: TcpStream,
    _place: OwnedSemaphorePermit,
    disconnect: Disconnect,
    /// Ready once `disconnect` is used: then reads and writes fail, and HTTP/2 lets go of
    /// the connection and every call on it.
    disconnected: Pin<Box<WaitForCancellationFutureOwned>>,
}

/// Closes one connection from inside a call on it.
#[derive(Debug, Clone)]
pub struct Disconnect {
    token: CancellationToken,
    peer: std::net::SocketAddr,
}

impl Disconnect {
    pub fn now(&self) {
        tracing::warn!(peer = %self.peer, "dropping a client connection");
        self.token.cancel();
    }

    /// The handle of the connection `extensions` (a request's) came on; none for a
    /// request that came some other way (a test's in-memory transport).
    pub fn of(extensions: &tonic::Extensions) -> Option<Self> {
        extensions
            .get::<ConnectionInfo>()
            .or_else(|| {
                extensions
                    .get::<TlsConnectInfo<ConnectionInfo>>()
                    .map(TlsConnectInfo::get_ref)
            })
            .map(|info| info.disconnect.clone())
    }
}

/// What a call learns of its connection.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    disconnect: Disconnect,
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
                        let disconnect = Disconnect {
                            token: CancellationToken::new(),
                            peer,
                        };
                        let connection = Connection {
                            stream,
                            _place: place,
                            disconnected: Box::pin(disconnect.token.clone().cancelled_owned()),
                            disconnect,
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
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnectionInfo {
            disconnect: self.disconnect.clone(),
        }
    }
}

impl Connection {
    /// Fails once the connection has been told to close.
    fn check_open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.disconnected.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the server dropped this client",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check_open(cx)?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check_open(cx)?;
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
        self.check_open(cx)?;
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
