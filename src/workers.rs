//! The bounded pool of threads that runs transcription outside the async runtime.
//! The voice front door ([`crate::voice::Voice`]) queues every utterance here (unary
//! calls, stream finals and interims), so that all voice traffic shares one bound.
//!
//! A fixed number of workers take jobs from a queue of fixed depth. A job that finds the
//! queue full is refused at once ([`PoolFull`]), so that overload turns into a fast,
//! retryable error instead of ever-growing latency. A job whose caller has gone (its
//! [`JobHandle`] dropped: the client cancelled or disconnected) is skipped when a worker
//! reaches it, so it frees its place without costing any work. Work that may be skipped
//! (interim results) runs only on an idle pool, and owed work (finals) that finds the
//! queue full stops a running one instead of being refused: an interim never takes the
//! place a final needs.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;
type WaitObserver = Box<dyn Fn(Duration) + Send + Sync>;

/// The queue was full; the job was not taken.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("all {workers} transcription workers are busy and {queued} utterances are already waiting; retry with backoff")]
pub struct PoolFull {
    pub workers: usize,
    pub queued: usize,
}

/// The job panicked, so it has no result.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the transcription worker failed on this utterance")]
pub struct JobFailed;

/// How many threads and how many waiting jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSize {
    pub workers: usize,
    pub queue_depth: usize,
}

impl Default for PoolSize {
    /// One worker per core: decoding a step is mostly single-threaded, so parallel
    /// utterances use the cores best. The queue holds four utterances per worker, a few
    /// seconds of waiting at most.
    fn default() -> Self {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            workers,
            queue_depth: 4 * workers,
        }
    }
}

/// Counts the pool exposes for monitoring, and the spare jobs running.
#[derive(Default)]
struct Load {
    queued: AtomicUsize,
    running: AtomicUsize,
    /// The spare jobs that workers are running.
    spares: Mutex<Vec<RunningSpare>>,
    /// Told how long each job waited in the queue before a worker took it.
    queue_wait: OnceLock<WaitObserver>,
}

/// A spare job on a worker, whose place owed work may take.
#[derive(Debug)]
struct RunningSpare {
    cancelled: Arc<AtomicBool>,
    /// Its place has gone to owed work already.
    given_up: bool,
}

impl Load {
    /// Stops one running spare job (unless its caller already has) and takes its place;
    /// false if every one has given its place up already.
    fn take_a_spare_place(&self) -> bool {
        let mut spares = self
            .spares
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(spare) = spares.iter_mut().find(|spare| !spare.given_up) else {
            return false;
        };
        spare.given_up = true;
        spare.cancelled.store(true, Ordering::Release);
        true
    }
}

/// Where a job stands; a job leaves `QUEUED` exactly once, to run or to be cancelled.
const QUEUED: u8 = 0;
const STARTED: u8 = 1;
const CANCELLED: u8 = 2;

/// A fixed pool of worker threads with a bounded queue. Cloning shares the pool.
#[derive(Clone)]
pub struct WorkerPool {
    sender: Sender<Job>,
    size: PoolSize,
    load: Arc<Load>,
}

/// The pending result of a submitted job; await it for the result. Dropping it before a
/// worker has started the job cancels the job and gives its place in the queue back;
/// dropping it later raises the job's cancellation flag, which a long job polls.
pub struct JobHandle<T> {
    result: oneshot::Receiver<T>,
    state: Arc<AtomicU8>,
    cancelled: Arc<AtomicBool>,
    load: Arc<Load>,
}

impl<T> Future for JobHandle<T> {
    type Output = Result<T, JobFailed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.result).poll(cx).map_err(|_| JobFailed)
    }
}

