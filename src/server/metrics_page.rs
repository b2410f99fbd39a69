//! The `/metrics` answer: the page written in parts on the render threads, a few parts
//! ahead of the reader, and sent in order as they are done, gzipped there when asked.
//!
//! Why not on the threads that serve requests, as a body written piece by piece when it is
//! read (as before): at 10,000 probes the page is 30 MB, about 45 ms of CPU to write and
//! 45 more to gzip, and every millisecond of it kept a serving thread from answering
//! `/-/healthy` or another scrape. A part is pure CPU work that never waits for the reader,
//! so a slow client holds no render thread, only the few parts written ahead for it.
//!
//! How a page gzipped in parts stays one gzip member: each part is compressed on its own as
//! raw deflate blocks ended by a sync flush (the last part by the final block), so the parts
//! join into one deflate stream, as pigz does; the checksum of the whole is combined from
//! the parts' own. Median of 15 curl fetches at 10,000 probes, two runs of each binary
//! alternating: plain 52-53 ms (was 74-77), gzip 101-102 ms (was 108-114).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use http_body::Frame;
use tokio::task::JoinHandle;

use crate::metrics::{Page, Part};

/// Bytes of page per part: large enough that the cost of handing a part to a thread and a
/// compressor's cold start do not show, small enough that the parts in flight are little
/// memory (about 3 MB).
const PART_BYTES: usize = 512 * 1024;

/// Threads that write pages.
const RENDER_THREADS: usize = 2;

/// Parts of one page handed to the render threads ahead of the reader: more than the
/// threads, so a thread that finishes a part finds the next one queued instead of waiting
/// for the reader to wake and hand it over (tens of microseconds each on a busy machine).
const PARTS_AHEAD: usize = RENDER_THREADS + 2;

/// The header of a gzip member: deflate, no name, no time, unknown system (RFC 1952).
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// The render threads: a runtime used only for its blocking pool, so its threads keep the
/// normal priority (the page builders lower theirs, and a thread cannot raise it again) and
/// a scrape does not wait behind a status page. A static: shared by all scrapes, never
/// dropped inside the serving runtime. `None` if it could not be built: parts are then
/// written on the serving runtime's blocking pool.
static RENDER_POOL: LazyLock<Option<tokio::runtime::Runtime>> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(RENDER_THREADS)
        // Scrapes come every 15 s or so: keep the threads between them.
        .thread_keep_alive(Duration::from_secs(120))
        .thread_name("metrics-render")
        .build()
        .ok()
});

fn spawn_render<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    match RENDER_POOL.as_ref() {
        Some(pool) => pool.spawn_blocking(work),
        None => tokio::task::spawn_blocking(work),
    }
}

/// One written part: its bytes as sent (compressed when gzipped) and, gzipped, the checksum
/// of its uncompressed bytes.
struct Written {
    bytes: Bytes,
    crc: Option<Crc>,
}

/// A `/metrics` page as an HTTP body, its parts written ahead of the reader on the render
/// threads, at most [`PARTS_AHEAD`] at a time.
pub(super) struct MetricsBody {
    page: Arc<Page>,
    /// Parts not yet handed to a thread.
    waiting: std::vec::IntoIter<Part>,
    /// Parts being written, in page order.
    writing: VecDeque<JoinHandle<std::io::Result<Written>>>,
    /// For a gzipped page: the checksum and length so far, and whether the header is out.
    gzip: Option<GzipMember>,
}

struct GzipMember {
    started: bool,
    crc: Crc,
}

impl MetricsBody {
    /// Lists the probes and renders their labels on a render thread (about 15 ms at 10,000
    /// probes), then starts writing the page. `None` if that thread panicked.
    pub(super) async fn start(
        metrics: Arc<crate::metrics::Metrics>,
        format: crate::metrics::Format,
        gzip: bool,
    ) -> Option<Self> {
        let page = spawn_render(move || metrics.page(format)).await.ok()?;
        Some(Self::new(page, gzip))
    }

    pub(super) fn new(page: Page, gzip: bool) -> Self {
        let waiting = page.parts(PART_BYTES).into_iter();
        Self {
            page: Arc::new(page),
            waiting,
            writing: VecDeque::new(),
            gzip: gzip.then(|| GzipMember {
                started: false,
                crc: Crc::new(),
            }),
        }
    }

