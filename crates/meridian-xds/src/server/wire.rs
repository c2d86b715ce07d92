//! ADS on the wire, without tonic's response encoder.
//!
//! tonic's generated server encodes a stream's responses into one buffer
//! that lives as long as the stream and keeps the capacity of its largest
//! burst (the initial sync: tens of KB), so 10,000 idle Envoys would hold
//! hundreds of MB of empty buffers. Here each response is encoded into its
//! own exact-size frame, freed once HTTP/2 has written it; an idle stream
//! holds no response buffer at all. Requests still go through tonic's
//! decoder, with a small initial buffer.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest,
};
use futures::Stream;
use http_body::Frame;
use prost::Message;
use tonic::codec::{BufferSettings, Streaming};
use tonic::codegen::{http, BoxFuture, Service};
use tonic::server::NamedService;
use tonic::Status;
use tonic_prost::ProstDecoder;

use super::XdsServer;
use crate::metrics::Variant;
use crate::stream::SotwOut;
use tokio_stream::wrappers::ReceiverStream;

const SOTW: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// Requests are small (a few names and a nonce), except a reconnecting
/// Envoy's first one; the buffer grows for that one as needed.
const REQUEST_BUFFER: usize = 1024;

/// The ADS service (both methods) for tonic's router.
#[derive(Clone)]
pub(crate) struct AdsWire {
    pub server: XdsServer,
    pub max_request_bytes: usize,
}

impl NamedService for AdsWire {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

impl Service<http::Request<tonic::body::Body>> for AdsWire {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let server = self.server.clone();
        let max = self.max_request_bytes;
        Box::pin(async move {
            let path = req.uri().path().to_string();
            let (parts, body) = req.into_parts();
            let settings = BufferSettings::new(REQUEST_BUFFER, 32 * 1024);
            let result = match path.as_str() {
                SOTW => {
                    let decoder = ProstDecoder::<DiscoveryRequest>::new(settings);
                    let streaming = Streaming::new_request(decoder, body, None, Some(max));
                    let rx = server.open_sotw_raw(streaming, Variant::SotwAds, None);
                    Ok(FramedBody::response(Box::pin(ReceiverStream::new(rx))))
                }
                DELTA => {
                    let decoder = ProstDecoder::<DeltaDiscoveryRequest>::new(settings);
                    let streaming = Streaming::new_request(decoder, body, None, Some(max));
                    let req = tonic::Request::from_http(http::Request::from_parts(parts, streaming));
                    server
                        .delta_aggregated_resources(req)
                        .await
                        .map(|r| FramedBody::response(r.into_inner()))
                }
                other => Err(Status::unimplemented(format!("no method {other}"))),
            };
            Ok(result.unwrap_or_else(|status| status.into_http()))
        })
    }
}

/// A response as the chunks of its gRPC length-prefixed frame.
trait IntoFrames {
    fn into_frames(self) -> Vec<Bytes>;
}

impl IntoFrames for DeltaDiscoveryResponse {
    fn into_frames(self) -> Vec<Bytes> {
        vec![frame(&self)]
    }
}

impl IntoFrames for SotwOut {
    fn into_frames(self) -> Vec<Bytes> {
        SotwOut::into_frames(self)
    }
}

/// A gRPC response body: each message's frame, then the status trailers.
struct FramedBody<S: ?Sized> {
    queued: std::collections::VecDeque<Bytes>,
    done: bool,
    messages: Pin<Box<S>>,
}

impl<S: ?Sized, M> FramedBody<S>
where
    S: Stream<Item = Result<M, Status>> + Send + 'static,
    M: IntoFrames + Send + 'static,
{
    fn response(messages: Pin<Box<S>>) -> http::Response<tonic::body::Body> {
        let body = FramedBody {
            queued: Default::default(),
            done: false,
            messages,
        };
        let mut res = http::Response::new(tonic::body::Body::new(body));
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        res
    }
}

/// The gRPC length-prefixed frame of one message, in an allocation of
/// exactly its size.
fn frame<M: Message>(m: &M) -> Bytes {
    let len = m.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    m.encode(&mut buf).expect("capacity reserved for the whole message");
    buf.freeze()
}

fn trailers(status: &Status) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    if status.add_header(&mut map).is_err() {
        map.insert("grpc-status", http::HeaderValue::from_static("13"));
    }
    map
}

impl<S: ?Sized, M> http_body::Body for FramedBody<S>
where
    S: Stream<Item = Result<M, Status>> + Send + 'static,
    M: IntoFrames + Send + 'static,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(chunk) = self.queued.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        match self.messages.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(m))) => {
                let mut chunks = m.into_frames().into_iter();
                let first = chunks.next().unwrap_or_default();
                self.queued.extend(chunks);
                Poll::Ready(Some(Ok(Frame::data(first))))
            }
            Poll::Ready(Some(Err(status))) => {
                self.done = true;
                Poll::Ready(Some(Ok(Frame::trailers(trailers(&status)))))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Ok(Frame::trailers(trailers(&Status::ok(""))))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.queued.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
    use envoy_types::pb::google::protobuf::Any;
    use prost::Message;

    use crate::source::VersionedResource;
    use crate::stream::SotwOut;
    use crate::types::CLUSTER;
    use crate::view::SotwList;

    /// The shared-chunk frame decodes to exactly the message tonic would
    /// have encoded.
    #[test]
    fn sotw_frames_decode_to_the_same_response() {
        let items = ["a", "b"]
            .iter()
            .map(|n| {
                Arc::new(VersionedResource::new(
                    *n,
                    Any {
                        type_url: CLUSTER.to_string(),
                        value: n.repeat(300).into_bytes(),
                    },
                ))
            })
            .collect();
        let list = Arc::new(SotwList::new(items));
        let out = || SotwOut {
            type_url: CLUSTER.to_string(),
            nonce: "7-3".to_string(),
            list: list.clone(),
            control_plane: Arc::from("node-1"),
        };
        let bytes: Vec<u8> = out().into_frames().iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(bytes[0], 0, "not compressed");
        let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - 5);
        let decoded = DiscoveryResponse::decode(&bytes[5..]).unwrap();
        assert_eq!(decoded, out().into_response());
        // The resources are encoded once, then shared.
        let again = out().into_frames();
        assert_eq!(again[1].as_ptr(), out().into_frames()[1].as_ptr());
    }
}