impl<T> Drop for JobHandle<T> {
    fn drop(&mut self) {
        self.cancelled.store(true, Ordering::Relaxed);
        if self
            .state
            .compare_exchange(QUEUED, CANCELLED, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.load.queued.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl WorkerPool {
    /// Starts the worker threads.
    pub fn new(size: PoolSize) -> Self {
        // A job always passes through the queue on its way to a worker, so the queue holds
        // at least one.
        let size = PoolSize {
            workers: size.workers.max(1),
            queue_depth: size.queue_depth.max(1),
        };
        let (sender, receiver) = channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for n in 0..size.workers {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("transcribe-{n}"))
                .spawn(move || work(&receiver))
                .expect("spawning a worker thread");
        }
        Self {
            sender,
            size,
            load: Arc::new(Load::default()),
        }
    }

    /// Queues `job`, or refuses it at once when the queue is full and no spare job runs
    /// whose place it could take (stopping it, if its caller has not already); the queue
    /// then holds at most one job per worker over its depth. The job gets the flag that
    /// says its caller has gone.
    pub fn submit<T: Send + 'static>(
        &self,
        job: impl FnOnce(Arc<AtomicBool>) -> T + Send + 'static,
    ) -> Result<JobHandle<T>, PoolFull> {
        let admitted = self.admit(|queued| queued < self.size.queue_depth);
        let admitted = admitted.or_else(|queued| {
            if self.load.take_a_spare_place() {
                tracing::debug!("stopped an interim transcription to make room for a final");
                Ok(self.load.queued.fetch_add(1, Ordering::AcqRel))
            } else {
                Err(queued)
            }
        });
        self.queue(job, admitted, false)
    }

    /// Queues `job` only when a worker is free and nothing waits: work that may be
    /// skipped (interim results) never takes a place that work owed (finals) needs, and
    /// owed work that finds the queue full stops it.
    pub fn submit_spare<T: Send + 'static>(
        &self,
        job: impl FnOnce(Arc<AtomicBool>) -> T + Send + 'static,
    ) -> Result<JobHandle<T>, PoolFull> {
        let idle = || self.load.running.load(Ordering::Acquire) < self.size.workers;
        let admitted = self.admit(|queued| queued == 0 && idle());
        self.queue(job, admitted, true)
    }

    /// Takes a queue place when `admit` allows it; the error is the queue's length.
    fn admit(&self, admit: impl Fn(usize) -> bool) -> Result<usize, usize> {
        self.load
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                admit(queued).then_some(queued + 1)
            })
    }

    fn queue<T: Send + 'static>(
        &self,
        job: impl FnOnce(Arc<AtomicBool>) -> T + Send + 'static,
        admitted: Result<usize, usize>,
        spare: bool,
    ) -> Result<JobHandle<T>, PoolFull> {
        if let Err(queued) = admitted {
            return Err(PoolFull {
                workers: self.size.workers,
                queued,
            });
        }
        let (sender, result) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(QUEUED));
        let cancelled = Arc::new(AtomicBool::new(false));
        let handle = JobHandle {
            result,
            state: state.clone(),
            cancelled: cancelled.clone(),
            load: self.load.clone(),
        };
        let load = self.load.clone();
        let queued_at = Instant::now();
        let wrapped: Job = Box::new(move || {
            if state
                .compare_exchange(QUEUED, STARTED, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                return;
            }
            if let Some(observe) = load.queue_wait.get() {
                observe(queued_at.elapsed());
            }
            let spares = || {
                load.spares
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
            };
            // Listed before it counts as running, so that owed work that sees it busy can stop it.
            if spare {
                spares().push(RunningSpare {
                    cancelled: cancelled.clone(),
                    given_up: false,
                });
            }
            load.queued.fetch_sub(1, Ordering::AcqRel);
            load.running.fetch_add(1, Ordering::AcqRel);
            let flag = cancelled.clone();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(flag)));
            if spare {
                spares().retain(|running| !Arc::ptr_eq(&running.cancelled, &cancelled));
            }
            load.running.fetch_sub(1, Ordering::AcqRel);
            match outcome {
                // A send fails only when the caller left while the job ran; nothing to do.
                Ok(value) => drop(sender.send(value)),
                Err(_) => tracing::error!("a transcription job panicked; the worker goes on"),
            }
        });
        self.sender
            .send(wrapped)
            .expect("worker threads live as long as the pool");
        Ok(handle)
    }

    pub fn size(&self) -> PoolSize {
        self.size
    }

    /// Tells `observe` how long each job from now on waited for a worker (the signal an
    /// autoscaler follows); only the first observer given is kept.
    pub fn observe_queue_wait(&self, observe: impl Fn(Duration) + Send + Sync + 'static) {
        if self.load.queue_wait.set(Box::new(observe)).is_err() {
            tracing::debug!("the pool's queue wait is observed already");
        }
    }

    /// Jobs waiting for a worker.
    pub fn queued(&self) -> usize {
        self.load.queued.load(Ordering::Acquire)
    }

    /// Jobs a worker is running.
    pub fn running(&self) -> usize {
        self.load.running.load(Ordering::Acquire)
    }
}

