//! Uploads that run while a layer is still being compressed (`nixoci build
//! --push` with a cache): the compressed bytes go to the registry as an OCI
//! chunked upload (POST, a PATCH with `Content-Range` per chunk, PUT with the
//! digest) as they come out of the compressor, so that the push of a big
//! layer overlaps its compression instead of following it.
//!
//! This is only a head start. The blob file is written as always; a stream
//! that fails is abandoned (its session deleted), and the push that follows
//! the build uploads from the blob files whatever the registry does not have.
//! The digest is known only at the end, so a blob the registry turns out to
//! hold already is not committed a second time.
//!
//! The registry never slows the build: a stream may keep the compressor
//! waiting for at most `MAX_WAIT` in all, and is then abandoned to the push
//! after the build. Nor does a failed build leave blobs behind: a finished
//! stream commits its blob only once the whole build has succeeded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use super::client::{Body, Client, Reply};
use super::{connect, finish_upload, location, patch_chunk, start_session};
use super::{PushError, PushOptions, Reference};
use crate::digest::Digest;
use crate::layer::{BlobStream, BlobStreams};

/// Bytes per PATCH. A stream holds at most four chunks: one filling, one
/// queued, one on the wire and one on its way back for reuse.
const CHUNK: usize = 4 << 20;

/// Layers smaller than this (uncompressed) are pushed after the build: their
/// upload is short, and a session per layer would cost more than it saves.
const MIN_STREAMED_SIZE: u64 = 64 << 20;

/// The most a stream may keep the compressor waiting, in all.
const MAX_WAIT: Duration = Duration::from_secs(2);

/// The uploads of one build, all to one repository.
pub struct Streams {
    client: Arc<Client>,
    uploads: Mutex<Vec<Upload>>,
    verdict: Arc<Verdict>,
}

/// One stream's upload thread, and whether its compressor gave up on it.
struct Upload {
    thread: JoinHandle<Streamed>,
    fell_behind: Arc<AtomicBool>,
}

/// Whether the build succeeded, once it has ended: a stream commits only
/// after a yes.
#[derive(Default)]
struct Verdict {
    built: Mutex<Option<bool>>,
    decided: Condvar,
}

impl Verdict {
    fn give(&self, built: bool) {
        let mut slot = self.built.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(built);
        self.decided.notify_all();
    }

