//! SHA-256 on a thread of its own, for several streams at once.
//!
//! A layer build hashes three streams: the tar (its diff_id), each store
//! path's NAR (checked against the store) and the compressed blob (its
//! digest). Writers hand their bytes over in blocks and go on; one thread
//! per layer hashes them, two streams at a time where the CPU can
//! ([`two_lanes`]), so hashing costs less CPU and never
//! holds the tar writer or the compressor back. Memory is bounded: a few
//! blocks in flight, reused rather than reallocated.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};

use super::two_lanes;

/// Bytes go to the hashing thread in blocks of this size (a multiple of
/// SHA-256's 64-byte block).
const PIPE_BLOCK: usize = 256 << 10;

/// Blocks the thread takes in ahead of hashing them, over all its streams
/// (with as many waiting in the channel: about 4 MiB at most).
const QUEUED_BLOCKS: usize = 8;

/// SHA-256 blocks hashed before the thread looks for new work, so that a
/// stream hashed alone picks up a partner as soon as one has bytes.
const STEP_BLOCKS: usize = 256;

/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
const INITIAL_STATE: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

enum Message {
    Open {
        stream: u64,
        give_back: Sender<Vec<u8>>,
    },
    Bytes {
        stream: u64,
        block: Vec<u8>,
    },
    Finish {
        stream: u64,
        reply: Sender<([u8; 32], u64)>,
    },
}

/// A hashing thread. Streams made by [`Sha256Lanes::stream`] share it; it
/// ends when the handle and every stream are gone.
pub struct Sha256Lanes {
    tx: SyncSender<Message>,
    next_stream: Cell<u64>,
}

impl Sha256Lanes {
    pub fn spawn() -> io::Result<Sha256Lanes> {
        let (tx, rx) = mpsc::sync_channel(QUEUED_BLOCKS);
        std::thread::Builder::new()
            .name("nixoci-sha256".into())
            .spawn(move || Worker::default().run(rx))?;
        Ok(Sha256Lanes {
            tx,
            next_stream: Cell::new(0),
        })
    }

    /// A new stream to hash.
    pub fn stream(&self) -> io::Result<BackgroundSha256> {
        let stream = self.next_stream.get();
        self.next_stream.set(stream + 1);
        let (give_back, returned) = mpsc::channel();
        self.tx
            .send(Message::Open { stream, give_back })
            .map_err(|_| stopped())?;
        Ok(BackgroundSha256 {
            stream,
            tx: self.tx.clone(),
            block: Vec::with_capacity(PIPE_BLOCK),
            returned,
        })
    }
}

fn stopped() -> io::Error {
    io::Error::other("the hashing thread stopped")
}

/// One stream's SHA-256 and byte count, computed on a [`Sha256Lanes`]
/// thread. The hash is the one hashing in place gives.
pub struct BackgroundSha256 {
    stream: u64,
    tx: SyncSender<Message>,
    /// Bytes not sent yet; only a full block is sent before `finish`.
    block: Vec<u8>,
    /// Blocks the thread is done with, to fill again.
    returned: Receiver<Vec<u8>>,
}

impl BackgroundSha256 {
    /// A stream on a hashing thread of its own.
    pub fn spawn() -> io::Result<BackgroundSha256> {
        Sha256Lanes::spawn()?.stream()
    }

    /// The SHA-256 and the byte count, once every byte is hashed.
    pub fn finish(mut self) -> io::Result<([u8; 32], u64)> {
        self.send_block()?;
        let (reply, answer) = mpsc::channel();
        self.tx
            .send(Message::Finish {
                stream: self.stream,
                reply,
            })
            .map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())
    }

    fn send_block(&mut self) -> io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let next = self
            .returned
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(PIPE_BLOCK));
        let block = std::mem::replace(&mut self.block, next);
        self.tx
            .send(Message::Bytes {
                stream: self.stream,
                block,
            })
            .map_err(|_| stopped())
    }
}

impl Write for BackgroundSha256 {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(PIPE_BLOCK - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == PIPE_BLOCK {
            self.send_block()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        // Blocks go when full; `finish` sends the rest.
        Ok(())
    }
}

/// One stream as the hashing thread sees it.
struct Lane {
    stream: u64,
    state: [u32; 8],
    /// Blocks received and not yet hashed; the front one from `offset`.
    /// Every block but a stream's last is a whole number of SHA-256 blocks
    /// (`BackgroundSha256` sends a partial one only when it finishes).
    queue: VecDeque<Vec<u8>>,
    offset: usize,
    count: u64,
    give_back: Sender<Vec<u8>>,
    finish: Option<Sender<([u8; 32], u64)>>,
}

impl Lane {
    fn new(stream: u64, give_back: Sender<Vec<u8>>) -> Lane {
        Lane {
            stream,
            state: INITIAL_STATE,
            queue: VecDeque::new(),
            offset: 0,
            count: 0,
            give_back,
            finish: None,
        }
    }