fn work(receiver: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, never while running one.
        let job = match receiver.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(),
            // Every sender is gone: the pool was dropped.
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A one-worker pool whose worker runs a job that returns 1 once `release` is sent.
    fn held_pool(queue_depth: usize) -> (WorkerPool, Sender<()>, JobHandle<i32>) {
        let pool = WorkerPool::new(PoolSize {
            workers: 1,
            queue_depth,
        });
        let (release, blocked) = channel::<()>();
        let held = pool
            .submit(move |_| {
                blocked.recv().ok();
                1
            })
            .unwrap();
        // Wait until the worker holds the job, so the queue is empty again.
        while pool.running() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        (pool, release, held)
    }

    #[tokio::test]
    async fn runs_jobs_and_refuses_when_full() {
        let (pool, release, held) = held_pool(1);
        let queued = pool.submit(|_| 2).unwrap();
        let refused = pool.submit(|_| 3).err().expect("queue is full");
        assert_eq!((refused.workers, refused.queued), (1, 1));
        release.send(()).unwrap();
        assert_eq!(held.await.unwrap(), 1);
        assert_eq!(queued.await.unwrap(), 2);
    }

    #[tokio::test]
    async fn spare_work_waits_for_an_idle_pool_and_never_takes_a_queue_place() {
        let (pool, release, held) = held_pool(4);
        assert!(pool.submit_spare(|_| 2).is_err(), "the only worker is busy");
        assert_eq!(pool.queued(), 0);
        release.send(()).unwrap();
        // The worker counts as idle again by the time the result arrives.
        assert_eq!(held.await.unwrap(), 1);
        assert_eq!(pool.submit_spare(|_| 3).unwrap().await.unwrap(), 3);
    }

    #[tokio::test]
    async fn owed_work_that_finds_the_queue_full_stops_a_spare_job() {
        let pool = WorkerPool::new(PoolSize {
            workers: 1,
            queue_depth: 1,
        });
        let spare = pool
            .submit_spare(|cancelled| {
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                while !cancelled.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                cancelled.load(Ordering::Relaxed)
            })
            .unwrap();
        while pool.running() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let first = pool.submit(|_| 1).unwrap();
        let second = pool.submit(|_| 2).expect("the spare job gives way");
        assert!(pool.submit(|_| 3).is_err(), "no spare job is left to stop");
        assert!(spare.await.unwrap(), "the spare job was not stopped");
        assert_eq!((first.await.unwrap(), second.await.unwrap()), (1, 2));
    }

    #[tokio::test]
    async fn a_spare_job_whose_caller_left_still_lends_its_place_until_it_stops() {
        let pool = WorkerPool::new(PoolSize {
            workers: 1,
            queue_depth: 1,
        });
        let (stop, stopped) = channel::<()>();
        let spare = pool.submit_spare(move |_| stopped.recv().ok()).unwrap();
        while pool.running() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // The caller leaves, but the job has not yet seen it.
        drop(spare);
        let first = pool.submit(|_| 1).unwrap();
        let second = pool
            .submit(|_| 2)
            .expect("the leaving spare job lends its place");
        stop.send(()).unwrap();
        assert_eq!((first.await.unwrap(), second.await.unwrap()), (1, 2));
    }

    #[tokio::test]
    async fn dropped_handles_skip_their_work() {
        let (pool, release, held) = held_pool(4);
        let ran = Arc::new(AtomicUsize::new(0));
        let cancelled: Vec<_> = (0..4)
            .map(|_| {
                let ran = ran.clone();
                pool.submit(move |_| ran.fetch_add(1, Ordering::SeqCst))
                    .unwrap()
            })
            .collect();
        assert!(pool.submit(|_| 0).is_err(), "the queue is full");
        drop(cancelled);
        // Cancelled jobs gave their places back while the worker is still busy.
        assert_eq!(pool.queued(), 0);
        let after = pool.submit(|_| 7).unwrap();
        release.send(()).unwrap();
        held.await.unwrap();
        assert_eq!(after.await.unwrap(), 7);
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn dropping_the_handle_of_a_running_job_raises_its_flag() {
        let pool = WorkerPool::new(PoolSize {
            workers: 1,
            queue_depth: 1,
        });
        let (started, running) = channel::<()>();
        let (stopped, saw_flag) = channel::<bool>();
        let job = pool
            .submit(move |cancelled| {
                started.send(()).unwrap();
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                while !cancelled.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                stopped.send(cancelled.load(Ordering::Relaxed)).unwrap();
            })
            .unwrap();
        running.recv().unwrap();
        drop(job);
        assert!(saw_flag.recv().unwrap());
    }

    #[tokio::test]
    async fn a_panicking_job_leaves_the_worker_alive() {
        let pool = WorkerPool::new(PoolSize {
            workers: 1,
            queue_depth: 1,
        });
        let failed = pool.submit(|_| -> u32 { panic!("bad job") }).unwrap();
        assert!(failed.await.is_err());
        assert_eq!(pool.submit(|_| 5).unwrap().await.unwrap(), 5);
        assert_eq!(pool.running(), 0);
    }
}