    /// Hands parts to the render threads until [`PARTS_AHEAD`] are being written.
    fn keep_writing(&mut self) {
        while self.writing.len() < PARTS_AHEAD {
            let Some(part) = self.waiting.next() else {
                return;
            };
            let page = self.page.clone();
            let gzip = self.gzip.is_some();
            self.writing
                .push_back(spawn_render(move || write_part(&page, part, gzip)));
        }
    }
}

/// Writes `part` of `page`, compressed as a piece of one deflate stream when `gzip`.
fn write_part(page: &Page, part: Part, gzip: bool) -> std::io::Result<Written> {
    let mut text = String::with_capacity(PART_BYTES + PART_BYTES / 4);
    page.write(part, &mut text);
    if !gzip {
        return Ok(Written {
            bytes: Bytes::from(text),
            crc: None,
        });
    }
    let mut crc = Crc::new();
    crc.update(text.as_bytes());
    let flush = if part.is_last_of(page) {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    Ok(Written {
        bytes: Bytes::from(deflate(text.as_bytes(), flush)?),
        crc: Some(crc),
    })
}

/// `input` as raw deflate blocks, ended by `flush`: a sync flush ends on a byte boundary
/// with the stream open, so the next part's blocks may follow; `Finish` closes the stream.
fn deflate(input: &[u8], flush: FlushCompress) -> std::io::Result<Vec<u8>> {
    let mut compressor = Compress::new(Compression::fast(), false);
    let mut out = Vec::with_capacity(input.len() / 4 + 1024);
    loop {
        let consumed =
            usize::try_from(compressor.total_in()).map_or(input.len(), |n| n.min(input.len()));
        let status = compressor.compress_vec(&input[consumed..], &mut out, flush);
        let all_in = usize::try_from(compressor.total_in()).is_ok_and(|n| n == input.len());
        let done = match status {
            Ok(Status::StreamEnd) => true,
            // A flush is complete when all the input is in and room was left after it.
            Ok(_) => flush == FlushCompress::Sync && all_in && out.len() < out.capacity(),
            // Only a misuse of the stream fails: the scrape fails, never with a broken page.
            Err(error) => return Err(std::io::Error::other(error)),
        };
        if done {
            return Ok(out);
        }
        out.reserve(out.capacity());
    }
}

impl http_body::Body for MetricsBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(gzip) = &mut this.gzip
            && !gzip.started
        {
            gzip.started = true;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&GZIP_HEADER)))));
        }
        loop {
            this.keep_writing();
            let Some(front) = this.writing.front_mut() else {
                // Every part is out: the gzip trailer, or the end.
                return Poll::Ready(this.gzip.take().map(|gzip| {
                    let mut trailer = Vec::with_capacity(8);
                    trailer.extend_from_slice(&gzip.crc.sum().to_le_bytes());
                    trailer.extend_from_slice(&gzip.crc.amount().to_le_bytes());
                    Ok(Frame::data(Bytes::from(trailer)))
                }));
            };
            let written = match Pin::new(front).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(result) => result,
            };
            this.writing.pop_front();
            // A panic or a compressor error: the scrape fails rather than answers part of a
            // page (hyper ends the connection without the last chunk).
            let written = written.map_err(|error| {
                std::io::Error::other(format!("writing /metrics failed: {error}"))
            })??;
            if let (Some(gzip), Some(crc)) = (&mut this.gzip, &written.crc) {
                gzip.crc.combine(crc);
            }
            // A part may be empty (a family with no value for its probes): skip it.
            if !written.bytes.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(written.bytes))));
            }
        }
    }
}

