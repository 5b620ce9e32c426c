//! The codec of a pack's records (FORMAT.md "Pack files", "Packs of an encrypted medium"):
//! a blob compressed (or not) and, on an encrypted medium, sealed with its record header as
//! associated data; and the way back, checked at every step.
//!
//! Invariants: every reader goes through one gate first ([`gate`]: lengths within the kind's
//! caps, the payload exactly as long as recorded, sealed records on an encrypted medium and
//! plaintext ones on a plaintext medium, never the other way round); decompression never
//! produces more than `raw_len` bytes, and a large listing is hashed in a streaming pass
//! (constant memory) before it is decompressed into memory, so a compression bomb costs no
//! memory.

use super::{check_lengths, record_header, BlobKind, Encoding, Entry};
use crate::crypt::{self, Crypt, Keys, SEAL_OVERHEAD};
use crate::ids::BlockId;

thread_local! {
    static FCTX: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { std::cell::RefCell::new(None) };
    static CCTX: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { std::cell::RefCell::new(None) };
    static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { std::cell::RefCell::new(None) };
}

/// Encode blob `id` of `kind` for its record: compressed as [`compress`] decides, then on an
/// encrypted medium sealed with the record's header as associated data.
pub fn encode(
    crypt: &Crypt,
    id: &BlockId,
    kind: BlobKind,
    raw: &[u8],
    level: i32,
) -> (Encoding, Vec<u8>) {
    seal(crypt, id, kind, raw.len(), compress(raw, level))
}

/// Encode blob `id` of `kind` for its record stored raw (known to be incompressible), then on
/// an encrypted medium sealed as [`encode`] seals.
pub fn encode_raw(crypt: &Crypt, id: &BlockId, kind: BlobKind, raw: &[u8]) -> (Encoding, Vec<u8>) {
    seal(crypt, id, kind, raw.len(), (Encoding::Raw, raw.to_vec()))
}

fn seal(
    crypt: &Crypt,
    id: &BlockId,
    kind: BlobKind,
    raw_len: usize,
    (enc, payload): (Encoding, Vec<u8>),
) -> (Encoding, Vec<u8>) {
    let Crypt::Sealed(keys) = crypt else {
        return (enc, payload);
    };
    let enc = enc.sealed();
    let stored = (payload.len() + SEAL_OVERHEAD) as u32;
    let head = record_header(id, kind, enc, raw_len as u32, stored);
    (
        enc,
        keys.seal(&crypt::blob_ad(&keys.media_id, &head), &payload),
    )
}

/// Compress a payload: zstd at `level`, unless that is not smaller than the raw bytes.
/// Compression contexts are kept per thread (creating one per block costs more than small
/// blocks take to compress).
pub fn compress(raw: &[u8], level: i32) -> (Encoding, Vec<u8>) {
    if incompressible(raw) {
        return (Encoding::Raw, raw.to_vec());
    }
    let compressed = CCTX.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = zstd::bulk::Compressor::new(level).ok().map(|z| (level, z));
        }
        c.as_mut().and_then(|(_, z)| z.compress(raw).ok())
    });
    match compressed {
        Some(c) if c.len() < raw.len() => (Encoding::Zstd, c),
        _ => (Encoding::Raw, raw.to_vec()),
    }
}

/// Whether a large block looks like random or already compressed data: three 4 KiB samples
/// (start, middle, end) that zstd's fastest level cannot shrink by 3%. Spares compressing
/// media files, archives and encrypted data only to store them raw.
pub fn incompressible(raw: &[u8]) -> bool {
    const SAMPLE: usize = 4096;
    if raw.len() < 16 * SAMPLE {
        return false;
    }
    let at = [0, raw.len() / 2 - SAMPLE / 2, raw.len() - SAMPLE];
    thread_local! {
        static FAST: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> = const { std::cell::RefCell::new(None) };
    }
    FAST.with(|z| {
        let mut z = z.borrow_mut();
        if z.is_none() {
            *z = zstd::bulk::Compressor::new(1).ok();
        }
        let Some(z) = z.as_mut() else { return false };
        at.iter().all(|&i| {
            let sample = &raw[i..i + SAMPLE];
            z.compress(sample)
                .map_or(true, |c| c.len() * 100 > sample.len() * 97)
        })
    })
}

/// Listings longer than this are hashed in a streaming pass before they are decompressed
/// into memory, so that a bomb (a small payload that claims a large `raw_len` and inflates
/// to garbage) is refused without allocating its length.
const STREAM_CHECK_ABOVE: u32 = 4 << 20;

