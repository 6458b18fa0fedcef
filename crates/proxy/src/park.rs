//! Idle keep-alive connections, parked outside the async runtime.
//!
//! A connection served by hyper holds an 8 KiB read buffer, an 8 KiB write buffer,
//! its task and its reactor registration for as long as it is open. nginx frees its
//! buffers while a keep-alive connection waits, and so 10,000 idle clients cost it
//! under 1 KiB each. Here a connection that has been idle for a while
//! ([`crate::conn`] decides when) is taken back from hyper, deregistered from the
//! runtime (`into_std`), and handed to the parker: one thread with one `epoll`
//! (mio) that holds nothing per connection but the socket, a few words of metadata
//! and its deadline. Nothing of a parked connection stays in the runtime's heap, so
//! the allocator can give the freed buffers back to the kernel.
//!
//! When a parked socket becomes readable (the next request, or the client's close),
//! it is deregistered and handed back: `wake` spawns a fresh task that serves it.
//! A socket parked longer than the idle timeout is closed, as hyper would have.
use std::collections::VecDeque;
use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

/// The token of the waker that tells the thread about new parks and shutdown.
const WAKER: Token = Token(usize::MAX);
/// The least time between two returns of freed memory to the kernel.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// What happens to a parked connection: the callbacks run on the parker's thread.
pub trait Resume<M>: Send + 'static {
    /// The socket became readable (or was closed by the peer): serve it again.
    fn wake(&self, stream: TcpStream, meta: M);
    /// The socket was closed here (idle timeout or shutdown).
    fn closed(&self, meta: M);
}

/// The handle the runtime parks connections through.
pub struct Parker<M> {
    inbox: Mutex<Vec<(TcpStream, M)>>,
    waker: Waker,
    stop: AtomicBool,
    parked: AtomicUsize,
}

struct Slot<M> {
    stream: TcpStream,
    meta: M,
    serial: u64,
}

impl<M: Send + 'static> Parker<M> {
    /// Starts the parker's thread. Parked sockets are closed after `idle`.
    pub fn start(idle: Duration, resume: impl Resume<M>) -> io::Result<Arc<Parker<M>>> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let parker = Arc::new(Parker {
            inbox: Mutex::new(Vec::new()),
            waker,
            stop: AtomicBool::new(false),
            parked: AtomicUsize::new(0),
        });
        let thread = parker.clone();
        std::thread::Builder::new()
            .name("proxy-parker".into())
            .stack_size(256 * 1024)
            .spawn(move || thread.run(poll, idle, resume))?;
        Ok(parker)
    }

    /// Parks an idle connection (a non-blocking socket no runtime watches).
    pub fn park(&self, stream: TcpStream, meta: M) {
        self.parked.fetch_add(1, Ordering::Relaxed);
        lock(&self.inbox).push((stream, meta));
        if let Err(error) = self.waker.wake() {
            tracing::warn!("cannot wake the connection parker: {error}");
        }
    }

    /// Connections parked now.
    pub fn parked(&self) -> usize {
        self.parked.load(Ordering::Relaxed)
    }

    /// Closes every parked connection and ends the thread.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
    }

    fn run(&self, mut poll: Poll, idle: Duration, resume: impl Resume<M>) {
        let mut slots: Vec<Option<Slot<M>>> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        // Every deadline is `idle` after its park, so arrival order is deadline order.
        let mut deadlines: VecDeque<(Instant, usize, u64)> = VecDeque::new();
        let mut serial = 0u64;
        let mut events = Events::with_capacity(256);
        // Parks since memory was last given back, and when that was.
        let mut untrimmed = 0usize;
        let mut trimmed = Instant::now();
        loop {
            let before = Instant::now();
            let expiry = deadlines.front().map(|(deadline, _, _)| *deadline);
            let trim = (untrimmed > 0).then_some(trimmed + TRIM_EVERY);
            let timeout = expiry
                .into_iter()
                .chain(trim)
                .min()
                .map(|at| at.saturating_duration_since(before));
            if let Err(error) = poll.poll(&mut events, timeout) {
                if error.kind() != io::ErrorKind::Interrupted {
                    tracing::error!("connection parker stopped: {error}");
                    // Hand everything back rather than strand it.
                    self.stop.store(true, Ordering::Relaxed);
                }
            }
            if self.stop.load(Ordering::Relaxed) {
                let waiting = std::mem::take(&mut *lock(&self.inbox));
                let held = slots
                    .drain(..)
                    .flatten()
                    .map(|slot| (slot.stream, slot.meta));
                for (stream, meta) in held.chain(waiting) {
                    drop(stream);
                    self.parked.fetch_sub(1, Ordering::Relaxed);
                    resume.closed(meta);
                }
                return;
            }
            for event in &events {
                let index = event.token().0;
                if event.token() == WAKER {
                    continue;
                }
                let Some(slot) = slots.get_mut(index).and_then(Option::take) else {
                    continue;
                };
                free.push(index);
                let _ = poll
                    .registry()
                    .deregister(&mut SourceFd(&slot.stream.as_raw_fd()));
                self.parked.fetch_sub(1, Ordering::Relaxed);
                resume.wake(slot.stream, slot.meta);
            }
            let arrived = std::mem::take(&mut *lock(&self.inbox));
            let now = Instant::now();
            for (stream, meta) in arrived {
                let index = free.pop().unwrap_or_else(|| {
                    slots.push(None);
                    slots.len() - 1
                });
                let registered = poll.registry().register(
                    &mut SourceFd(&stream.as_raw_fd()),
                    Token(index),
                    Interest::READABLE,
                );
                if let Err(error) = registered {
                    // Cannot watch it: serve it again instead of losing it.
                    tracing::debug!("cannot park a connection: {error}");
                    free.push(index);
                    self.parked.fetch_sub(1, Ordering::Relaxed);
                    resume.wake(stream, meta);
                    continue;
                }
                serial += 1;
                slots[index] = Some(Slot {
                    stream,
                    meta,
                    serial,
                });
                deadlines.push_back((now + idle, index, serial));
                untrimmed += 1;
            }
            while let Some(&(deadline, index, serial)) = deadlines.front() {
                if deadline > now {
                    break;
                }
                deadlines.pop_front();
                let current = slots
                    .get(index)
                    .and_then(Option::as_ref)
                    .is_some_and(|slot| slot.serial == serial);
                if !current {
                    continue;
                }
                if let Some(slot) = slots[index].take() {
                    free.push(index);
                    let _ = poll
                        .registry()
                        .deregister(&mut SourceFd(&slot.stream.as_raw_fd()));
                    drop(slot.stream);
                    self.parked.fetch_sub(1, Ordering::Relaxed);
                    resume.closed(slot.meta);
                }
            }
            // The parked connections' buffers were freed in the runtime; give the
            // pages back: at most once a second, and within a second of a park.
            if untrimmed > 0 && now >= trimmed + TRIM_EVERY {
                let released = crate::memory::release_freed();
                tracing::trace!(parks = untrimmed, released, "freed memory returned");
                untrimmed = 0;
                trimmed = Instant::now();
            }
            // Give back what a burst of parks grew, once it is over.
            if slots.len() > 1024 && free.len() == slots.len() {
                slots = Vec::new();
                free = Vec::new();
                deadlines.shrink_to_fit();
            }
        }
    }
}

