//! TCP servers with a fixed behaviour per connection, recording what each client sent.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the server does with each connection.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Reads one line, then writes this text (include the `\n`) and closes.
    Reply(&'static str),
    /// Reads one line, waits this long (the slow answer under test), then replies and
    /// closes.
    ReplyAfter(Duration, &'static str),
    /// Writes this text right after accepting, then closes.
    Greet(&'static str),
    /// Writes this text right after accepting, then holds the connection open.
    GreetAndHold(&'static str),
    /// Writes `n` bytes of `x` without a newline and holds the connection open.
    Flood(usize),
    /// Reads everything until the client closes; never writes.
    Silent,
}

/// A running server; stops on drop.
pub struct TcpServer {
    pub addr: SocketAddr,
    /// Bytes received per finished connection.
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    task: JoinHandle<()>,
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TcpServer {
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    pub fn received(&self) -> Vec<Vec<u8>> {
        self.received.lock().unwrap().clone()
    }
}

pub async fn start(behaviour: Behaviour) -> TcpServer {
    start_on("127.0.0.1:0", behaviour).await
}

pub async fn start_on(bind: &str, behaviour: Behaviour) -> TcpServer {
    let listener = TcpListener::bind(bind).await.expect("bind tcp server");
    let addr = listener.local_addr().unwrap();
    let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let log = received.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let log = log.clone();
            let behaviour = behaviour.clone();
            tokio::spawn(async move {
                let got = serve(stream, behaviour).await;
                log.lock().unwrap().push(got);
            });
        }
    });
    TcpServer {
        addr,
        received,
        task,
    }
}

async fn serve(stream: TcpStream, behaviour: Behaviour) -> Vec<u8> {
    let mut got = Vec::new();
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    match behaviour {
        Behaviour::Reply(text) => {
            let _ = read.read_until(b'\n', &mut got).await;
            let _ = write.write_all(text.as_bytes()).await;
        }
        Behaviour::ReplyAfter(delay, text) => {
            let _ = read.read_until(b'\n', &mut got).await;
            tokio::time::sleep(delay).await;
            let _ = write.write_all(text.as_bytes()).await;
        }
        Behaviour::Greet(text) => {
            let _ = write.write_all(text.as_bytes()).await;
        }
        Behaviour::GreetAndHold(text) => {
            let _ = write.write_all(text.as_bytes()).await;
            let _ = read.read_to_end(&mut got).await;
        }
        Behaviour::Flood(n) => {
            let _ = write.write_all(&vec![b'x'; n]).await;
            let _ = read.read_to_end(&mut got).await;
        }
        Behaviour::Silent => {
            let _ =
                tokio::time::timeout(Duration::from_secs(120), read.read_to_end(&mut got)).await;
        }
    }
    got
}

/// A TCP port on loopback that a check watches, switched up and down by the test. From the
/// allocator (below the ephemeral range), so it is still free when [`Port::up`] binds it
/// again.
pub struct Port {
    pub port: u16,
    listener: Option<std::net::TcpListener>,
}

impl Port {
    /// Up (listening).
    pub fn new() -> Port {
        let port = crate::cluster::free_port();
        Port {
            port,
            listener: Some(std::net::TcpListener::bind(("127.0.0.1", port)).unwrap()),
        }
    }
    pub fn down(&mut self) {
        self.listener = None;
    }
    pub fn up(&mut self) {
        self.listener = Some(std::net::TcpListener::bind(("127.0.0.1", self.port)).unwrap());
    }
}

impl Default for Port {
    fn default() -> Self {
        Port::new()
    }
}
