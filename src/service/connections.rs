//! Client connections before gRPC sees them. At most a set number are open at once, and
//! at most a share of them from one address (one more is closed as soon as it is
//! accepted); a connection has a deadline to make its first request, which covers its
//! first byte, the TLS handshake, the HTTP/2 preface and the request's headers, so that
//! sockets that stall anywhere before a call cannot hold the server's places; accept
//! errors (out of descriptors, say) back off instead of spinning a core; Nagle's
//! algorithm is off. HTTP/2 keepalive, set on the server, then drops peers that stop
//! answering. Each connection carries a [`ConnectionInfo`] in its connect info: the
//! handle for a call to drop a peer that stopped reading its responses, whether it has
//! made a request ([`MarkStarted`], the outermost layer, says so), and what the request
//! layer ([`super::bodies`]) counts per connection.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::Connected;

/// What connections may hold and how soon they must make a call.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_open: usize,
    pub max_per_address: usize,
    pub start: Duration,
}

impl ConnectionLimits {
    /// The limits the server's settings give.
    pub fn of(config: &crate::config::ServeConfig) -> Self {
        Self {
            max_open: config.max_connections,
            max_per_address: config.max_connections_per_address,
            start: Duration::from_secs_f64(config.connection_start_seconds),
        }
    }
}

/// Shortest and longest pause after a failed accept.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));
/// Connections that have spoken and wait for the server to take them.
const HANDOFF_QUEUE: usize = 64;

/// An accepted connection; its places under the limits are given back when it closes.
pub struct Connection {
    transport: Transport,
    _place: OwnedSemaphorePermit,
    _share: AddressShare,
    info: ConnectionInfo,
    /// Ready once the connection is told to close: then reads and writes fail, and
    /// HTTP/2 lets go of the connection and every call on it.
    disconnected: Pin<Box<WaitForCancellationFutureOwned>>,
    /// When the connection is closed unless it has made a request by then.
    start_deadline: Pin<Box<Sleep>>,
}

enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Closes one connection from inside a call on it.
#[derive(Debug, Clone)]
pub struct Disconnect {
    token: CancellationToken,
    peer: SocketAddr,
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
            .map(|info| info.disconnect.clone())
    }
}

/// What a call learns of its connection, and what calls share on it.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    disconnect: Disconnect,
    started: Arc<AtomicBool>,
    /// Bytes of request bodies on this connection received and not yet finished.
    pub(super) body_bytes: Arc<AtomicUsize>,
}

/// Open connections per client address.
#[derive(Clone, Default)]
struct Addresses(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One connection's place in its address's share; given back on drop.
struct AddressShare {
    addresses: Addresses,
    address: IpAddr,
}

impl Addresses {
    fn take(&self, address: IpAddr, max: usize) -> Option<AddressShare> {
        let mut open = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = open.entry(address).or_default();
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(AddressShare {
            addresses: self.clone(),
            address,
        })
    }
}

impl Drop for AddressShare {
    fn drop(&mut self) {
        let mut open = self
            .addresses
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// The connections of `listener` that keep within `limits`, in the order they are
/// ready, through TLS when `tls` is given. Accepting stops, and the listener closes,
/// once `stop` resolves or the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> ReceiverStream<io::Result<Connection>> {
    let (handoff, taken) = mpsc::channel(HANDOFF_QUEUE);
    let places = Arc::new(Semaphore::new(limits.max_open));
    let addresses = Addresses::default();
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
            let Some(share) = addresses.take(peer.ip(), limits.max_per_address) else {
                tracing::warn!(%peer, max_per_address = limits.max_per_address, "this address holds as many connections as it may; closing a new one");
                continue;
            };
            let (handoff, tls) = (handoff.clone(), tls.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + limits.start;
                match tokio::time::timeout_at(deadline, open(stream, tls)).await {
                    Ok(Ok(transport)) => {
                        let connection = Connection::new(transport, peer, place, share, deadline);
                        handoff.send(Ok(connection)).await.ok();
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "a connection ended before it was ready")
                    }
                    Err(_) => tracing::debug!(
                        %peer,
                        deadline = ?limits.start,
                        "closed a connection that sent nothing or did not finish its TLS handshake"
                    ),
                }
            });
        }
    });
    ReceiverStream::new(taken)
}

/// The connection's transport once it has spoken: after its TLS handshake when TLS is on.
async fn open(stream: TcpStream, tls: Option<TlsAcceptor>) -> io::Result<Transport> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed before its first byte",
        ));
    }
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "TCP_NODELAY not set; responses may wait for ACKs");
    }
    Ok(match tls {
        Some(acceptor) => Transport::Tls(Box::new(acceptor.accept(stream).await?)),
        None => Transport::Plain(stream),
    })
}

impl Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl Connection {
    fn new(
        transport: Transport,
        peer: SocketAddr,
        place: OwnedSemaphorePermit,
        share: AddressShare,
        start_deadline: Instant,
    ) -> Self {
        let disconnect = Disconnect {
            token: CancellationToken::new(),
            peer,
        };
        Self {
            transport,
            _place: place,
            _share: share,
            disconnected: Box::pin(disconnect.token.clone().cancelled_owned()),
            start_deadline: Box::pin(tokio::time::sleep_until(start_deadline)),
            info: ConnectionInfo {
                disconnect,
                started: Arc::default(),
                body_bytes: Arc::default(),
            },
        }
    }

    /// Fails once the connection has been told to close, or has let its start deadline
    /// pass without a request.
    fn check_open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.disconnected.as_mut().poll(cx).is_ready() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the server dropped this client",
            ));
        }
        if !self.info.started.load(Ordering::Relaxed)
            && self.start_deadline.as_mut().poll(cx).is_ready()
        {
            tracing::debug!(peer = %self.info.disconnect.peer, "closed a connection that made no request in time");
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no request before the connection's start deadline",
            ));
        }
        Ok(())
    }

    fn transport(self: Pin<&mut Self>) -> Pin<&mut dyn AsyncReadWrite> {
        match &mut self.get_mut().transport {
            Transport::Plain(stream) => Pin::new(stream),
            Transport::Tls(stream) => Pin::new(stream.as_mut()),
        }
    }
}

trait AsyncReadWrite: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> AsyncReadWrite for T {}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check_open(cx)?;
        self.transport().poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check_open(cx)?;
        self.transport().poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.transport().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.transport().poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check_open(cx)?;
        self.transport().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.transport {
            Transport::Plain(stream) => stream.is_write_vectored(),
            Transport::Tls(stream) => stream.is_write_vectored(),
        }
    }
}

/// The outermost layer: a request on a connection ends its start deadline.
#[derive(Clone, Copy)]
pub struct MarkStarted;

impl<S> tower::Layer<S> for MarkStarted {
    type Service = Marking<S>;

    fn layer(&self, inner: S) -> Marking<S> {
        Marking { inner }
    }
}

#[derive(Clone)]
pub struct Marking<S> {
    inner: S,
}

impl<S, B> tower::Service<tonic::codegen::http::Request<B>> for Marking<S>
where
    S: tower::Service<tonic::codegen::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: tonic::codegen::http::Request<B>) -> S::Future {
        if let Some(connection) = request.extensions().get::<ConnectionInfo>() {
            connection.started.store(true, Ordering::Relaxed);
        }
        self.inner.call(request)
    }
}
