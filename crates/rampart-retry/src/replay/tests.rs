use super::*;
use bytes::Bytes;
use http::HeaderMap;
use http_body::Frame;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use std::convert::Infallible;

type Chunks = futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>;

fn chunks(parts: &[&'static [u8]], trailers: Option<HeaderMap>) -> StreamBody<Chunks> {
    let mut frames: Vec<_> = parts
        .iter()
        .map(|p| Ok(Frame::data(Bytes::from_static(p))))
        .collect();
    if let Some(t) = trailers {
        frames.push(Ok(Frame::trailers(t)));
    }
    StreamBody::new(futures_util::stream::iter(frames))
}

async fn collect<B>(body: ReplayBody<B>) -> (Bytes, Option<HeaderMap>)
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    let c = body.collect().await.expect("body reads");
    let trailers = c.trailers().cloned();
    (c.to_bytes(), trailers)
}

fn wrap<B: Body>(body: B, max: usize) -> (ReplayBody<B>, Option<Replayer<B>>) {
    let body = ReplayBody::new(body, max);
    let replayer = body.replayer();
    (body, replayer)
}

fn trailers() -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", "0".parse().unwrap());
    t
}

#[tokio::test]
async fn replay_plays_back_everything_the_first_attempt_read_then_reads_on() {
    let (mut first, replayer) = wrap(chunks(&[b"ab", b"cd", b"ef"], None), 1024);
    let replayer = replayer.unwrap();
    // The first attempt reads two chunks and fails mid-upload.
    let f1 = first.frame().await.unwrap().unwrap().into_data().unwrap();
    let f2 = first.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!((&f1[..], &f2[..]), (&b"ab"[..], &b"cd"[..]));
    drop(first);
    // The second attempt gets every byte, in order: two replayed, one read on.
    let (bytes, _) = collect(replayer.replay().unwrap()).await;
    assert_eq!(bytes, "abcdef");
    // And a third one too, entirely from the buffer.
    let (bytes, _) = collect(replayer.replay().unwrap()).await;
    assert_eq!(bytes, "abcdef");
}

#[tokio::test]
async fn trailers_are_replayed() {
    let (first, replayer) = wrap(chunks(&[b"x"], Some(trailers())), 1024);
    let (bytes, t) = collect(first).await;
    assert_eq!((bytes, t), (Bytes::from("x"), Some(trailers())));
    let (bytes, t) = collect(replayer.unwrap().replay().unwrap()).await;
    assert_eq!((bytes, t), (Bytes::from("x"), Some(trailers())));
}

#[tokio::test]
async fn body_longer_than_the_cap_is_sent_whole_once_and_not_replayed() {
    let (first, replayer) = wrap(chunks(&[b"0123", b"4567", b"89"], None), 8);
    let replayer = replayer.expect("no size hint: replayable until proven long");
    assert!(replayer.is_replayable());
    let (bytes, _) = collect(first).await;
    assert_eq!(bytes, "0123456789", "the first attempt is never truncated");
    assert!(!replayer.is_replayable());
    assert!(replayer.replay().is_none());
}

#[tokio::test]
async fn body_exactly_at_the_cap_is_replayable() {
    let (first, replayer) = wrap(chunks(&[b"0123", b"4567"], None), 8);
    collect(first).await;
    let (bytes, _) = collect(replayer.unwrap().replay().unwrap()).await;
    assert_eq!(bytes, "01234567");
}

#[tokio::test]
async fn body_whose_size_hint_exceeds_the_cap_is_passed_through() {
    let big = Full::new(Bytes::from(vec![7u8; 100]));
    let (first, replayer) = wrap(big, 99);
    assert!(replayer.is_none());
    assert_eq!(first.size_hint().exact(), Some(100));
    assert_eq!(collect(first).await.0.len(), 100);
}

#[tokio::test]
async fn empty_body_replays_as_empty_without_buffering() {
    let (first, replayer) = wrap(Empty::<Bytes>::new(), 8);
    assert!(first.is_end_stream());
    let again = replayer.unwrap().replay().unwrap();
    assert!(again.is_end_stream());
    assert_eq!(again.size_hint().exact(), Some(0));
    assert!(collect(again).await.0.is_empty());
}

#[tokio::test]
async fn replay_keeps_the_exact_size_hint() {
    let (first, replayer) = wrap(Full::new(Bytes::from_static(b"hello")), 64);
    assert_eq!(first.size_hint().exact(), Some(5));
    collect(first).await;
    let again = replayer.unwrap().replay().unwrap();
    assert_eq!(again.size_hint().exact(), Some(5));
    assert!(!again.is_end_stream());
    assert_eq!(collect(again).await.0, "hello");
}

#[tokio::test]
async fn an_older_copy_is_superseded_by_a_newer_attempt() {
    let (mut first, replayer) = wrap(chunks(&[b"a", b"b"], None), 64);
    let replayer = replayer.unwrap();
    first.frame().await.unwrap().unwrap();
    let second = replayer.replay().unwrap();
    // The first copy, still held by (say) a connection, cannot race the new one.
    let err = first.frame().await.unwrap().unwrap_err();
    assert!(err.to_string().contains("superseded"), "{err}");
    assert_eq!(collect(second).await.0, "ab");
}

#[tokio::test]
async fn a_failing_body_is_not_replayed() {
    let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
        Ok(Frame::data(Bytes::from_static(b"a"))),
        Err(std::io::Error::other("disk gone")),
    ];
    let (first, replayer) = wrap(StreamBody::new(futures_util::stream::iter(frames)), 64);
    let err = first.collect().await.unwrap_err();
    assert!(err.to_string().contains("disk gone"));
    assert!(replayer.unwrap().replay().is_none());
}

#[test]
fn clone_request_keeps_a_clone() {
    let sent = Replay::<u32>::prepare(&CloneRequest, 5, true);
    assert_eq!(Replay::<u32>::keep(&CloneRequest, &sent), Some(5));
    assert_eq!(Replay::<u32>::send(&CloneRequest, sent), 5);
    assert_eq!(Replay::<u32>::next(&CloneRequest, &5, 2), Some(5));
}

#[tokio::test]
async fn replay_http_sets_the_attempt_header_on_retries_only() {
    let r = ReplayHttp::new().attempt_header(http::HeaderName::from_static("x-retry-attempt"));
    let req = http::Request::put("/x")
        .header("a", "1")
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    let first = r.prepare(req, true);
    let kept = r.keep(&first);
    assert!(first.headers().get("x-retry-attempt").is_none());
    collect(first.into_body()).await;
    let kept = kept.unwrap();
    let second = r.next(&kept, 2).unwrap();
    assert_eq!(second.method(), http::Method::PUT);
    assert_eq!(second.uri(), "/x");
    assert_eq!(second.headers()["a"], "1");
    assert_eq!(second.headers()["x-retry-attempt"], "2");
    assert_eq!(collect(second.into_body()).await.0, "payload");
    let third = r.next(&kept, 3).unwrap();
    assert_eq!(third.headers()["x-retry-attempt"], "3");
    assert_eq!(third.headers().get_all("x-retry-attempt").iter().count(), 1);
}

#[tokio::test]
async fn replay_http_without_retries_passes_the_body_through() {
    let r = ReplayHttp::new();
    let req = http::Request::put("/x")
        .body(Full::new(Bytes::from_static(b"once")))
        .unwrap();
    let first = r.prepare(req, false);
    assert!(first.body().replayer().is_none(), "nothing buffered");
    assert_eq!(collect(first.into_body()).await.0, "once");
}