    /// How many whole SHA-256 blocks [`Lane::front`] can give.
    fn ready(&self) -> usize {
        self.queue
            .front()
            .map_or(0, |front| (front.len() - self.offset) / 64)
    }

    /// The hash state and the first `blocks` ready blocks, to hash into it.
    fn front(&mut self, blocks: usize) -> (&mut [u32; 8], &[u8]) {
        let bytes = &self.queue[0][self.offset..self.offset + 64 * blocks];
        (&mut self.state, bytes)
    }

    /// Bytes received and not hashed yet.
    fn backlog(&self) -> usize {
        self.queue.iter().map(Vec::len).sum::<usize>() - self.offset
    }

    fn consumed(&mut self, blocks: usize) {
        self.offset += 64 * blocks;
        if self.offset == self.queue[0].len() {
            self.pop();
        }
    }

    fn pop(&mut self) {
        if let Some(mut block) = self.queue.pop_front() {
            block.clear();
            // The stream may be gone already (it finished).
            let _ = self.give_back.send(block);
        }
        self.offset = 0;
    }

    /// Pads the last bytes as FIPS 180-4 (5.1.1) says and returns the hash.
    /// Only called once `ready` found no whole block: what is left is the
    /// stream's last block, and less than 64 bytes of it.
    fn digest(&mut self) -> [u8; 32] {
        let mut last = [0u8; 128];
        let tail = self.queue.front().map_or(0, |front| {
            let tail = &front[self.offset..];
            last[..tail.len()].copy_from_slice(tail);
            tail.len()
        });
        self.pop();
        last[tail] = 0x80;
        let blocks = if tail < 56 { 1 } else { 2 };
        last[64 * blocks - 8..64 * blocks].copy_from_slice(&(self.count * 8).to_be_bytes());
        two_lanes::compress(&mut self.state, &last[..64 * blocks]);
        let mut digest = [0u8; 32];
        for (bytes, word) in digest.chunks_exact_mut(4).zip(self.state) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        digest
    }
}

#[derive(Default)]
struct Worker {
    lanes: Vec<Lane>,
}

impl Worker {
    fn run(mut self, rx: Receiver<Message>) {
        loop {
            if self.should_wait() {
                match rx.recv() {
                    Ok(message) => self.receive(message),
                    Err(_) => return,
                }
            }
            if !self.take_in(&rx) {
                return;
            }
            let ready = self.ready_lanes();
            self.hash_step(&ready);
            self.finish_drained();
        }
    }

    /// Whether to wait for more bytes before hashing: when there is nothing
    /// to hash (a tail too short to hash waits for its stream's next bytes or
    /// its finish), or one stream alone that another open stream could pair
    /// with, while there is room to queue its blocks.
    fn should_wait(&self) -> bool {
        match *self.ready_lanes() {
            [] => true,
            [(i, _)] => {
                self.lanes[i].finish.is_none()
                    && self.lanes.len() > 1
                    && self.queued() < QUEUED_BLOCKS
            }
            _ => false,
        }
    }

