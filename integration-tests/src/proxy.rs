//! A TCP proxy for fault injection: forwards every connection to an upstream address and can cut
//! all of them at once, as a network failure would, so tests can check what clients and broker
//! do when a connection dies with requests in flight. It can also stay cut (refusing every new
//! connection) until restored, for a network partition that heals.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};

/// A proxy; dropping it stops accepting and cuts every connection.
pub struct CuttingProxy {
    addr: SocketAddr,
    listener: Mutex<Option<TcpListener>>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    stopped: Arc<AtomicBool>,
    /// Set while the proxy is cut until restored; read and written under the `open` lock.
    refusing: Arc<AtomicBool>,
    cuts: AtomicUsize,
}

impl CuttingProxy {
    /// Binds a free loopback port (known before the upstream exists, so a broker can advertise
    /// it); connections wait in the backlog until [`CuttingProxy::forward_to`].
    pub fn bind() -> Result<CuttingProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
        Ok(CuttingProxy {
            addr: listener.local_addr()?,
            listener: Mutex::new(Some(listener)),
            open: Arc::default(),
            stopped: Arc::new(AtomicBool::new(false)),
            refusing: Arc::new(AtomicBool::new(false)),
            cuts: AtomicUsize::new(0),
        })
    }

    /// Starts forwarding every connection to `upstream`.
    pub fn forward_to(&self, upstream: SocketAddr) -> Result<()> {
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .context("the proxy is already forwarding")?;
        listener.set_nonblocking(true)?;
        let (accept_open, accept_stopped) = (self.open.clone(), self.stopped.clone());
        let accept_refusing = self.refusing.clone();
        thread::spawn(move || {
            while !accept_stopped.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((client, _)) => {
                        if let Err(error) =
                            forward(client, upstream, &accept_open, &accept_refusing)
                        {
                            eprintln!("proxy: {error:#}");
                        }
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(())
    }

    /// The address clients should use.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every forwarded connection now; new ones are still accepted.
    pub fn cut_all(&self) -> usize {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.len();
        for stream in open.drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
        self.cuts.fetch_add(count, Ordering::AcqRel);
        count
    }

    /// Closes every forwarded connection now and closes each new one as soon as it is accepted,
    /// until [`CuttingProxy::restore`]: a link that stays down, as in a network partition.
    pub fn cut_until_restored(&self) -> usize {
        {
            let _open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            self.refusing.store(true, Ordering::Release);
        }
        self.cut_all()
    }

    /// Forwards new connections again after [`CuttingProxy::cut_until_restored`].
    pub fn restore(&self) {
        let _open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        self.refusing.store(false, Ordering::Release);
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::Acquire)
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Release);
        self.cut_all();
    }
}

/// Connects `client` to `upstream` and pumps both ways, unless the proxy is refusing (checked
/// under the `open` lock, so a connection accepted while the proxy is being cut is closed too).
fn forward(
    client: TcpStream,
    upstream: SocketAddr,
    open: &Mutex<Vec<TcpStream>>,
    refusing: &AtomicBool,
) -> Result<()> {
    client.set_nonblocking(false)?;
    let server = TcpStream::connect(upstream).with_context(|| format!("connect {upstream}"))?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    {
        let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
        if refusing.load(Ordering::Acquire) {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            return Ok(());
        }
        open.push(client.try_clone()?);
        open.push(server.try_clone()?);
    }
    let (client_read, server_write) = (client.try_clone()?, server.try_clone()?);
    thread::spawn(move || pump(client_read, server_write));
    thread::spawn(move || pump(server, client));
    Ok(())
}

/// Copies bytes until either side closes, then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