/// A mutex's guard, poisoned or not (what it guards stays consistent).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::mpsc;

    struct Channel(Mutex<mpsc::Sender<(&'static str, Option<TcpStream>, u32)>>);

    impl Resume<u32> for Channel {
        fn wake(&self, stream: TcpStream, meta: u32) {
            let _ = lock(&self.0).send(("wake", Some(stream), meta));
        }
        fn closed(&self, meta: u32) {
            let _ = lock(&self.0).send(("closed", None, meta));
        }
    }

    fn pair(listener: &std::net::TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (client, server)
    }

    #[test]
    fn wakes_on_bytes_and_on_close_and_closes_after_the_idle_time() {
        let (sender, receiver) = mpsc::channel();
        let parker =
            Parker::start(Duration::from_millis(400), Channel(Mutex::new(sender))).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut talker, server) = pair(&listener);
        let (closer, server2) = pair(&listener);
        let (mut silent, server3) = pair(&listener);
        parker.park(server, 1);
        parker.park(server2, 2);
        parker.park(server3, 3);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(parker.parked(), 3);

        talker.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        let (what, stream, meta) = receiver.recv_timeout(Duration::from_secs(2)).unwrap();
        assert_eq!((what, meta), ("wake", 1));
        // The bytes are still in the socket, for whoever serves it next.
        let mut stream = stream.unwrap();
        stream.set_nonblocking(false).unwrap();
        let mut read = [0u8; 16];
        stream.read_exact(&mut read).unwrap();
        assert_eq!(&read, b"GET / HTTP/1.1\r\n");

        drop(closer);
        let (what, _, meta) = receiver.recv_timeout(Duration::from_secs(2)).unwrap();
        assert_eq!((what, meta), ("wake", 2));

        let (what, _, meta) = receiver.recv_timeout(Duration::from_secs(2)).unwrap();
        assert_eq!((what, meta), ("closed", 3));
        assert_eq!(parker.parked(), 0);
        let mut buf = [0u8; 1];
        assert_eq!(silent.read(&mut buf).unwrap(), 0, "closed by the parker");

        // Shutdown closes what is still parked.
        let (_client, server4) = pair(&listener);
        parker.park(server4, 4);
        parker.stop();
        let (what, _, meta) = receiver.recv_timeout(Duration::from_secs(2)).unwrap();
        assert_eq!((what, meta), ("closed", 4));
    }
}