/// The largest zstd window a reader accepts (2^24 = 16 MiB; level 19 uses 2^23). A streaming
/// decoder allocates the window a frame asks for.
const MAX_WINDOW_LOG: u32 = 24;

/// Decompress `payload` in a streaming pass without keeping the output: check it inflates to
/// exactly `e.raw_len` bytes whose SHA-256 is `e.id`. Memory: the window and a 64 KiB buffer.
fn check_stream(crypt: &Crypt, e: &Entry, payload: &[u8]) -> Result<(), String> {
    use std::io::Read;
    let mut d = zstd::stream::read::Decoder::with_buffer(payload)
        .map_err(|err| format!("cannot decompress: {err}"))?;
    d.window_log_max(MAX_WINDOW_LOG)
        .map_err(|err| format!("cannot decompress: {err}"))?;
    let mut hash = crypt.hasher();
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        let n = d
            .read(&mut buf)
            .map_err(|err| format!("cannot decompress: {err}"))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > e.raw_len as u64 {
            return Err(format!(
                "inflates to more than the {} bytes recorded",
                e.raw_len
            ));
        }
        hash.update(&buf[..n]);
    }
    if total != e.raw_len as u64 {
        return Err(format!("length {total} where {} was recorded", e.raw_len));
    }
    if hash.finish() != e.id {
        return Err(mismatch(crypt).into());
    }
    Ok(())
}

pub(super) fn mismatch(crypt: &Crypt) -> &'static str {
    match crypt {
        Crypt::Plain => "content does not match its SHA-256",
        Crypt::Sealed(_) => "content does not match its keyed id",
    }
}

/// How a record's payload is to be opened, once its lengths and its kind of encoding have
/// been checked against the medium's protection ([`gate`]).
enum Gate<'a> {
    /// A plaintext record on a plaintext medium: the payload is the encoded blob.
    Plain,
    /// A sealed record on an encrypted medium: opened with these keys and associated data.
    Sealed(&'a Keys, [u8; 76]),
}

const NOT_AUTHENTIC: &str = "does not authenticate (altered, moved, or not this medium's record)";

/// The checks every reader of a record makes before it touches the payload: the length rules
/// of [`check_lengths`], a payload exactly `stored_len` long, and a sealed record on an
/// encrypted medium, a plaintext one on a plaintext medium (never the other way round: nothing
/// can be downgraded).
fn gate<'a>(crypt: &'a Crypt, e: &Entry, payload: &[u8]) -> Result<Gate<'a>, String> {
    check_lengths(e)?;
    if payload.len() != e.stored_len as usize {
        return Err(format!(
            "payload of {} bytes where {} were recorded",
            payload.len(),
            e.stored_len
        ));
    }
    match (crypt, e.encoding.is_sealed()) {
        (Crypt::Plain, false) => Ok(Gate::Plain),
        (Crypt::Sealed(keys), true) => {
            let head = record_header(&e.id, e.kind, e.encoding, e.raw_len, e.stored_len);
            Ok(Gate::Sealed(keys, crypt::blob_ad(&keys.media_id, &head)))
        }
        (Crypt::Plain, true) => Err("an encrypted record on a plaintext medium".into()),
        (Crypt::Sealed(_), false) => Err(
            "a plaintext record on an encrypted medium (not written by this medium's writer)"
                .into(),
        ),
    }
}

/// A blob in a frame is read through its frame (`frame::open`, `frame::blob`), never as a
/// record of its own.
fn not_framed(e: &Entry) -> Result<(), String> {
    if e.encoding.inner() == Encoding::Frame {
        return Err("a blob in a frame, not a record of its own".into());
    }
    Ok(())
}

/// Check a record as `verify` does: on an encrypted medium, that its seal authenticates
/// (the medium returns exactly what the writer sealed: tag only, nothing decrypted); on a
/// plaintext one, [`decode`] and its hash.
pub fn check(crypt: &Crypt, e: &Entry, payload: &[u8]) -> Result<(), String> {
    not_framed(e)?;
    match gate(crypt, e, payload)? {
        Gate::Plain => decode(crypt, e, payload).map(drop),
        Gate::Sealed(keys, ad) if keys.authentic(&ad, payload) => Ok(()),
        Gate::Sealed(..) => Err(NOT_AUTHENTIC.into()),
    }
}