    fn wait(&self) -> bool {
        let mut slot = self.built.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(built) = *slot {
                return built;
            }
            slot = self.decided.wait(slot).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// How one stream ended.
enum Streamed {
    Uploaded { digest: Digest, bytes: u64 },
    Present,
    Abandoned(String),
}

/// What the streams did, for the summary.
#[derive(Debug, Default, Serialize)]
pub struct StreamReport {
    /// Layers uploaded during the build.
    pub uploaded: Vec<Digest>,
    /// Their bytes.
    pub bytes_uploaded: u64,
    /// Why each stream that failed did; their layers go with the push after the build.
    pub abandoned: Vec<String>,
    /// Streams whose layer the registry already held (found once it was complete).
    pub present: usize,
}

impl Streams {
    /// Streams to the repository of `reference`.
    pub fn connect(reference: &Reference, opts: &PushOptions) -> Result<Streams> {
        Ok(Streams {
            client: Arc::new(connect(reference, opts)?),
            uploads: Mutex::new(Vec::new()),
            verdict: Arc::default(),
        })
    }

    /// Tells the streams whether the build succeeded (they commit only if
    /// it did) and waits for them to end, except those the build left
    /// behind: they are abandoned where they stand.
    pub fn finish(&self, built: bool) -> StreamReport {
        self.verdict.give(built);
        let uploads = std::mem::take(&mut *self.uploads.lock().unwrap_or_else(|p| p.into_inner()));
        let mut report = StreamReport::default();
        for upload in uploads {
            if upload.fell_behind.load(Ordering::SeqCst) {
                report.abandoned.push(format!(
                    "the registry took in the layer more slowly than it was compressed (it kept the build waiting {}s)",
                    MAX_WAIT.as_secs()
                ));
                continue;
            }
            match upload.thread.join() {
                Ok(Streamed::Uploaded { digest, bytes }) => {
                    report.uploaded.push(digest);
                    report.bytes_uploaded += bytes;
                }
                Ok(Streamed::Present) => report.present += 1,
                Ok(Streamed::Abandoned(why)) => report.abandoned.push(why),
                Err(_) => report.abandoned.push("its upload thread panicked".into()),
            }
        }
        report
    }
}

impl BlobStreams for Streams {
    fn open(&self, size: u64) -> Option<Box<dyn BlobStream>> {
        if size < MIN_STREAMED_SIZE {
            return None;
        }
        let (sender, pieces) = mpsc::sync_channel(1);
        let (give_back, returned) = mpsc::channel();
        let client = Arc::clone(&self.client);
        let verdict = Arc::clone(&self.verdict);
        let thread = std::thread::Builder::new()
            .name("nixoci-stream".into())
            .spawn(move || upload(&client, pieces, give_back, &verdict))
            .ok()?;
        let fell_behind = Arc::new(AtomicBool::new(false));
        self.uploads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Upload {
                thread,
                fell_behind: Arc::clone(&fell_behind),
            });
        Some(Box::new(Stream {
            sender: Some(sender),
            returned,
            pending: Vec::with_capacity(CHUNK),
            waited: Duration::ZERO,
            fell_behind,
        }))
    }
}

enum Piece {
    Bytes(Vec<u8>),
    End(Digest),
}

/// The compressor's end of a stream.
struct Stream {
    /// `None` once the upload has ended early.
    sender: Option<SyncSender<Piece>>,
    /// Chunks the upload has sent, back for reuse (no fresh 4 MiB per chunk).
    returned: Receiver<Vec<u8>>,
    pending: Vec<u8>,
    /// How long the upload has kept the compressor waiting so far.
    waited: Duration,
    fell_behind: Arc<AtomicBool>,
}

impl Stream {
    /// Hands a piece to the upload; once the upload has kept the compressor
    /// waiting `MAX_WAIT` in all, the stream is abandoned instead.
    fn pass(&mut self, mut piece: Piece) {
        let Some(sender) = &self.sender else {
            return;
        };
        loop {
            match sender.try_send(piece) {
                Ok(()) => return,
                Err(TrySendError::Disconnected(_)) => break,
                Err(TrySendError::Full(back)) if self.waited < MAX_WAIT => {
                    piece = back;
                    let started = Instant::now();
                    std::thread::sleep(Duration::from_millis(2));
                    self.waited += started.elapsed();
                }
                Err(TrySendError::Full(_)) => {
                    self.fell_behind.store(true, Ordering::SeqCst);
                    break;
                }
            }
        }
        self.sender = None;
    }
}

impl BlobStream for Stream {
    fn send(&mut self, mut bytes: &[u8]) {
        while self.sender.is_some() && !bytes.is_empty() {
            let take = (CHUNK - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() == CHUNK {
                let next = self
                    .returned
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
                let full = std::mem::replace(&mut self.pending, next);
                self.pass(Piece::Bytes(full));
            }
        }
    }

    fn finish(mut self: Box<Self>, digest: &Digest) {
        if !self.pending.is_empty() {
            let last = std::mem::take(&mut self.pending);
            self.pass(Piece::Bytes(last));
        }
        self.pass(Piece::End(digest.clone()));
    }
}

/// Runs one chunked upload from the pieces it is sent.
fn upload(
    client: &Client,
    pieces: Receiver<Piece>,
    give_back: Sender<Vec<u8>>,
    verdict: &Verdict,
) -> Streamed {
    let mut session = match start_session(client, "") {
        Ok(reply) if reply.status == 202 => reply,
        Ok(reply) => {
            return Streamed::Abandoned(format!("starting an upload: {}", reply.registry_error()))
        }
        Err(e) => return Streamed::Abandoned(e.to_string()),
    };
    let ended = send_pieces(client, &mut session, &pieces, &give_back, verdict)
        .unwrap_or_else(|e| Streamed::Abandoned(e.to_string()));
    // From here on, a compressor still sending is not held up.
    drop(pieces);
    if !matches!(ended, Streamed::Uploaded { .. }) {
        cancel(client, &session);
    }
    ended
}

/// PATCHes every piece into `session` (which follows each reply's
/// Location); at the end, commits the blob unless the registry has it.
fn send_pieces(
    client: &Client,
    session: &mut Reply,
    pieces: &Receiver<Piece>,
    give_back: &Sender<Vec<u8>>,
    verdict: &Verdict,
) -> Result<Streamed, PushError> {
    let mut offset = 0;
    for piece in pieces.iter() {
        match piece {
            Piece::Bytes(mut bytes) => {
                let len = bytes.len() as u64;
                *session = patch_chunk(
                    client,
                    session,
                    offset,
                    &Body::Bytes(&bytes),
                    len,
                    &"a layer",
                )?;
                offset += len;
                bytes.clear();
                // The compressor may have finished already.
                let _ = give_back.send(bytes);
            }
            Piece::End(digest) => {
                if !verdict.wait() {
                    return Ok(Streamed::Abandoned(
                        "the build failed: nothing is committed".into(),
                    ));
                }
                let head = client.url(&format!("blobs/{digest}"));
                if client
                    .request("HEAD", &head, &[], &Body::Empty, true)?
                    .status
                    == 200
                {
                    return Ok(Streamed::Present);
                }
                finish_upload(client, session, &digest)?;
                return Ok(Streamed::Uploaded {
                    digest,
                    bytes: offset,
                });
            }
        }
    }
    // The layer failed: its writer went away without an end.
    Ok(Streamed::Abandoned("the layer was not built".into()))
}

/// Deletes an upload session that will not be finished (best effort: the
/// registry expires it anyway).
fn cancel(client: &Client, session: &Reply) {
    if let Ok(url) = location(client, session) {
        let _ = client.request("DELETE", &url, &[], &Body::Empty, false);
    }
}