/// Whether an `Accept-Encoding` header accepts gzip: `gzip` (or `x-gzip`) with a weight
/// above zero, or, when gzip is not named, `*` with one (RFC 9110, 12.5.3).
pub(super) fn accepts_gzip(accept_encoding: &str) -> bool {
    let (mut gzip, mut any) = (None, None);
    for (coding, q) in super::weighted(accept_encoding) {
        match coding.as_str() {
            "gzip" | "x-gzip" => gzip = Some(gzip.map_or(q, |seen: f32| seen.max(q))),
            "*" => any = Some(q),
            _ => {}
        }
    }
    gzip.or(any).is_some_and(|q| q > 0.0)
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use http_body_util::BodyExt;

    use super::*;
    use crate::metrics::Format;

    async fn body_of(page: Page, gzip: bool) -> Vec<u8> {
        let body = MetricsBody::new(page, gzip);
        body.collect().await.unwrap().to_bytes().to_vec()
    }

    /// The page from its first per-probe family on: the exporter-wide head (process memory,
    /// open files) changes between two renders.
    fn per_probe(page: &str) -> &str {
        let first = format!("# HELP {} ", crate::metrics::PROBE_FAMILIES[0].def.name);
        &page[page.find(&first).unwrap()..]
    }

    #[tokio::test]
    async fn a_gzipped_page_of_many_parts_is_one_gzip_member_holding_the_page() {
        let metrics = crate::metrics::tests::ran_probes(3000);
        for format in [Format::Text, Format::OpenMetrics] {
            let page = metrics.page(format);
            let parts = page.parts(PART_BYTES).len();
            assert!(parts > 4, "{parts} parts");
            let plain = String::from_utf8(body_of(page, false).await).unwrap();
            let gzipped = body_of(metrics.page(format), true).await;
            assert!(gzipped.len() < plain.len() / 5, "{} bytes", gzipped.len());
            // A single-member decoder checks the trailer's checksum and length, and stops at
            // the end of the first member: the whole page must be in it.
            let mut decoder = flate2::read::GzDecoder::new(&gzipped[..]);
            let mut unzipped = String::new();
            decoder.read_to_string(&mut unzipped).unwrap();
            assert!(decoder.into_inner().is_empty(), "bytes after the member");
            assert_eq!(per_probe(&unzipped), per_probe(&plain), "{format:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scrapes_at_once_and_one_dropped_halfway_each_get_their_whole_page() {
        let metrics = crate::metrics::tests::ran_probes(3000);
        let plain = String::from_utf8(body_of(metrics.page(Format::Text), false).await).unwrap();
        // A client gone after the first part: its parts in flight finish and are dropped.
        let mut dropped = MetricsBody::new(metrics.page(Format::Text), true);
        assert!(dropped.frame().await.is_some());
        drop(dropped);
        // Three at once queue more parts than the render threads.
        let (a, b, c) = tokio::join!(
            body_of(metrics.page(Format::Text), true),
            body_of(metrics.page(Format::Text), false),
            body_of(metrics.page(Format::Text), true),
        );
        for gzipped in [a, c] {
            let mut unzipped = String::new();
            flate2::read::GzDecoder::new(&gzipped[..])
                .read_to_string(&mut unzipped)
                .unwrap();
            assert_eq!(per_probe(&unzipped), per_probe(&plain));
        }
        assert_eq!(per_probe(&String::from_utf8(b).unwrap()), per_probe(&plain));
    }

    #[tokio::test]
    async fn a_page_without_probes_gzips_whole() {
        let metrics = crate::metrics::Metrics::new().unwrap();
        let gzipped = body_of(metrics.page(Format::OpenMetrics), true).await;
        let mut unzipped = String::new();
        flate2::read::GzDecoder::new(&gzipped[..])
            .read_to_string(&mut unzipped)
            .unwrap();
        assert!(unzipped.ends_with("# EOF\n"), "{unzipped}");
    }

    #[test]
    fn gzip_is_used_when_the_client_weighs_it_above_zero() {
        for accepted in [
            "gzip",
            "gzip, deflate, br",
            "br;q=1.0, gzip;q=0.8, *;q=0.1",
            "x-gzip",
            "*",
            "GZIP;Q=0.5",
            "identity;q=0, *;q=0.5",
        ] {
            assert!(accepts_gzip(accepted), "{accepted}");
        }
        for refused in [
            "",
            "identity",
            "br, deflate",
            "gzip;q=0",
            "gzip;q=0, *",
            "*;q=0",
        ] {
            assert!(!accepts_gzip(refused), "{refused}");
        }
    }
}