/// Decode a payload and check it against its id. Allocates at most `e.raw_len` bytes, which
/// is checked against the kind's cap first.
///
/// On an encrypted medium the payload must be sealed and open with the record's header as
/// associated data (a plaintext record there is refused, and a sealed one on a plaintext
/// medium); then it is decoded like a plaintext payload (its keyed id is authenticated with
/// it, and not recomputed).
pub fn decode(crypt: &Crypt, e: &Entry, payload: &[u8]) -> Result<Vec<u8>, String> {
    not_framed(e)?;
    let inner: std::borrow::Cow<[u8]> = match gate(crypt, e, payload)? {
        Gate::Plain => std::borrow::Cow::Borrowed(payload),
        Gate::Sealed(keys, ad) => {
            std::borrow::Cow::Owned(keys.open(&ad, payload).ok_or(NOT_AUTHENTIC)?)
        }
    };
    let encoding = e.encoding.inner();
    if encoding == Encoding::Zstd && e.raw_len > STREAM_CHECK_ABOVE {
        check_stream(crypt, e, &inner)?;
    }
    let raw = match encoding {
        Encoding::Zstd => DCTX
            .with(|d| {
                let mut d = d.borrow_mut();
                if d.is_none() {
                    *d = zstd::bulk::Decompressor::new().ok();
                }
                d.as_mut().map(|z| z.decompress(&inner, e.raw_len as usize))
            })
            .unwrap_or_else(|| zstd::bulk::decompress(&inner, e.raw_len as usize))
            .map_err(|err| format!("cannot decompress: {err}"))?,
        _ => inner.into_owned(),
    };
    if raw.len() != e.raw_len as usize {
        return Err(format!(
            "length {} where {} was recorded",
            raw.len(),
            e.raw_len
        ));
    }
    // A sealed record's id is authenticated with it (the record header is associated data
    // of its seal, and only the writer that hashed the content could seal it): not hashed
    // again. A plaintext record's id is its only check.
    if !e.encoding.is_sealed() && crypt.block_id(&raw) != e.id {
        return Err(mismatch(crypt).into());
    }
    Ok(raw)
}

/// Compress a frame's content at `level`, with zstd's content checksum (a frame is opened as
/// a whole, so damage anywhere in it is caught before any blob is taken out).
pub(super) fn compress_frame(content: &[u8], level: i32) -> Option<Vec<u8>> {
    FCTX.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = zstd::bulk::Compressor::new(level)
                .ok()
                .and_then(|mut z| {
                    z.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
                        .ok()?;
                    Some(z)
                })
                .map(|z| (level, z));
        }
        c.as_mut().and_then(|(_, z)| z.compress(content).ok())
    })
}

/// Whether a sealed frame record's payload (`head`: its record header) authenticates, the
/// tag alone checked; on a plaintext medium, an error (its blobs are hashed instead).
pub(super) fn check_frame_seal(crypt: &Crypt, head: &Entry, payload: &[u8]) -> Result<(), String> {
    if head.encoding.inner() != Encoding::Frame {
        return Err("not a frame record".into());
    }
    match gate(crypt, head, payload)? {
        Gate::Sealed(keys, ad) if keys.authentic(&ad, payload) => Ok(()),
        Gate::Sealed(..) => Err(NOT_AUTHENTIC.into()),
        Gate::Plain => Err("a plaintext frame has no seal".into()),
    }
}

/// Open a frame record's payload (`head`: the frame's record header) and inflate it to its
/// content: the lengths checked first (the content at most [`super::frame::FRAME_MAX`]), at
/// most `head.raw_len` bytes allocated, and exactly that many produced.
pub(super) fn open_frame(crypt: &Crypt, head: &Entry, payload: &[u8]) -> Result<Vec<u8>, String> {
    if head.encoding.inner() != Encoding::Frame {
        return Err("not a frame record".into());
    }
    let inner: std::borrow::Cow<[u8]> = match gate(crypt, head, payload)? {
        Gate::Plain => std::borrow::Cow::Borrowed(payload),
        Gate::Sealed(keys, ad) => {
            std::borrow::Cow::Owned(keys.open(&ad, payload).ok_or(NOT_AUTHENTIC)?)
        }
    };
    let content = DCTX
        .with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = zstd::bulk::Decompressor::new().ok();
            }
            d.as_mut()
                .map(|z| z.decompress(&inner, head.raw_len as usize))
        })
        .unwrap_or_else(|| zstd::bulk::decompress(&inner, head.raw_len as usize))
        .map_err(|err| format!("cannot decompress frame: {err}"))?;
    if content.len() != head.raw_len as usize {
        return Err(format!(
            "frame inflates to {} bytes where {} were recorded",
            content.len(),
            head.raw_len
        ));
    }
    Ok(content)
}