    /// Takes in what has arrived, while fewer than [`QUEUED_BLOCKS`] blocks
    /// are queued, so that a stream finds a partner. False once every
    /// stream is gone: no one is left to take a hash.
    fn take_in(&mut self, rx: &Receiver<Message>) -> bool {
        while self.queued() < QUEUED_BLOCKS {
            match rx.try_recv() {
                Ok(message) => self.receive(message),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
        true
    }

    fn queued(&self) -> usize {
        self.lanes.iter().map(|lane| lane.queue.len()).sum()
    }

    fn receive(&mut self, message: Message) {
        match message {
            Message::Open { stream, give_back } => self.lanes.push(Lane::new(stream, give_back)),
            Message::Bytes { stream, block } => {
                if let Some(lane) = self.lane(stream) {
                    lane.count += block.len() as u64;
                    lane.queue.push_back(block);
                }
            }
            Message::Finish { stream, reply } => {
                if let Some(lane) = self.lane(stream) {
                    lane.finish = Some(reply);
                }
            }
        }
    }

    fn lane(&mut self, stream: u64) -> Option<&mut Lane> {
        self.lanes.iter_mut().find(|lane| lane.stream == stream)
    }

    /// The lanes with whole blocks to hash, as (index, blocks), the most
    /// behind first: pairing those keeps a big stream from being hashed
    /// alone while a small one takes its partner.
    fn ready_lanes(&self) -> Vec<(usize, usize)> {
        let mut ready: Vec<(usize, usize, usize)> = self
            .lanes
            .iter()
            .enumerate()
            .map(|(i, lane)| (i, lane.ready(), lane.backlog()))
            .filter(|&(_, blocks, _)| blocks > 0)
            .collect();
        ready.sort_by_key(|&(_, _, backlog)| std::cmp::Reverse(backlog));
        ready
            .into_iter()
            .map(|(i, blocks, _)| (i, blocks))
            .collect()
    }

    /// Hashes up to a step's worth: the first two lanes side by side if two
    /// have blocks, else the one.
    fn hash_step(&mut self, ready: &[(usize, usize)]) {
        match *ready {
            [] => {}
            [(i, blocks)] => {
                let lane = &mut self.lanes[i];
                let n = blocks.min(STEP_BLOCKS);
                let (state, blocks) = lane.front(n);
                two_lanes::compress(state, blocks);
                lane.consumed(n);
            }
            [(first, first_blocks), (second, second_blocks), ..] => {
                let n = first_blocks.min(second_blocks).min(STEP_BLOCKS);
                let (i, j) = (first.min(second), first.max(second));
                let (left, right) = self.lanes.split_at_mut(j);
                let (a, b) = (&mut left[i], &mut right[0]);
                let (a_state, a_blocks) = a.front(n);
                let (b_state, b_blocks) = b.front(n);
                two_lanes::compress_pair(a_state, a_blocks, b_state, b_blocks);
                a.consumed(n);
                b.consumed(n);
            }
        }
    }

    /// Replies to every finished stream whose bytes are all hashed.
    fn finish_drained(&mut self) {
        let mut i = 0;
        while i < self.lanes.len() {
            let lane = &mut self.lanes[i];
            if lane.finish.is_some() && lane.ready() == 0 {
                let digest = lane.digest();
                if let Some(reply) = lane.finish.take() {
                    // The stream may have stopped waiting (its build failed).
                    let _ = reply.send((digest, lane.count));
                }
                self.lanes.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    fn bytes(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect()
    }

    fn expected(bytes: &[u8]) -> ([u8; 32], u64) {
        (sha2::Sha256::digest(bytes).into(), bytes.len() as u64)
    }

    #[test]
    fn every_length_around_the_padding_and_block_edges() {
        for len in (0..=200).chain([
            PIPE_BLOCK - 1,
            PIPE_BLOCK,
            PIPE_BLOCK + 55,
            3 * PIPE_BLOCK + 64,
        ]) {
            let data = bytes(len, 7);
            let mut hasher = BackgroundSha256::spawn().unwrap();
            hasher.write_all(&data).unwrap();
            assert_eq!(hasher.finish().unwrap(), expected(&data), "{len} bytes");
        }
    }

    #[test]
    fn streams_sharing_a_thread_hash_as_if_alone() {
        // Three streams written in turns of odd sizes, as a layer's tar, NAR
        // and blob are; one of them dropped half-way (as when a build fails), one
        // finished early.
        let lanes = Sha256Lanes::spawn().unwrap();
        let data: Vec<Vec<u8>> = (0..4)
            .map(|i| {
                bytes(
                    [5 * PIPE_BLOCK + 3, 4 * PIPE_BLOCK + 17, 777, PIPE_BLOCK][i],
                    i as u32,
                )
            })
            .collect();
        let mut streams: Vec<_> = data.iter().map(|_| lanes.stream().unwrap()).collect();
        let mut written = [0usize; 4];
        let turns = [1000, 65_536, 1, 300_001, 64, 12_345];
        let mut turn = 0;
        while written.iter().zip(&data).any(|(&w, d)| w < d.len()) {
            for (i, stream) in streams.iter_mut().enumerate() {
                let end = (written[i] + turns[turn % turns.len()]).min(data[i].len());
                stream.write_all(&data[i][written[i]..end]).unwrap();
                written[i] = end;
                turn += 1;
            }
        }
        let mut streams = streams.into_iter();
        let (first, second, third, fourth) = (
            streams.next().unwrap(),
            streams.next().unwrap(),
            streams.next().unwrap(),
            streams.next().unwrap(),
        );
        assert_eq!(third.finish().unwrap(), expected(&data[2]));
        drop(second);
        let late = lanes.stream().unwrap();
        assert_eq!(first.finish().unwrap(), expected(&data[0]));
        assert_eq!(fourth.finish().unwrap(), expected(&data[3]));
        assert_eq!(late.finish().unwrap(), expected(&[]));
    }

    #[test]
    fn a_write_takes_at_most_one_block() {
        let mut hasher = BackgroundSha256::spawn().unwrap();
        assert_eq!(hasher.write(&[1; 100]).unwrap(), 100);
        assert_eq!(
            hasher.write(&vec![2; 2 * PIPE_BLOCK]).unwrap(),
            PIPE_BLOCK - 100
        );
        assert_eq!(hasher.write(&vec![3; 2 * PIPE_BLOCK]).unwrap(), PIPE_BLOCK);
    }

    /// A worker with one lane per entry of `blocks`, each given that many
    /// received blocks of `bytes` bytes; the senders it needs are returned.
    fn worker(blocks: &[usize], bytes: usize) -> (Worker, Vec<Receiver<Vec<u8>>>) {
        let mut worker = Worker::default();
        let mut returns = Vec::new();
        for (stream, &count) in blocks.iter().enumerate() {
            let (give_back, returned) = mpsc::channel();
            returns.push(returned);
            worker.receive(Message::Open {
                stream: stream as u64,
                give_back,
            });
            for _ in 0..count {
                worker.receive(Message::Bytes {
                    stream: stream as u64,
                    block: vec![0; bytes],
                });
            }
        }
        (worker, returns)
    }

    #[test]
    fn the_two_streams_furthest_behind_are_hashed_together() {
        let block = 64 * 300;
        let (mut worker, _returns) = worker(&[1, 3, 1], block);
        worker.receive(Message::Bytes {
            stream: 2,
            block: vec![0; 64 * 20],
        });
        assert_eq!(worker.ready_lanes(), [(1, 300), (2, 300), (0, 300)]);
        let ready = worker.ready_lanes();
        worker.hash_step(&ready);
        let step = 64 * STEP_BLOCKS;
        let backlogs: Vec<usize> = worker.lanes.iter().map(Lane::backlog).collect();
        assert_eq!(backlogs, [block, 3 * block - step, block + 64 * 20 - step]);
        // Lane 2 is least behind now, though it received more than lane 0.
        assert_eq!(
            worker.ready_lanes(),
            [(1, 300 - STEP_BLOCKS), (0, 300), (2, 300 - STEP_BLOCKS)]
        );
    }

    #[test]
    fn a_stream_alone_waits_for_a_partner_only_while_blocks_can_queue() {
        let (idle, _returns) = worker(&[0, 0], 64);
        assert!(idle.should_wait(), "nothing to hash");
        let (mut tail_only, _returns) = worker(&[1], 10);
        assert!(
            tail_only.should_wait(),
            "a tail waits for more or its finish"
        );
        let (reply, _answer) = mpsc::channel();
        tail_only.receive(Message::Finish { stream: 0, reply });
        tail_only.finish_drained();
        assert!(tail_only.lanes.is_empty(), "a finished tail is hashed");

        let (single, _returns) = worker(&[1], 64);
        assert!(!single.should_wait(), "no other stream to pair with");
        let (mut alone, _returns) = worker(&[1, 0], 64);
        assert!(alone.should_wait(), "the other stream may send bytes");
        let (reply, _answer) = mpsc::channel();
        alone.receive(Message::Finish { stream: 0, reply });
        assert!(!alone.should_wait(), "a finishing stream does not wait");
        let (full, _returns) = worker(&[QUEUED_BLOCKS - 1, 0], 64);
        assert!(full.should_wait(), "room for one more block");
        let (full, _returns) = worker(&[QUEUED_BLOCKS, 0], 64);
        assert!(!full.should_wait(), "no room to queue more");
        let (pair, _returns) = worker(&[1, 1], 64);
        assert!(!pair.should_wait(), "a pair is ready");
    }

    #[test]
    fn intake_stops_at_the_bound_and_ends_with_the_streams() {
        let (mut worker, _returns) = worker(&[0], 64);
        let (tx, rx) = mpsc::sync_channel(2 * QUEUED_BLOCKS);
        for _ in 0..QUEUED_BLOCKS + 3 {
            tx.send(Message::Bytes {
                stream: 0,
                block: vec![0; 64],
            })
            .unwrap();
        }
        let hash_one = |worker: &mut Worker| {
            let ready = worker.ready_lanes();
            worker.hash_step(&ready);
        };
        assert!(worker.take_in(&rx));
        assert_eq!(
            worker.queued(),
            QUEUED_BLOCKS,
            "the rest wait in the channel"
        );
        for _ in 0..3 {
            hash_one(&mut worker);
        }
        assert!(worker.take_in(&rx));
        assert_eq!(
            worker.queued(),
            QUEUED_BLOCKS,
            "room made, the rest taken in"
        );
        hash_one(&mut worker);
        assert!(worker.take_in(&rx), "an empty channel with senders left");
        assert_eq!(worker.queued(), QUEUED_BLOCKS - 1);
        drop(tx);
        assert!(!worker.take_in(&rx), "every sender is gone");
    }
}
